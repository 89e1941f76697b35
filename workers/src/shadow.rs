//! Shadow inference: a candidate version infers a sample of the frames beside the active
//! version, for comparison only.
//!
//! Contract:
//!
//! - **Never in the primary's way.** The active version infers every frame and its records
//!   are published exactly as without a shadow; the shadow sees copies. After each forward
//!   pass of the active version, the inference thread offers the sampled frames (input tensor
//!   shared, not copied, plus the primary record) to the shadow thread over a bounded queue of
//!   [`QUEUE`] with `try_send`: when the shadow is behind, the frame is **shed** (counted),
//!   never waited for. The shadow thread runs at a lower OS priority (nice
//!   [`NICE`]) with one libtorch thread, so under load the scheduler serves the primary
//!   first and shadow work is what gives way.
//! - **Sample.** A frame is sampled when [`sampled`]`(camera, seq, percent)`: a hash of the
//!   camera id and sequence number, so every worker (and a re-run) samples the same frames.
//! - **Output.** For each frame it infers, the shadow publishes a detection record (the
//!   primary record's frame fields, the shadow's model and detections, its own inference
//!   time) to the shadow topic (`panoptes.detections.shadow`, key = camera id), at least
//!   once and unordered: it is an evaluation stream, not a product one. A failed forward
//!   pass or a refused send is counted and the shadow goes on; it never stops the worker.
//! - **Agreement.** Per class, the shadow's detections are matched to the primary's (same
//!   class, IoU ≥ 0.5, best score first: [`crate::validate::matching`]); matched pairs
//!   `agree`, the rest are `primary_only` or `shadow_only`
//!   (`panoptes_worker_shadow_matches_total{class,outcome}`), and
//!   `panoptes_worker_shadow_agreement{class}` = 2·agree / (2·agree + primary_only +
//!   shadow_only) since the shadow started (1 for identical outputs; the series are removed
//!   when the shadow ends).
//! - **Lifetime.** The shadow thread owns the candidate model; dropping the [`ShadowTap`]
//!   closes its queue, and the thread finishes the batch in hand, flushes its producer and
//!   ends (the model with it).

pub mod agreement;
mod runner;

use crossbeam_channel::{Sender, TrySendError};
use panoptes_runtime::kafka_link::KafkaLink;
use panoptes_schemas::DetectionRecord;
use prometheus::{GaugeVec, IntCounterVec, Opts, Registry};
use tch::Tensor;

use crate::config::KafkaConfig;
use crate::preprocess::Letterbox;
use crate::swap::loader::Candidate;

/// Frames waiting for the shadow thread; more are shed.
pub const QUEUE: usize = 8;

/// OS priority of the shadow thread (0 = the process's; 19 = the lowest).
pub const NICE: i32 = 10;

/// Where the shadow's records go.
#[derive(Clone)]
pub struct ShadowOut {
    /// The worker's Kafka settings (connection, security, producer properties).
    pub kafka: KafkaConfig,
    /// The shadow topic.
    pub topic: String,
    /// Client id of the producer.
    pub client_id: String,
    /// Where the producer's client errors go.
    pub link: KafkaLink,
}

impl std::fmt::Debug for ShadowOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShadowOut")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// Whether frame `seq` of `camera` belongs to a `percent` % sample: the same answer on every
/// worker, spread evenly over cameras and sequence numbers.
pub fn sampled(camera: &str, seq: u64, percent: u8) -> bool {
    if percent >= 100 {
        return true;
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in camera.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64 finaliser over the camera hash and seq: neighbouring seqs land far apart.
    let mut z = h ^ seq.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    z % 100 < u64::from(percent)
}

/// One frame for the shadow: its model input (shared with the primary's), how it was placed,
/// and the primary's record with its detections.
pub struct ShadowJob {
    input: Tensor,
    letterbox: Letterbox,
    primary: DetectionRecord,
}

/// The shadow's metrics.
#[derive(Debug, Clone)]
pub struct ShadowMetrics {
    /// Sampled frames by result: `inferred`, `shed`, `error`.
    pub frames: IntCounterVec,
    /// Detections by class and outcome: `agree`, `primary_only`, `shadow_only`.
    pub matches: IntCounterVec,
    /// Agreement per class since the shadow started.
    pub agreement: GaugeVec,
    /// Shadow records by result: `sent`, `failed`.
    pub records: IntCounterVec,
}

impl ShadowMetrics {
    /// Creates the metrics in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let m = Self {
            frames: counter(
                "panoptes_worker_shadow_frames_total",
                "Frames sampled for the shadow model, by result (inferred, shed when the shadow was behind, error).",
                &["result"],
            )?,
            matches: counter(
                "panoptes_worker_shadow_matches_total",
                "Detections of the shadow and the active model on the same frames, by class and outcome (agree: matched at IoU 0.5; primary_only; shadow_only).",
                &["class", "outcome"],
            )?,
            agreement: GaugeVec::new(
                Opts::new(
                    "panoptes_worker_shadow_agreement",
                    "Agreement of the shadow with the active model per class since the shadow started: 2 agree / (2 agree + primary_only + shadow_only).",
                ),
                &["class"],
            )?,
            records: counter(
                "panoptes_worker_shadow_records_total",
                "Shadow detection records by result (sent, failed).",
                &["result"],
            )?,
        };
        registry.register(Box::new(m.agreement.clone()))?;
        for r in ["inferred", "shed", "error"] {
            m.frames.with_label_values(&[r]);
        }
        for r in ["sent", "failed"] {
            m.records.with_label_values(&[r]);
        }
        Ok(m)
    }
}

/// The inference thread's handle on a running shadow; dropping it ends the shadow.
pub struct ShadowTap {
    tx: Sender<ShadowJob>,
    percent: u8,
    metrics: ShadowMetrics,
}

impl ShadowTap {
    /// Starts the shadow thread on `candidate`, sampling `percent` % of frames.
    pub fn start(
        candidate: Candidate,
        percent: u8,
        out: ShadowOut,
        max_batch: usize,
        metrics: ShadowMetrics,
    ) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        runner::spawn(candidate.model, rx, out, max_batch, metrics.clone())?;
        Ok(Self {
            tx,
            percent,
            metrics,
        })
    }

    /// From now on, samples `percent` % of frames.
    pub fn retarget(&mut self, percent: u8) {
        self.percent = percent;
    }

    /// Offers one frame the active version inferred (its input and finished record); sheds
    /// it when the shadow is behind.
    pub fn offer(&self, input: &Tensor, letterbox: &Letterbox, primary: &DetectionRecord) {
        if !sampled(&primary.camera_id, primary.seq, self.percent) {
            return;
        }
        let job = ShadowJob {
            input: input.shallow_clone(),
            letterbox: *letterbox,
            primary: primary.clone(),
        };
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.metrics.frames.with_label_values(&["shed"]).inc(),
            Err(TrySendError::Disconnected(_)) => {
                self.metrics.frames.with_label_values(&["error"]).inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_is_deterministic_and_close_to_the_share() {
        for percent in [1u8, 10, 25, 50] {
            let n = (0..20_000u64)
                .filter(|s| sampled(&format!("cam{}", s % 7), s / 7, percent))
                .count();
            let share = n as f64 / 20_000.0 * 100.0;
            assert!(
                (share - f64::from(percent)).abs() < 1.5,
                "{percent}: {share}"
            );
        }
        assert!((0..100).all(|s| sampled("c", s, 100)));
        assert_eq!(
            (0..50).map(|s| sampled("c", s, 30)).collect::<Vec<_>>(),
            (0..50).map(|s| sampled("c", s, 30)).collect::<Vec<_>>()
        );
    }
}
