//! Inference, the fourth stage: the one thread of a lane that owns its [`LoadedModel`].
//!
//! It loads the model (reporting success or the [`ModelError`] to the starter, so a bad model
//! stops the worker at start), then loops: take a batch from the [`crate::pipeline::batch`]
//! rule, concatenate the inputs, run the forward pass, decode the output, map boxes back to
//! frame pixels ([`crate::postprocess`]) and hand each frame's record to its partition's
//! publisher. A failed forward pass ends the thread and is reported as a
//! [`crate::error::StageFailure`]: without a result the frames cannot be accounted.
//!
//! Hot swap ([`crate::swap`]): with a model repository the thread also takes its loader's
//! [`Command`]s (warm candidates, canary changes), between batches or while idle (never while
//! an earlier model is still retiring), flips the lane's [`ModelGate`] or installs a canary in
//! it, and runs each frame on the model of its stamp: a batch holding frames of several
//! stamps is split into one forward pass per model. A retiring model is dropped once no frame
//! stamped with it is left in the lane. While a canary runs, every pass and frame is written
//! in the node's [`CanaryBook`] under its version.
//!
//! A canary whose forward pass fails does not stop the lane: the failure is written in the
//! book as the candidate's refusal (the coordinator rolls a refused candidate back at once),
//! the lane ends its canary, and the batch and every frame still stamped with it are
//! inferred by the active model, so no frame is lost for a candidate's bug.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Select, Sender};
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
use crate::shadow::{ShadowOut, ShadowTap};
use crate::swap::canary::CanaryBook;
use crate::swap::loader::{Candidate, Command, Loader};
use crate::swap::{ModelGate, ModelStamp, Role, SwapSpec};

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
    /// Hot swap from a model repository (`None`: the model never changes).
    pub swap: Option<SwapSpec>,
}

/// The loaded model, as reported by [`spawn`].
pub struct Started {
    /// The model's manifest.
    pub manifest: ModelManifest,
    /// Frames per second at `max_batch`, when measured.
    pub capacity_fps: Option<f64>,
    /// Hands the thread its work once the pipeline exists.
    pub start: Sender<InferenceRun>,
    /// The lane's switch point, for the decode stage.
    pub gate: ModelGate,
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
    /// The lane's switch point ([`Started::gate`]), flipped on a swap.
    pub gate: ModelGate,
    /// Where a shadow model's records go ([`crate::shadow`]).
    pub shadow: ShadowOut,
}

/// Starts the inference thread and returns once the model is loaded (with its manifest and
/// the channel to hand it its [`InferenceRun`]) or failed to load. If the sender is dropped
/// without sending, the thread ends. With `spec.swap`, a loader thread starts beside it.
pub fn spawn(spec: InferenceSpec, metrics: WorkerMetrics) -> Result<Started, ModelError> {
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let (run_tx, run_rx) = crossbeam_channel::bounded::<InferenceRun>(1);
    let (command_tx, command_rx) = crossbeam_channel::bounded::<Command>(1);
    let stop = Arc::new(AtomicBool::new(false));
    let (thread_spec, thread_metrics, thread_stop) = (spec.clone(), metrics.clone(), stop.clone());
    let handle = std::thread::Builder::new()
        .name("inference".into())
        .spawn(move || {
            let (spec, metrics) = (thread_spec, thread_metrics);
            // Whatever happens, the loader ends with this thread.
            let _stop = StopOnDrop(thread_stop);
            if spec.intra_op_threads > 0 {
                tch::set_num_threads(spec.intra_op_threads as i32);
            }
            let model = match load(&spec) {
                Ok((m, fps)) => report_ready(m, fps, &ready_tx),
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let Ok(job) = run_rx.recv() else { return };
            let guard = job.failures.guard(Stage::Inference {
                cluster: job.cluster.clone(),
            });
            let lane = Lane {
                spec: &spec,
                job: &job,
                metrics: &metrics,
                book: spec.swap.as_ref().map(|s| s.switch.book.clone()),
            };
            match lane.run(model, command_rx) {
                Ok(()) => guard.disarm(),
                Err(e) => guard.fail(e),
            }
        })
        .map_err(|source| ModelError::Io {
            path: PathBuf::from("<inference thread>"),
            source,
        })?;
    let (manifest, capacity_fps, gate) = match ready_rx.recv() {
        Ok(Ok(ready)) => ready,
        Ok(Err(e)) => {
            let _ = handle.join();
            return Err(e);
        }
        Err(_) => {
            let _ = handle.join();
            return Err(ModelError::Inference {
                model: "<unknown>".into(),
                message: "the inference thread died while loading the model".into(),
            });
        }
    };
    if let Some(swap) = spec.swap.clone() {
        let loader = Loader {
            spec: swap,
            device: spec.device,
            max_batch: spec.max_batch,
            serving: manifest.version.clone(),
            commands: command_tx,
            stop,
            metrics,
        };
        loader.spawn().map_err(|source| ModelError::Io {
            path: PathBuf::from("<model loader thread>"),
            source,
        })?;
    }
    Ok(Started {
        manifest,
        capacity_fps,
        start: run_tx,
        gate,
        thread: handle,
    })
}

/// The model loaded at start, with its capacity when asked for.
type Ready = Result<(ModelManifest, Option<f64>, ModelGate), ModelError>;

/// The start's load: device check, model, capacity.
fn load(spec: &InferenceSpec) -> Result<(LoadedModel, Option<f64>), ModelError> {
    crate::cuda::ensure_device(spec.device)?;
    let m = LoadedModel::load(&spec.model_path, &spec.manifest_path, spec.device)?;
    let fps = if spec.measure_capacity {
        Some(measure_capacity(&m, spec.max_batch)?)
    } else {
        None
    };
    Ok((m, fps))
}

/// Reports the start's model to the starter (with the lane's gate, stamping with it) and
/// gives the running slot.
fn report_ready(model: LoadedModel, fps: Option<f64>, ready: &Sender<Ready>) -> Slot {
    let stamp = ModelStamp::new(0, model.manifest().clone());
    let gate = ModelGate::new(stamp.clone());
    let _ = ready.send(Ok((model.manifest().clone(), fps, gate)));
    Slot { model, stamp }
}

/// Sets the flag when dropped.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A model in the lane with the stamp of the frames it infers.
struct Slot {
    model: LoadedModel,
    stamp: Arc<ModelStamp>,
}

impl Slot {
    /// Whether no frame stamped with this model is left in the lane.
    fn idle(&self) -> bool {
        Arc::strong_count(&self.stamp) == 1
    }
}

/// The models in a lane: the active one, a canary's, those retiring, and a shadow's (on its
/// own thread).
struct Slots {
    current: Slot,
    canary: Option<Slot>,
    retiring: Vec<Slot>,
    shadow: Option<ShadowTap>,
    /// The generation of the next stamp.
    next_generation: u64,
    /// A canary whose forward pass failed: its frames go to the active model.
    broken: Option<u64>,
}

impl Slots {
    /// The model of frames stamped at `generation`.
    fn find(&self, generation: u64) -> Option<&Slot> {
        std::iter::once(&self.current)
            .chain(&self.canary)
            .chain(&self.retiring)
            .find(|s| s.stamp.generation == generation)
    }

    /// A slot for `candidate` with a stamp of its own.
    fn slot(&mut self, candidate: Candidate) -> Slot {
        let stamp = ModelStamp::new(self.next_generation, candidate.model.manifest().clone());
        self.next_generation += 1;
        Slot {
            model: candidate.model,
            stamp,
        }
    }
}

/// The running inference thread's view of its lane.
struct Lane<'a> {
    spec: &'a InferenceSpec,
    job: &'a InferenceRun,
    metrics: &'a WorkerMetrics,
    /// The node's canary figures (with a model repository).
    book: Option<CanaryBook>,
}

impl Lane<'_> {
    /// Runs batches until the decoded-frames channel closes (`Ok`) or a forward pass fails,
    /// taking commands between batches.
    fn run(&self, first: Slot, commands: Receiver<Command>) -> Result<(), ModelError> {
        let frames = &self.job.frames;
        let next_generation = first.stamp.generation + 1;
        let mut slots = Slots {
            current: first,
            canary: None,
            retiring: Vec::new(),
            shadow: None,
            next_generation,
            broken: None,
        };
        let mut commands = Some(commands);
        loop {
            slots.retiring.retain(|r| {
                let idle = r.idle();
                if idle {
                    self.retired(r);
                }
                !idle
            });
            if slots.retiring.is_empty()
                && let Some(rx) = &commands
            {
                match wait_for_work(frames, rx) {
                    Work::Frames => {}
                    Work::Command(c) => {
                        self.apply(&mut slots, *c);
                        continue;
                    }
                    Work::NoMoreCommands => {
                        commands = None;
                        continue;
                    }
                }
            }
            let max_wait = self.spec.max_wait;
            let Some(batch) = next_batch(frames, self.spec.max_batch, max_wait, |d| d.ready) else {
                break;
            };
            let mut by_stamp: BTreeMap<u64, Vec<Decoded>> = BTreeMap::new();
            for d in batch {
                by_stamp.entry(d.model.generation).or_default().push(d);
            }
            for (generation, mut frames) in by_stamp {
                let slot = match slots.broken {
                    Some(broken) if broken == generation => &slots.current,
                    _ => slots
                        .find(generation)
                        .ok_or_else(|| ModelError::Inference {
                            model: slots.current.stamp.model.name.clone(),
                            message: "a frame is stamped with a model no longer loaded".into(),
                        })?,
                };
                // The shadow compares with the active version only.
                let active = slot.stamp.generation == slots.current.stamp.generation;
                let tap = slots.shadow.as_ref().filter(|_| active);
                let Err(e) = self.infer(slot, &mut frames, tap) else {
                    continue;
                };
                let canary = slots.canary.as_ref().map(|c| c.stamp.generation);
                if canary != Some(generation) {
                    tracing::error!(error = %e, "inference failed; stopping the inference thread");
                    return Err(e);
                }
                self.canary_failed(&mut slots, &e);
                self.infer(&slots.current, &mut frames, None)?;
            }
        }
        Ok(())
    }

    /// Carries out one of the loader's commands.
    fn apply(&self, slots: &mut Slots, command: Command) {
        match command {
            Command::Switch(c) => {
                let warmup = c.warmup;
                let next = slots.slot(c);
                self.job.gate.flip(next.stamp.clone());
                if let Some(canary) = slots.canary.take() {
                    slots.retiring.push(canary);
                }
                // The loader ends a candidate first; a shadow never outlives its active model.
                slots.shadow = None;
                let old = std::mem::replace(&mut slots.current, next);
                self.switched(
                    &old,
                    &slots.current,
                    Some(warmup),
                    "model switched: new frames go to the new version",
                );
                slots.retiring.push(old);
            }
            Command::Candidate(c, Role::Canary(cameras)) => self.canary(slots, c, cameras),
            Command::Candidate(c, Role::Shadow(percent)) => self.shadow(slots, c, percent),
            Command::PromoteCanary => {
                let Some(canary) = slots.canary.take() else {
                    return;
                };
                self.job.gate.flip(canary.stamp.clone());
                let old = std::mem::replace(&mut slots.current, canary);
                self.switched(
                    &old,
                    &slots.current,
                    None,
                    "canary promoted: every camera's new frames go to it",
                );
                slots.retiring.push(old);
            }
            Command::EndCandidate => self.end_candidate(slots),
            Command::Retarget(Role::Canary(cameras)) => {
                if let Some(canary) = &slots.canary {
                    self.job
                        .gate
                        .set_canary(Some((canary.stamp.clone(), cameras)));
                }
            }
            Command::Retarget(Role::Shadow(percent)) => {
                if let Some(tap) = &mut slots.shadow {
                    tap.retarget(percent);
                }
            }
        }
    }

    /// Installs `c` as a canary on `cameras`.
    fn canary(&self, slots: &mut Slots, c: Candidate, cameras: Arc<BTreeSet<String>>) {
        let warmup = c.warmup;
        let next = slots.slot(c);
        self.job
            .gate
            .set_canary(Some((next.stamp.clone(), cameras.clone())));
        if let Some(old) = slots.canary.replace(next) {
            slots.retiring.push(old);
        }
        let now = &slots.canary.as_ref().expect("just set").stamp.model;
        let m = self.metrics;
        m.model_swaps.with_label_values(&["ok"]).inc();
        m.swap_warmup.observe(warmup.as_secs_f64());
        m.model_info
            .with_label_values(&[&now.name, &now.version])
            .set(1);
        tracing::info!(cluster = %self.job.cluster, model = %now.name, active = %slots.current.stamp.model.version, canary = %now.version, cameras = cameras.len(), warmup_ms = warmup.as_millis() as u64, "canary installed: its cameras' new frames go to the candidate");
    }

    /// Starts `c` as a shadow sampling `percent` % of the frames.
    fn shadow(&self, slots: &mut Slots, c: Candidate, percent: u8) {
        let (warmup, version) = (c.warmup, c.model.manifest().version.clone());
        slots.shadow = None;
        let m = self.metrics;
        let max_batch = self.spec.max_batch;
        match ShadowTap::start(
            c,
            percent,
            self.job.shadow.clone(),
            max_batch,
            m.shadow.clone(),
        ) {
            Ok(tap) => {
                m.model_swaps.with_label_values(&["ok"]).inc();
                m.swap_warmup.observe(warmup.as_secs_f64());
                slots.shadow = Some(tap);
                tracing::info!(cluster = %self.job.cluster, active = %slots.current.stamp.model.version, shadow = %version, percent, "shadow started: a sample of frames is inferred again by the candidate");
            }
            Err(e) => {
                tracing::error!(cluster = %self.job.cluster, shadow = %version, error = %e, "shadow thread could not start");
            }
        }
    }

    /// Ends the canary (its cameras back on the active version) or the shadow.
    fn end_candidate(&self, slots: &mut Slots) {
        if slots.shadow.take().is_some() {
            tracing::info!(cluster = %self.job.cluster, "shadow ended");
        }
        let Some(canary) = slots.canary.take() else {
            return;
        };
        self.job.gate.set_canary(None);
        let (was, now) = (&canary.stamp.model, &slots.current.stamp.model);
        if was != now {
            let _ = self
                .metrics
                .model_info
                .remove_label_values(&[&was.name, &was.version]);
        }
        tracing::info!(cluster = %self.job.cluster, model = %was.name, canary = %was.version, active = %now.version, "canary ended: its cameras' new frames go to the active version");
        slots.retiring.push(canary);
    }

    /// The canary's forward pass failed with `e`: the candidate is reported refused, the
    /// lane's canary ends, and frames stamped with it go to the active model from now on.
    fn canary_failed(&self, slots: &mut Slots, e: &ModelError) {
        let Some(canary) = slots.canary.take() else {
            return;
        };
        let version = &canary.stamp.model.version;
        if let Some(book) = &self.book {
            book.refused(version, &format!("forward pass failed: {e}"));
        }
        self.metrics
            .model_swaps
            .with_label_values(&["failed_canary"])
            .inc();
        tracing::error!(cluster = %self.job.cluster, canary = %version, active = %slots.current.stamp.model.version, error = %e, "the canary's forward pass failed: its frames go to the active version, and the coordinator is told");
        slots.broken = Some(canary.stamp.generation);
        self.job.gate.set_canary(None);
        let _ = self
            .metrics
            .model_info
            .remove_label_values(&[&canary.stamp.model.name, version]);
        slots.retiring.push(canary);
    }

    /// Counts and logs a change of the active model from `old` to `now`.
    fn switched(&self, old: &Slot, now: &Slot, warmup: Option<Duration>, what: &str) {
        let (was, now) = (&old.stamp.model, &now.stamp.model);
        let m = self.metrics;
        if let Some(w) = warmup {
            m.model_swaps.with_label_values(&["ok"]).inc();
            m.swap_warmup.observe(w.as_secs_f64());
        }
        if was != now {
            let _ = m.model_info.remove_label_values(&[&was.name, &was.version]);
        }
        m.model_info
            .with_label_values(&[&now.name, &now.version])
            .set(1);
        tracing::info!(cluster = %self.job.cluster, model = %now.name, from = %was.version, to = %now.version, warmup_ms = warmup.map(|w| w.as_millis() as u64), "{what}");
    }

    fn retired(&self, old: &Slot) {
        let v = &old.stamp.model;
        tracing::info!(cluster = %self.job.cluster, model = %v.name, version = %v.version, "previous model version unloaded");
    }

    /// One forward pass of `slot`'s model over `batch` and its records; sampled frames are
    /// offered to `shadow`. The batch is emptied on success and left whole on failure.
    fn infer(
        &self,
        slot: &Slot,
        batch: &mut Vec<Decoded>,
        shadow: Option<&ShadowTap>,
    ) -> Result<(), ModelError> {
        let (ctx, metrics, model) = (&self.job.ctx, self.metrics, &slot.model);
        let manifest = model.manifest();
        let device = device_name(self.spec.device);
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
                // cannot be accounted, so the caller infers them with the active model (a
                // failed canary) or stops the worker rather than lose them silently.
                metrics.inference_errors.inc();
                return Err(e);
            }
        };
        metrics.stage("inference", inference_ms);
        let named = &slot.stamp.model;
        if let Some(book) = &self.book {
            book.pass(&named.version, batch.len(), f64::from(inference_ms));
        }
        batch_span.inference(
            started_at,
            batch.len(),
            &device,
            (&named.name, &named.version),
        );
        for (mut frame, raw) in batch.drain(..).zip(per_image) {
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
            if let Some(book) = &self.book {
                book.frame(&named.version, &detections);
            }
            let mut record = ctx.record(frame.pos, &frame.headers, FrameStatus::Ok, latency);
            record.model = named.clone();
            record.detections = detections;
            if let Some(tap) = shadow {
                tap.offer(&frame.input, &frame.letterbox, &record);
            }
            self.job.router.send(Outcome {
                pos: frame.pos,
                output: Output::Record(Box::new(record)),
                trace: frame.trace,
            });
        }
        batch_span.end();
        Ok(())
    }
}

/// What the idle inference thread wakes up for.
enum Work {
    /// Frames are queued (or their channel closed).
    Frames,
    /// A loader's command.
    Command(Box<Command>),
    /// The loader is gone.
    NoMoreCommands,
}

/// Blocks until frames are queued or a command arrives.
fn wait_for_work(frames: &Receiver<Decoded>, commands: &Receiver<Command>) -> Work {
    let mut select = Select::new();
    let f = select.recv(frames);
    select.recv(commands);
    loop {
        let ready = select.ready();
        if ready == f {
            return Work::Frames;
        }
        match commands.try_recv() {
            Ok(c) => return Work::Command(Box::new(c)),
            Err(crossbeam_channel::TryRecvError::Disconnected) => return Work::NoMoreCommands,
            Err(crossbeam_channel::TryRecvError::Empty) => {}
        }
    }
}

/// The device as written in spans and configuration: `cpu`, `cuda:0`, ...
fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}
