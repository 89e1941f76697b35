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
//! - **Canary.** When the record holds a canary, the loader loads its version beside the
//!   active one and the inference thread installs it in the gate with the canary's cameras:
//!   from then on frames of those cameras are stamped with the candidate, every other frame
//!   with the active version, and batches are split by stamp (one forward pass per model).
//!   Ending the canary stamps those cameras' new frames with the active version again (the
//!   candidate retires like an old version); promoting it makes the candidate the active
//!   stamp for every camera (the old version retires). A lane holds the active version and at
//!   most one other (candidate or retiring) at any time: the machine ends a canary before it
//!   loads anything else. While a canary runs, the lane records per version what the
//!   coordinator compares ([`canary::CanaryBook`]).
//! - **Shadow.** When the record holds a shadow, the loader loads its version beside the
//!   active one and the inference thread hands it to a shadow thread of its own
//!   ([`crate::shadow`]): the gate is not touched, every record still comes from the active
//!   version, and a sample of the frames is inferred again by the shadow for the shadow
//!   topic and the agreement metrics.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use crossbeam_channel::Receiver;
use panoptes_schemas::ModelRef;
use parking_lot::{Mutex, RwLock};

use crate::model::ModelManifest;

pub mod canary;
pub mod loader;
pub mod machine;
pub mod watch;

pub use self::machine::{Step, SwapMachine};

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
/// and the inference thread (which [`ModelGate::flip`]s it and installs canaries).
#[derive(Debug, Clone)]
pub struct ModelGate {
    inner: Arc<GateInner>,
}

#[derive(Debug)]
struct GateInner {
    /// Serialises takes, so stamps follow consumption order.
    take: Mutex<()>,
    current: RwLock<Stamps>,
}

/// The stamps in force: the active version's, and a canary's with its cameras.
#[derive(Debug)]
struct Stamps {
    active: Arc<ModelStamp>,
    canary: Option<(Arc<ModelStamp>, Arc<BTreeSet<String>>)>,
}

impl ModelGate {
    /// A gate stamping with `stamp`.
    pub fn new(stamp: Arc<ModelStamp>) -> Self {
        Self {
            inner: Arc::new(GateInner {
                take: Mutex::new(()),
                current: RwLock::new(Stamps {
                    active: stamp,
                    canary: None,
                }),
            }),
        }
    }

    /// The active version's stamp.
    pub fn current(&self) -> Arc<ModelStamp> {
        self.inner.current.read().active.clone()
    }

    /// Takes the next item of `queue` (blocking) with the stamp in force at that moment for
    /// its camera (`camera`; `None`: the active version); `None` once the queue is closed
    /// and empty. Takes are one at a time, so in one producer's order the stamps follow the
    /// flips.
    pub fn next<T>(
        &self,
        queue: &Receiver<T>,
        camera: impl Fn(&T) -> Option<&str>,
    ) -> Option<(T, Arc<ModelStamp>)> {
        let _one_at_a_time = self.inner.take.lock();
        let item = queue.recv().ok()?;
        let stamps = self.inner.current.read();
        let stamp = match (&stamps.canary, camera(&item)) {
            (Some((c, cameras)), Some(cam)) if cameras.contains(cam) => c.clone(),
            _ => stamps.active.clone(),
        };
        drop(stamps);
        Some((item, stamp))
    }

    /// From now on, every frame is stamped with `stamp` (a canary ends).
    pub fn flip(&self, stamp: Arc<ModelStamp>) {
        let mut s = self.inner.current.write();
        s.active = stamp;
        s.canary = None;
    }

    /// From now on, frames of `cameras` are stamped with `stamp`, or (with `None`) with the
    /// active version again.
    pub fn set_canary(&self, canary: Option<(Arc<ModelStamp>, Arc<BTreeSet<String>>)>) {
        self.inner.current.write().canary = canary;
    }
}

/// What the worker should run, as the rollout record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapRequest {
    /// Version in the repository every camera runs (but a canary's).
    pub version: String,
    /// A candidate beside it: a canary or a shadow.
    pub candidate: Option<CandidateRequest>,
    /// The rollout record's generation.
    pub generation: u64,
}

/// A candidate version as the lanes follow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CandidateRequest {
    /// The version.
    pub version: String,
    /// What it does.
    pub role: Role,
}

/// What a candidate does beside the active version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Infers (and names in their records) the frames of these cameras.
    Canary(Arc<BTreeSet<String>>),
    /// Also infers this percentage of frames, for the shadow topic only
    /// ([`crate::shadow`]).
    Shadow(u8),
}

impl Role {
    /// `canary` or `shadow`: a change of kind means another candidate.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Canary(_) => "canary",
            Self::Shadow(_) => "shadow",
        }
    }
}

/// The version every lane of the node should run; written by the rollout watcher, read by
/// the lanes' loaders. Also carries the node's [`canary::CanaryBook`].
#[derive(Debug, Clone, Default)]
pub struct ModelSwitch {
    desired: Arc<Mutex<Option<SwapRequest>>>,
    /// What the lanes measured per version during the current canary.
    pub book: canary::CanaryBook,
}

impl ModelSwitch {
    /// Asks for `version` (and `candidate`) at `generation`; ignored unless the generation
    /// is newer than the last request's. Returns whether it was taken.
    pub fn request(
        &self,
        version: &str,
        candidate: Option<CandidateRequest>,
        generation: u64,
    ) -> bool {
        let mut d = self.desired.lock();
        if d.as_ref().is_some_and(|r| r.generation >= generation) {
            return false;
        }
        *d = Some(SwapRequest {
            version: version.to_string(),
            candidate,
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
    "failed_canary",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_keeps_the_newest_generation() {
        let s = ModelSwitch::default();
        assert!(s.request("2", None, 5));
        assert!(!s.request("3", None, 5));
        assert!(!s.request("1", None, 4));
        assert!(s.request("1", None, 6));
        let d = s.desired().unwrap();
        assert_eq!((d.version.as_str(), d.generation), ("1", 6));
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
        for i in 0..6 {
            tx.send((i, if i % 2 == 0 { "a" } else { "b" })).unwrap();
        }
        fn cam<'a>(item: &'a (i32, &'static str)) -> Option<&'a str> {
            Some(item.1)
        }
        let (a, sa) = gate.next(&rx, cam).unwrap();
        gate.flip(ModelStamp::new(1, manifest("2")));
        let (b, sb) = gate.next(&rx, cam).unwrap();
        assert_eq!((a.0, sa.model.version.as_str()), (0, "1"));
        assert_eq!((b.0, sb.model.version.as_str()), (1, "2"));
        drop(sa);
        assert_eq!(Arc::strong_count(&old), 1, "nothing holds the old stamp");
        // A canary on camera `a`: its frames get the candidate, `b`'s the active version.
        let cameras = Arc::new(BTreeSet::from(["a".to_string()]));
        gate.set_canary(Some((ModelStamp::new(2, manifest("3")), cameras)));
        let (c, sc) = gate.next(&rx, cam).unwrap();
        let (d, sd) = gate.next(&rx, cam).unwrap();
        assert_eq!((c, sc.model.version.as_str()), ((2, "a"), "3"));
        assert_eq!((d, sd.model.version.as_str()), ((3, "b"), "2"));
        gate.set_canary(None);
        let (e, se) = gate.next(&rx, cam).unwrap();
        assert_eq!((e.0, se.model.version.as_str()), (4, "2"));
        drop(tx);
        let rest: Vec<_> = std::iter::from_fn(|| gate.next(&rx, cam)).collect();
        assert_eq!(rest.len(), 1);
    }
}
