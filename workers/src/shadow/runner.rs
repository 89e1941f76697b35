//! The shadow thread: takes sampled frames, infers them with the candidate in batches of up
//! to `max_batch`, compares with the primary's detections and publishes shadow records
//! ([`super`] has the contract).
// setpriority on the thread's own id: the one libc call of the shadow (see `lower_priority`).
#![allow(unsafe_code)]

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use panoptes_runtime::kafka_link::KafkaLink;
use panoptes_runtime::kafka_poll::PolledProducer;
use panoptes_schemas::ModelRef;
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext};
use tch::Tensor;

use super::agreement::Agreement;
use super::{NICE, ShadowJob, ShadowMetrics, ShadowOut};
use crate::error::ModelError;
use crate::model::LoadedModel;
use crate::pipeline::consume::LinkContext;
use crate::pipeline::publish::record::base_config;
use crate::pipeline::work::now_us;
use crate::postprocess::{decode_output, to_detections};

/// Longest wait for the shadow's records in flight when it ends.
const FLUSH: Duration = Duration::from_secs(5);

/// Counts delivery results; client errors go to the worker's Kafka link.
struct ShadowContext {
    metrics: ShadowMetrics,
    link: KafkaLink,
}

impl ClientContext for ShadowContext {
    fn error(&self, error: KafkaError, reason: &str) {
        LinkContext::report(&self.link, &error, reason);
    }
}

impl ProducerContext for ShadowContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let r = if result.is_ok() { "sent" } else { "failed" };
        self.metrics.records.with_label_values(&[r]).inc();
    }
}

struct Runner {
    model: LoadedModel,
    named: ModelRef,
    producer: Option<PolledProducer<ShadowContext>>,
    topic: String,
    max_batch: usize,
    metrics: ShadowMetrics,
    agreement: Agreement,
}

/// Starts the shadow thread on `model`; it ends when `rx` closes.
pub(super) fn spawn(
    model: LoadedModel,
    rx: Receiver<ShadowJob>,
    out: ShadowOut,
    max_batch: usize,
    metrics: ShadowMetrics,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("shadow".into())
        .spawn(move || {
            lower_priority();
            // One libtorch thread: the shadow must not compete for the primary's cores.
            tch::set_num_threads(1);
            let m = model.manifest();
            let named = ModelRef {
                name: m.name.clone(),
                version: m.version.clone(),
            };
            let context = ShadowContext {
                metrics: metrics.clone(),
                link: out.link.clone(),
            };
            let producer = base_config(&out.kafka, &out.client_id)
                .and_then(|cc| cc.create_with_context(context))
                .inspect_err(|e| tracing::error!(error = %e, topic = %out.topic, "shadow producer could not be created: shadow records are not published"))
                .ok();
            tracing::info!(model = %named.name, version = %named.version, topic = %out.topic, "shadow model running");
            let mut runner = Runner {
                model,
                named,
                producer,
                topic: out.topic,
                max_batch: max_batch.max(1),
                metrics,
                agreement: Agreement::default(),
            };
            runner.run(&rx);
        })
        .map(|_| ())
}

impl Runner {
    fn run(&mut self, rx: &Receiver<ShadowJob>) {
        while let Ok(first) = rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(j) => jobs.push(j),
                    Err(_) => break,
                }
            }
            let n = jobs.len() as u64;
            if let Err(e) = self.batch(jobs) {
                self.metrics.frames.with_label_values(&["error"]).inc_by(n);
                tracing::warn!(error = %e, version = %self.named.version, "shadow forward pass failed; the shadow goes on");
            }
        }
        if let Some(p) = &self.producer {
            let _ = p.flush(FLUSH);
        }
        for (class, _) in self.agreement.classes() {
            let _ = self.metrics.agreement.remove_label_values(&[class]);
        }
        tracing::info!(version = %self.named.version, "shadow model stopped");
    }

    fn batch(&mut self, jobs: Vec<ShadowJob>) -> Result<(), ModelError> {
        let manifest = self.model.manifest().clone();
        let inputs: Vec<&Tensor> = jobs.iter().map(|j| &j.input).collect();
        let started = Instant::now();
        let input = Tensor::f_cat(&inputs, 0).map_err(|e| ModelError::Inference {
            model: manifest.name.clone(),
            message: e.to_string(),
        })?;
        let out = self.model.forward(&input)?;
        let per_image = decode_output(&manifest, &out)?;
        let inference_ms = started.elapsed().as_secs_f32() * 1000.0;
        for (job, raw) in jobs.into_iter().zip(per_image) {
            let detections = to_detections(&raw, &job.letterbox, &manifest.classes);
            for (class, c) in self.agreement.add(&job.primary.detections, &detections) {
                let m = &self.metrics.matches;
                m.with_label_values(&[&class, "agree"]).inc_by(c.tp);
                m.with_label_values(&[&class, "primary_only"]).inc_by(c.fn_);
                m.with_label_values(&[&class, "shadow_only"]).inc_by(c.fp);
            }
            self.metrics.frames.with_label_values(&["inferred"]).inc();
            let mut record = job.primary;
            record.model = self.named.clone();
            record.detections = detections;
            record.latency.inference_ms = inference_ms;
            record.published_time_us = now_us();
            self.publish(&record);
        }
        for (class, a) in self.agreement.classes() {
            self.metrics.agreement.with_label_values(&[class]).set(a);
        }
        Ok(())
    }

    fn publish(&self, record: &panoptes_schemas::DetectionRecord) {
        let Some(p) = &self.producer else { return };
        let Ok(payload) = serde_json::to_vec(record) else {
            return;
        };
        let rec = BaseRecord::to(&self.topic)
            .key(record.camera_id.as_str())
            .payload(payload.as_slice());
        if p.send(rec).is_err() {
            // Queue full or a local error: the shadow sheds rather than waits.
            self.metrics.records.with_label_values(&["failed"]).inc();
        }
    }
}

/// Lowers this thread's scheduling priority to [`NICE`] (Linux: a thread's nice value is its
/// own). Failing is harmless: the shadow runs at the process's priority.
fn lower_priority() {
    // SAFETY: gettid and setpriority take no pointers; they only read ids and set the
    // calling thread's nice value.
    let rc = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE)
    };
    if rc != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "could not lower the shadow thread's priority");
    }
}
