//! Publishing frames to Kafka: one idempotent producer per node, bounded local queue.
//!
//! `publish` never blocks: when the producer's queue is full (the broker is slow or gone) the
//! frame is dropped and counted, because a camera thread must keep draining its pipeline and
//! an old frame is worth less than a new one. Acknowledgements arrive on librdkafka's own
//! thread ([`PolledProducer`], which never busy-waits) where publish latency and delivery
//! failures are recorded.
//!
//! librdkafka's own errors (a wrong password, an untrusted broker certificate, a fatal
//! idempotence error) reach [`DeliveryContext`]'s `error` callback and go to the node's
//! [`KafkaLink`]: counted by kind, and `/readyz` false for the kinds an operator must fix.
//! Frames sent meanwhile stay queued until `message_timeout` (then they fail, counted in
//! `publish_errors`) or are refused at the queue bound (counted in `dropped`): never lost
//! without a count.
//!
//! A fatal error (librdkafka's `rd_kafka_fatal_error`, e.g. fatal idempotence after a
//! sequence desynchronisation: every later send would fail) is found by the node's broker
//! probe through [`FramePublisher::replace_if_fatal`], which replaces the producer with a
//! fresh one (new producer id, sequences from 0); the frames the old one held fail and are
//! counted. `/readyz` is false from the error until the replacement, and both are counted.
//!
//! Coordinator mode adds two things per frame: the camera's **owner epoch** (the grant epoch
//! under which this node holds the camera, set by the coordinator side through
//! [`FramePublisher::set_owner_epoch`]) is stamped into the envelope, so readers can drop a
//! zombie's frames; and the node's **lease fence** ([`LeaseFence`], from its member agent) is
//! checked first: once the lease may have expired (last successful renewal's sent time plus
//! the TTL, on the monotonic clock) nothing more is enqueued. Such a frame is dropped and
//! counted (`lease_expired`) like any other drop before Kafka: its sequence number is spent,
//! so it shows as a gap downstream. Frames already in the producer's queue when the lease
//! lapsed may still be delivered after it (librdkafka sends them when it can); they carry
//! the old epoch, and readers drop those that arrive after the new owner's first frame.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use panoptes_coordinator_client::LeaseFence;
use panoptes_runtime::kafka_poll::PolledProducer;
use panoptes_schemas::{FrameHeaders, headers as header_names};
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext};

use panoptes_runtime::kafka_link::{KafkaErrorKind, KafkaLink};

use crate::config::KafkaConfig;
use crate::metrics::IngestMetrics;
use crate::trace::FrameSpan;

/// Why a frame was not enqueued.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The local queue is at its bound; retryable once the broker catches up.
    #[error("producer queue is full")]
    QueueFull,
    /// The frame exceeds the broker's message size limit; fatal for this frame.
    #[error("frame of {size} bytes exceeds message_max_bytes = {max}")]
    TooLarge {
        /// Record size.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// The node's coordinator lease may have expired (its fence lapsed): its cameras may be
    /// publishing from another node now. Retryable once the lease is renewed, if the camera
    /// is still granted here.
    #[error("the node's lease may have expired: not publishing")]
    LeaseExpired,
    /// Any other producer error.
    #[error("producer error: {0}")]
    Kafka(#[from] KafkaError),
}

impl PublishError {
    /// Metric label of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::QueueFull => "producer_queue_full",
            PublishError::TooLarge { .. } => "too_large",
            PublishError::LeaseExpired => "lease_expired",
            PublishError::Kafka(_) => "producer_error",
        }
    }
}

/// Per-message state carried to the delivery callback.
pub struct Delivery {
    enqueued: Instant,
    /// The frame's `send` span (when traced), ended at the acknowledgement.
    span: Option<FrameSpan>,
    /// The camera's count of frames enqueued and not yet acknowledged or failed.
    pending: Arc<AtomicI64>,
}

/// Producer context recording acknowledgements and client errors.
pub struct DeliveryContext {
    metrics: IngestMetrics,
    link: KafkaLink,
    /// Set once this producer was replaced: its late errors are about a client that no
    /// longer serves, and must not make the node unready again.
    retired: Arc<AtomicBool>,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if self.retired.load(Ordering::Acquire) {
            tracing::debug!(error = %error, reason, "error of a replaced producer");
            return;
        }
        let code = error.rdkafka_error_code().map_or(-1, |c| c as i32);
        self.link.report(code, reason);
    }
}

/// The producer in use and the flag that retires it.
struct Current {
    producer: Arc<PolledProducer<DeliveryContext>>,
    retired: Arc<AtomicBool>,
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, d: Self::DeliveryOpaque) {
        d.pending.fetch_sub(1, Ordering::AcqRel);
        // The frame's trace ids for the failure's log line.
        let (trace_id, span_id) = d.span.as_ref().map(FrameSpan::ids).unwrap_or_default();
        let _log = d
            .span
            .as_ref()
            .map_or_else(tracing::Span::none, FrameSpan::log_span)
            .entered();
        if let Some(span) = d.span {
            match result {
                Ok(m) => span.delivered(m.partition(), m.offset()),
                Err((e, _)) => span.failed(&e.to_string()),
            }
        }
        match result {
            Ok(_) => self
                .metrics
                .publish_latency
                .observe(d.enqueued.elapsed().as_secs_f64()),
            Err((e, _)) => {
                let reason = match e.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::MessageTimedOut) => "timed_out",
                    Some(RDKafkaErrorCode::MessageSizeTooLarge) => "too_large",
                    _ => "broker_error",
                };
                tracing::warn!(error = %e, trace_id, span_id, "frame delivery failed");
                self.metrics
                    .publish_errors
                    .with_label_values(&[reason])
                    .inc();
            }
        }
    }
}

/// The node's frame publisher.
pub struct FramePublisher {
    current: RwLock<Current>,
    /// What every producer of this publisher is created from (also after a fatal error).
    config: ClientConfig,
    link: KafkaLink,
    topic: String,
    max_bytes: usize,
    metrics: IngestMetrics,
    /// Per camera: frames enqueued and not yet acknowledged (or failed), so a handover can
    /// wait for exactly that camera's frames while the others keep publishing.
    pending: Mutex<HashMap<String, Arc<AtomicI64>>>,
    /// Coordinator mode: the grant epoch each camera is published under.
    owner_epochs: RwLock<HashMap<String, u64>>,
    /// Coordinator mode: the member lease; nothing is enqueued once it lapsed.
    fence: RwLock<Option<Arc<LeaseFence>>>,
}

impl FramePublisher {
    /// Creates the producer (does not wait for the broker); its client errors go to `link`.
    /// A `[kafka]` security setting that cannot be used is `KafkaError::ClientCreation`
    /// with the setting's message.
    pub fn new(
        cfg: &KafkaConfig,
        metrics: IngestMetrics,
        link: KafkaLink,
    ) -> Result<Self, KafkaError> {
        let connection = cfg
            .client
            .connection_properties()
            .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
        let mut cc: ClientConfig = connection.into_iter().collect();
        cc.extend(cfg.producer.delivery_properties());
        cc.set("compression.type", "none")
            .set("linger.ms", cfg.linger.as_millis().to_string())
            .set(
                "queue.buffering.max.messages",
                cfg.queue_max_messages.to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                cfg.queue_max_kbytes.to_string(),
            )
            .set(
                "message.max.bytes",
                (cfg.message_max_bytes + 64 * 1024).to_string(),
            )
            .set("client.id", "panoptes-ingest");
        cc.extend(cfg.client.override_properties());
        let current = create(&cc, &metrics, &link)?;
        Ok(Self {
            current: RwLock::new(current),
            config: cc,
            link,
            topic: cfg.topic.clone(),
            max_bytes: cfg.message_max_bytes,
            metrics,
            pending: Mutex::default(),
            owner_epochs: RwLock::default(),
            fence: RwLock::default(),
        })
    }

    /// Coordinator mode: from now on, frames are enqueued only while `fence` holds.
    pub fn set_fence(&self, fence: Arc<LeaseFence>) {
        *self.fence.write().unwrap_or_else(|e| e.into_inner()) = Some(fence);
    }

    /// Coordinator mode: `camera`'s frames carry owner epoch `epoch` from now on (`None`:
    /// none, e.g. the camera left the node).
    pub fn set_owner_epoch(&self, camera: &str, epoch: Option<u64>) {
        let mut map = self.owner_epochs.write().unwrap_or_else(|e| e.into_inner());
        match epoch {
            Some(e) => map.insert(camera.to_owned(), e),
            None => map.remove(camera),
        };
    }

    /// Whether the node may publish now: no fence (no coordinator), or the fence holds.
    fn lease_holds(&self) -> bool {
        self.fence
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(|f| f.holds())
    }

    /// Enqueues one frame; never blocks.
    pub fn publish(
        &self,
        partition: Option<i32>,
        headers: &FrameHeaders,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        if !self.lease_holds() {
            return Err(PublishError::LeaseExpired);
        }
        let mut kafka_headers = headers.to_kafka_headers();
        // Traced: the frame's creation context is its `send` span, and travels in its
        // `traceparent` header instead of the camera's fresh one.
        let span = FrameSpan::start(&self.topic, headers, payload.len());
        let _log = span
            .as_ref()
            .map_or_else(tracing::Span::none, FrameSpan::log_span)
            .entered();
        if let Some(tp) = span.as_ref().map(FrameSpan::traceparent) {
            for (key, value) in &mut kafka_headers {
                if *key == header_names::TRACEPARENT {
                    *value = tp.clone();
                }
            }
        }
        if headers.owner_epoch.is_none()
            && let Some(epoch) = self
                .owner_epochs
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&headers.camera_id)
        {
            kafka_headers.push((header_names::OWNER_EPOCH, epoch.to_string()));
        }
        let size = payload.len()
            + headers.camera_id.len()
            + kafka_headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if size > self.max_bytes {
            if let Some(span) = span {
                span.failed("frame exceeds message_max_bytes");
            }
            return Err(PublishError::TooLarge {
                size,
                max: self.max_bytes,
            });
        }
        let mut owned = OwnedHeaders::new_with_capacity(kafka_headers.len());
        for (key, value) in &kafka_headers {
            owned = owned.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let pending = self.pending_counter(&headers.camera_id);
        pending.fetch_add(1, Ordering::AcqRel);
        let mut record = BaseRecord::with_opaque_to(
            &self.topic,
            Box::new(Delivery {
                enqueued: Instant::now(),
                span,
                pending: pending.clone(),
            }),
        )
        .key(headers.camera_id.as_str())
        .payload(payload)
        .headers(owned)
        // The record's timestamp on the cluster clock too (the worker's `queue` stage).
        .timestamp(headers.capture_time_us.div_euclid(1000));
        if let Some(p) = partition {
            record = record.partition(p);
        }
        let producer = self.producer();
        match producer.send(record) {
            Ok(()) => {
                self.metrics
                    .producer_queue
                    .set(i64::from(producer.in_flight_count()));
                Ok(())
            }
            Err((e, record)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                pending.fetch_sub(1, Ordering::AcqRel);
                if let Some(span) = record.delivery_opaque.span {
                    span.failed("producer queue full: dropped");
                }
                Err(PublishError::QueueFull)
            }
            Err((e, record)) => {
                pending.fetch_sub(1, Ordering::AcqRel);
                if let Some(span) = record.delivery_opaque.span {
                    span.failed(&e.to_string());
                }
                Err(PublishError::Kafka(e))
            }
        }
    }

    fn pending_counter(&self, camera: &str) -> Arc<AtomicI64> {
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(camera) {
            return c.clone();
        }
        let c = Arc::new(AtomicI64::new(0));
        map.insert(camera.to_string(), c.clone());
        c
    }

    /// Frames of `camera` enqueued and not yet acknowledged or failed.
    pub fn pending(&self, camera: &str) -> i64 {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(camera)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Blocks until every frame of `camera` enqueued so far was acknowledged or failed, or
    /// `timeout` passes; returns whether none is left. Other cameras keep publishing
    /// meanwhile (unlike [`FramePublisher::flush`], which waits for the whole queue).
    /// Call off the async runtime, after the camera stopped publishing.
    pub fn wait_delivered(&self, camera: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.pending(camera) <= 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Forgets `camera`'s delivery counter (it left the node and has nothing in flight).
    pub fn forget(&self, camera: &str) {
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if map
            .get(camera)
            .is_some_and(|c| c.load(Ordering::Acquire) <= 0)
        {
            map.remove(camera);
        }
    }

    /// The producer in use.
    fn producer(&self) -> Arc<PolledProducer<DeliveryContext>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .producer
            .clone()
    }

    /// Replaces the producer when librdkafka raised a fatal error on it: counted (kind
    /// `fatal`) and `/readyz` false until the fresh producer is in place, then
    /// `kafka_client_rebuilds_total` counts the replacement. Frames the old producer still
    /// held fail (purged) and are counted in `publish_errors`. Returns whether it replaced
    /// the producer. Blocking (the old producer is purged and its thread joined): call off
    /// the async runtime.
    pub fn replace_if_fatal(&self) -> Result<bool, KafkaError> {
        let old = self.producer();
        let Some((code, reason)) = old.client().fatal_error() else {
            return Ok(false);
        };
        if self.link.blocking() != Some(KafkaErrorKind::Fatal) {
            // The error callback has not told the link yet (or never will: it is retired
            // below), so count and flip readiness here.
            self.link
                .fatal(&format!("{code:?}: {reason} (rd_kafka_fatal_error)"));
        }
        tracing::error!(
            ?code,
            reason,
            "the producer hit a fatal error: replacing it"
        );
        let fresh = create(&self.config, &self.metrics, &self.link)?;
        let retired = {
            let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *current, fresh)
        };
        retired.retired.store(true, Ordering::Release);
        drop(old);
        // The last handle (sends in flight may hold one for a moment) purges what it held.
        drop(retired);
        self.link.recovered();
        tracing::info!("producer replaced after a fatal error");
        Ok(true)
    }

    /// Messages waiting or in flight.
    pub fn in_flight(&self) -> i32 {
        self.producer().in_flight_count()
    }

    /// Blocks until the queue is empty or `timeout` passes. Call off the async runtime.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer().flush(timeout)
    }

    /// Asks the broker for the topic's metadata: the readiness probe. Blocking.
    pub fn check_broker(&self, timeout: Duration) -> Result<usize, KafkaError> {
        let md = self
            .producer()
            .client()
            .fetch_metadata(Some(&self.topic), timeout)?;
        let topic = md.topics().iter().find(|t| t.name() == self.topic);
        match topic {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(t.partitions().len())
            }
            _ => Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            )),
        }
    }
}

/// A producer from `config` whose errors go to `link`.
fn create(
    config: &ClientConfig,
    metrics: &IngestMetrics,
    link: &KafkaLink,
) -> Result<Current, KafkaError> {
    let retired = Arc::new(AtomicBool::new(false));
    let producer = config.create_with_context(DeliveryContext {
        metrics: metrics.clone(),
        link: link.clone(),
        retired: retired.clone(),
    })?;
    Ok(Current {
        producer: Arc::new(producer),
        retired,
    })
}
