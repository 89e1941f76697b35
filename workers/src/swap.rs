//! Warm hot swap: a lane's inference thread switches to another version of its model between
//! two batches, without a dropped frame.
//!
//! Contract:
//!
//! - **What is asked.** The node's [`ModelSwitch`] holds the version the worker should run
//!   (`name`, `version`, `generation`), set by the rollout watcher ([`watch`]) from the
//!   group's `panoptes:rollout:<group>` record. Generations only grow: a request at a
//!   generation already seen does nothing, so repeated reads are idempotent.
//! - **Loading.** Each lane has a loader thread ([`loader`], never the inference thread, never
//!   tokio) that follows the switch through the pure [`SwapMachine`]: resolve the version in
//!   the repository (SHA-256 checked), load it on the lane's device beside the running model,
//!   check its manifest (same model name, valid contract: the load's zero pass checks the
//!   output shape), and warm it up at batch sizes 1, 2, 4, … `max_batch`. Any failure refuses
//!   the candidate ([`Refusal`]: counted in `panoptes_worker_model_swaps_total{result}`,
//!   logged once); the running model keeps serving, and the refused version is not tried
//!   again until the record's generation changes.
//! - **Switching.** A ready candidate goes to the inference thread over a bounded(1) channel;
//!   the thread takes it between batches (or while idle) and flips the lane's [`ModelGate`].
//!   The gate stamps every frame, at the moment a decode thread takes it from the consumer's
//!   queue (one at a time, in consumption order), with the model that will infer it: the
//!   decode thread letterboxes it to that model's input size and the inference thread runs it
//!   on that model. So a candidate whose input size differs needs no re-letterboxing, and in
//!   each partition every frame consumed before the flip is inferred (and its record named)
//!   by the old version and every frame after by the new one: never mixed back. The old model
//!   stays loaded until no stamped frame of it is left anywhere in the lane (the stamp's
//!   reference count), then it is dropped: at most two models per lane at any time.
//! - **Naming.** Every detection record (also `skipped_stale` / `superseded_owner` ones)
//!   carries the name and version of its frame's stamp.

use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use panoptes_schemas::ModelRef;
use parking_lot::{Mutex, RwLock};

use crate::model::ModelManifest;

pub mod loader;
pub mod watch;

/// The model a frame is stamped with: the one that infers it and is named in its record.
#[derive(Debug)]
pub struct ModelStamp {
    /// Per-lane switch counter (0 = the model loaded at start).
    pub generation: u64,
    /// Name and version, as written into records.
    pub model: ModelRef,
    /// Its manifest (input size for the letterbox).
    pub manifest: ModelManifest,
}

impl ModelStamp {
    /// A stamp for `manifest` at `generation`.
    pub fn new(generation: u64, manifest: ModelManifest) -> Arc<Self> {
        Arc::new(Self {
            generation,
            model: ModelRef {
                name: manifest.name.clone(),
                version: manifest.version.clone(),
            },
            manifest,
        })
    }
}

/// The lane's switch point: which model frames taken from the consumer's queue now are
/// stamped with. Shared by the decode threads (which take frames through [`ModelGate::next`])
/// and the inference thread (which [`ModelGate::flip`]s it).
#[derive(Debug, Clone)]
pub struct ModelGate {
    inner: Arc<GateInner>,
}

#[derive(Debug)]
struct GateInner {
    /// Serialises takes, so stamps follow consumption order.
    take: Mutex<()>,
    current: RwLock<Arc<ModelStamp>>,
}

impl ModelGate {
    /// A gate stamping with `stamp`.
    pub fn new(stamp: Arc<ModelStamp>) -> Self {
        Self {
            inner: Arc::new(GateInner {
                take: Mutex::new(()),
                current: RwLock::new(stamp),
            }),
        }
    }

    /// The stamp given now.
    pub fn current(&self) -> Arc<ModelStamp> {
        self.inner.current.read().clone()
    }

    /// Takes the next item of `queue` (blocking) with the stamp in force at that moment;
    /// `None` once the queue is closed and empty. Takes are one at a time, so in one
    /// producer's order the stamps' generations never decrease.
    pub fn next<T>(&self, queue: &Receiver<T>) -> Option<(T, Arc<ModelStamp>)> {
        let _one_at_a_time = self.inner.take.lock();
        let item = queue.recv().ok()?;
        Some((item, self.current()))
    }

    /// From now on, frames are stamped with `stamp`.
    pub fn flip(&self, stamp: Arc<ModelStamp>) {
        *self.inner.current.write() = stamp;
    }
}

/// What the worker should run, as the rollout record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapRequest {
    /// Version in the repository.
    pub version: String,
    /// The rollout record's generation.
    pub generation: u64,
}

/// The version every lane of the node should run; written by the rollout watcher, read by
/// the lanes' loaders.
#[derive(Debug, Clone, Default)]
pub struct ModelSwitch {
    desired: Arc<Mutex<Option<SwapRequest>>>,
}

impl ModelSwitch {
    /// Asks for `version` at `generation`; ignored unless the generation is newer than the
    /// last request's. Returns whether it was taken.
    pub fn request(&self, version: &str, generation: u64) -> bool {
        let mut d = self.desired.lock();
        if d.as_ref().is_some_and(|r| r.generation >= generation) {
            return false;
        }
        *d = Some(SwapRequest {
            version: version.to_string(),
            generation,
        });
        true
    }

    /// The latest request.
    pub fn desired(&self) -> Option<SwapRequest> {
        self.desired.lock().clone()
    }
}

/// Where a lane's loader finds candidates.
#[derive(Debug, Clone)]
pub struct SwapSpec {
    /// The model repository (`<repository>/<name>/<version>/`).
    pub repository: PathBuf,
    /// The model name followed.
    pub name: String,
    /// What to run.
    pub switch: ModelSwitch,
}

/// Why a candidate was refused (the `result` label of `panoptes_worker_model_swaps_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The repository cannot give the version intact: missing, a bad manifest, or model
    /// bytes that do not match its SHA-256.
    Integrity,
    /// The TorchScript could not be loaded on the device.
    Load,
    /// The manifest or the model's output contradicts what the lane needs.
    Contract,
    /// A warm-up pass failed.
    Warmup,
}

impl Refusal {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Integrity => "refused_integrity",
            Self::Load => "refused_load",
            Self::Contract => "refused_contract",
            Self::Warmup => "refused_warmup",
        }
    }
}

/// Every `result` label of `panoptes_worker_model_swaps_total`.
pub const SWAP_RESULTS: &[&str] = &[
    "ok",
    "refused_integrity",
    "refused_load",
    "refused_contract",
    "refused_warmup",
];

/// Where a lane's candidate stands (pure; the loader drives it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    /// Only the running version; nothing pending.
    Serving,
    /// Loading and warming up this version.
    Loading(String),
    /// Loaded, warm, handed to the inference thread.
    Ready(String),
    /// This version was refused at the generation of its request.
    Refused(String, Refusal),
}

/// The loader's state machine: Serving(v) → Loading(v') → Ready(v') → Serving(v'), or
/// Loading(v') → Refused(v') (v keeps serving).
#[derive(Debug, Clone)]
pub struct SwapMachine {
    serving: String,
    phase: Phase,
    generation: u64,
}

impl SwapMachine {
    /// Serving `version`; requests at `generation` or below are old.
    pub fn new(version: &str, generation: u64) -> Self {
        Self {
            serving: version.to_string(),
            phase: Phase::Serving,
            generation,
        }
    }

    /// The version running now.
    pub fn serving(&self) -> &str {
        &self.serving
    }

    /// The phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// A request: `Some(version)` when that version must be loaded now. An old generation,
    /// the running version or the version already in hand do nothing; a refused version is
    /// tried again only at a newer generation (the record changed).
    pub fn request(&mut self, req: &SwapRequest) -> Option<String> {
        if req.generation <= self.generation {
            return None;
        }
        self.generation = req.generation;
        let in_hand = match &self.phase {
            Phase::Loading(v) | Phase::Ready(v) => Some(v),
            Phase::Serving | Phase::Refused(..) => None,
        };
        if (req.version == self.serving && in_hand.is_none()) || in_hand == Some(&req.version) {
            return None;
        }
        self.phase = Phase::Loading(req.version.clone());
        Some(req.version.clone())
    }

    /// The candidate is loaded and warm.
    pub fn ready(&mut self, version: &str) {
        if self.phase == Phase::Loading(version.to_string()) {
            self.phase = Phase::Ready(version.to_string());
        }
    }

    /// The candidate was refused.
    pub fn refused(&mut self, version: &str, why: Refusal) {
        self.phase = Phase::Refused(version.to_string(), why);
    }

    /// The inference thread took the candidate: it serves now.
    pub fn switched(&mut self, version: &str) {
        self.serving = version.to_string();
        self.phase = Phase::Serving;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: &str, generation: u64) -> SwapRequest {
        SwapRequest {
            version: v.into(),
            generation,
        }
    }

    #[test]
    fn machine_loads_new_versions_once_per_generation() {
        let mut m = SwapMachine::new("1", 0);
        assert_eq!(m.request(&req("1", 1)), None, "already serving");
        assert_eq!(m.request(&req("2", 2)), Some("2".into()));
        assert_eq!(m.request(&req("2", 3)), None, "already loading");
        m.ready("2");
        assert_eq!(m.phase(), &Phase::Ready("2".into()));
        m.switched("2");
        assert_eq!((m.serving(), m.phase()), ("2", &Phase::Serving));
        assert_eq!(m.request(&req("3", 3)), None, "old generation");
        assert_eq!(m.request(&req("3", 4)), Some("3".into()));
        m.refused("3", Refusal::Integrity);
        assert_eq!(m.serving(), "2");
        assert_eq!(m.request(&req("3", 4)), None, "same record: not retried");
        assert_eq!(m.request(&req("3", 5)), Some("3".into()), "record changed");
        m.refused("3", Refusal::Load);
        assert_eq!(m.request(&req("2", 6)), None, "rollback to the running one");
        assert_eq!(m.phase(), &Phase::Refused("3".into(), Refusal::Load));
    }

    #[test]
    fn switch_keeps_the_newest_generation() {
        let s = ModelSwitch::default();
        assert!(s.request("2", 5));
        assert!(!s.request("3", 5));
        assert!(!s.request("1", 4));
        assert!(s.request("1", 6));
        assert_eq!(s.desired(), Some(req("1", 6)));
    }

    #[test]
    fn gate_stamps_in_take_order() {
        let manifest = |v: &str| ModelManifest {
            name: "m".into(),
            version: v.into(),
            input: crate::model::InputSpec {
                width: 32,
                height: 32,
                format: crate::model::InputFormat::Rgb,
                letterbox_fill: 114,
            },
            output: crate::model::OutputContract::PostNms,
            classes: vec!["a".into()],
            score_threshold: 0.25,
            iou_threshold: 0.45,
            max_detections: 10,
            sha256: None,
            validation: Vec::new(),
        };
        let old = ModelStamp::new(0, manifest("1"));
        let gate = ModelGate::new(old.clone());
        let (tx, rx) = crossbeam_channel::bounded(8);
        for i in 0..4 {
            tx.send(i).unwrap();
        }
        let (a, sa) = gate.next(&rx).unwrap();
        gate.flip(ModelStamp::new(1, manifest("2")));
        let (b, sb) = gate.next(&rx).unwrap();
        assert_eq!((a, sa.model.version.as_str()), (0, "1"));
        assert_eq!((b, sb.model.version.as_str()), (1, "2"));
        drop(sa);
        assert_eq!(Arc::strong_count(&old), 1, "nothing holds the old stamp");
        drop(tx);
        let rest: Vec<_> = std::iter::from_fn(|| gate.next(&rx)).collect();
        assert_eq!(rest.len(), 2);
    }
}
