//! Inference, the fourth stage: the one thread of a lane that owns its [`LoadedModel`].
//!
//! It loads the model (reporting success or the [`ModelError`] to the starter, so a bad model
//! stops the worker at start), then loops: take a batch from the [`crate::pipeline::batch`]
//! rule, concatenate the inputs, run the forward pass, decode the output, map boxes back to
//! frame pixels ([`crate::postprocess`]) and hand each frame's record to its partition's
//! publisher. A failed forward pass ends the thread and is reported as a
//! [`crate::error::StageFailure`]: without a result the frames cannot be accounted.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use panoptes_schemas::FrameStatus;
use tch::{Device, Tensor};

use crate::error::{ModelError, Stage};
use crate::failure::FailureReporter;
use crate::metrics::WorkerMetrics;
use crate::model::{LoadedModel, ModelManifest};
use crate::pipeline::batch::next_batch;
use crate::pipeline::publish::router::Router;
use crate::pipeline::trace::BatchSpan;
use crate::pipeline::work::{Decoded, Outcome, Output, RecordContext, ms_since};
use crate::postprocess::{decode_output, to_detections};

/// What the inference thread needs.
#[derive(Debug, Clone)]
pub struct InferenceSpec {
    /// TorchScript file.
    pub model_path: PathBuf,
    /// Manifest file.
    pub manifest_path: PathBuf,
    /// Device.
    pub device: Device,
    /// libtorch intra-op threads (0 = default).
    pub intra_op_threads: usize,
    /// Largest batch.
    pub max_batch: usize,
    /// Batch wait budget of the oldest frame.
    pub max_wait: Duration,
    /// Measure the capacity after loading ([`measure_capacity`]).
    pub measure_capacity: bool,
}

/// The loaded model, as reported by [`spawn`].
pub struct Started {
    /// The model's manifest.
    pub manifest: ModelManifest,
    /// Frames per second at `max_batch`, when measured.
    pub capacity_fps: Option<f64>,
    /// Hands the thread its work once the pipeline exists.
    pub start: Sender<InferenceRun>,
    /// The thread.
    pub thread: std::thread::JoinHandle<()>,
}

/// Capacity in frames/s: one warm-up pass and then timed forward passes (at least 3, for at
/// least 300 ms) of zero images at `max_batch` on the model's device, output copied back to
/// the CPU (so a GPU's queue is drained inside the timing).
pub fn measure_capacity(model: &LoadedModel, max_batch: usize) -> Result<f64, ModelError> {
    let shape = model.manifest().input_shape(max_batch);
    let input = Tensor::zeros(shape, (tch::Kind::Float, model.device()));
    let pass = || model.forward(&input).map(|out| out.to_device(Device::Cpu));
    let _ = pass()?;
    let started = Instant::now();
    let mut passes = 0u32;
    while passes < 3 || (started.elapsed() < Duration::from_millis(300) && passes < 50) {
        let _ = pass()?;
        passes += 1;
    }
    Ok(f64::from(passes) * max_batch as f64 / started.elapsed().as_secs_f64())
}

/// What the inference thread runs on once the rest of the pipeline exists.
pub struct InferenceRun {
    /// Decoded frames.
    pub frames: Receiver<Decoded>,
    /// Record building.
    pub ctx: RecordContext,
    /// Per-partition publishers.
    pub router: Router,
    /// The lane's cluster (names the stage in a failure report).
    pub cluster: String,
    /// Where a failed forward pass is reported.
    pub failures: FailureReporter,
}

/// Starts the inference thread and returns once the model is loaded (with its manifest and
/// the channel to hand it its [`InferenceRun`]) or failed to load. If the sender is dropped
/// without sending, the thread ends.
pub fn spawn(spec: InferenceSpec, metrics: WorkerMetrics) -> Result<Started, ModelError> {
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let (run_tx, run_rx) = crossbeam_channel::bounded::<InferenceRun>(1);
    let handle = std::thread::Builder::new()
        .name("inference".into())
        .spawn(move || {
            if spec.intra_op_threads > 0 {
                tch::set_num_threads(spec.intra_op_threads as i32);
            }
            let loaded = crate::cuda::ensure_device(spec.device)
                .and_then(|()| {
                    LoadedModel::load(&spec.model_path, &spec.manifest_path, spec.device)
                })
                .and_then(|m| {
                    let fps = if spec.measure_capacity {
                        Some(measure_capacity(&m, spec.max_batch)?)
                    } else {
                        None
                    };
                    Ok((m, fps))
                });
            let model = match loaded {
                Ok((m, fps)) => {
                    let _ = ready_tx.send(Ok((m.manifest().clone(), fps)));
                    m
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            if let Ok(job) = run_rx.recv() {
                let guard = job.failures.guard(Stage::Inference {
                    cluster: job.cluster.clone(),
                });
                match run(&model, &spec, &job.frames, &job.ctx, &job.router, &metrics) {
                    Ok(()) => guard.disarm(),
                    Err(e) => guard.fail(e),
                }
            }
        })
        .map_err(|source| ModelError::Io {
            path: PathBuf::from("<inference thread>"),
            source,
        })?;
    match ready_rx.recv() {
        Ok(Ok((manifest, capacity_fps))) => Ok(Started {
            manifest,
            capacity_fps,
            start: run_tx,
            thread: handle,
        }),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            let _ = handle.join();
            Err(ModelError::Inference {
                model: "<unknown>".into(),
                message: "the inference thread died while loading the model".into(),
            })
        }
    }
}

/// Runs batches until the decoded-frames channel closes (`Ok`) or a forward pass fails.
fn run(
    model: &LoadedModel,
    spec: &InferenceSpec,
    frames: &Receiver<Decoded>,
    ctx: &RecordContext,
    router: &Router,
    metrics: &WorkerMetrics,
) -> Result<(), ModelError> {
    let manifest = model.manifest();
    let device = device_name(spec.device);
    while let Some(batch) = next_batch(frames, spec.max_batch, spec.max_wait, |d| d.ready) {
        let closed = Instant::now();
        let batch_span = BatchSpan::open(
            &ctx.frames_topic,
            batch.iter().map(|d| (&d.trace, &d.headers)),
            SystemTime::now(),
        );
        let _log = batch_span.log_span().entered();
        metrics.batch_size.observe(batch.len() as f64);
        let inputs: Vec<&Tensor> = batch.iter().map(|d| &d.input).collect();
        let started = Instant::now();
        let started_at = SystemTime::now();
        let result = Tensor::f_cat(&inputs, 0)
            .map_err(|e| ModelError::Inference {
                model: manifest.name.clone(),
                message: e.to_string(),
            })
            .and_then(|input| model.forward(&input))
            .and_then(|out| decode_output(manifest, &out));
        let inference_ms = ms_since(started);
        let per_image = match result {
            Ok(r) => r,
            Err(e) => {
                // Inference failures are not the frames' fault: without a result the frames
                // cannot be accounted, so the worker stops rather than lose them silently.
                metrics.inference_errors.inc();
                tracing::error!(error = %e, "inference failed; stopping the inference thread");
                return Err(e);
            }
        };
        metrics.stage("inference", inference_ms);
        batch_span.inference(
            started_at,
            batch.len(),
            &device,
            (&ctx.model.name, &ctx.model.version),
        );
        for (mut frame, raw) in batch.into_iter().zip(per_image) {
            batch_span.mark(&mut frame.trace);
            let post = Instant::now();
            let detections = to_detections(&raw, &frame.letterbox, &manifest.classes);
            let batch_wait_ms =
                (closed.saturating_duration_since(frame.ready)).as_secs_f32() * 1000.0;
            let mut latency = frame.latency.clone();
            latency.batch_wait_ms = batch_wait_ms;
            latency.inference_ms = inference_ms;
            latency.postprocess_ms = ms_since(post);
            metrics.stage("batch_wait", latency.batch_wait_ms);
            metrics.stage("postprocess", latency.postprocess_ms);
            let mut record = ctx.record(frame.pos, &frame.headers, FrameStatus::Ok, latency);
            record.detections = detections;
            router.send(Outcome {
                pos: frame.pos,
                output: Output::Record(Box::new(record)),
                trace: frame.trace,
            });
        }
        batch_span.end();
    }
    Ok(())
}

/// The device as written in spans and configuration: `cpu`, `cuda:0`, ...
fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}
