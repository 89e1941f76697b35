//! Drift per camera: is a camera still showing what it showed when it started?
//!
//! Signals ([`Signal`]): four image statistics computed by the decode threads on a thumbnail
//! of each sampled decoded frame ([`stats`]: brightness, contrast, sharpness, colour), and
//! the class mix and confidence distribution of each inferred frame's detections (taken from
//! the detection records on their way to the publisher, [`crate::pipeline::publish::Router`]).
//! Per camera a reference window (the camera's first `[drift] reference`, then frozen) is
//! compared with a sliding current window (the last `[drift] window`) by the population
//! stability index per signal; drift is raised with hysteresis ([`state`] states the rules).
//!
//! Data path: the stages never wait for drift. [`DriftTap`] (cheap to clone, carried by the
//! lane's router) computes image statistics on the calling decode thread (a fixed-size
//! thumbnail: see `## Measured` in the docs, a few µs next to a JPEG decode of a millisecond)
//! and hands samples to the lane's drift thread over a bounded channel with `try_send`: a
//! full channel drops the sample and counts it (`panoptes_worker_drift_samples_dropped_total`).
//! The drift thread owns every camera's state ([`DriftBook`]), evaluates every
//! `evaluate_every` and writes the metrics:
//!
//! - `panoptes_worker_drift_psi{camera,signal}`: PSI of each scored signal;
//! - `panoptes_worker_drift_active{camera}`: 1 while drift is raised;
//! - `panoptes_worker_drift_events_total{signal}`: drift raised, by the signal with the
//!   highest PSI at that moment.
//!
//! A camera's series are removed when its partition leaves the lane (or restarts) and when
//! no sample came for `forget_after`; its state (reference included) goes with them.

pub mod state;
pub mod stats;
pub mod window;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use panoptes_schemas::{DetectionRecord, FrameHeaders, FrameStatus};
use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};

pub use state::{CameraDrift, DriftBook, Evaluation, Observation, SIGNALS, Signal};
pub use stats::ImageStats;

/// `[drift]`: drift detection per camera.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DriftConfig {
    /// Compute drift at all.
    pub enabled: bool,
    /// Image statistics of one frame in `sample_every` (by frame sequence number).
    pub sample_every: u32,
    /// Reference window: a camera's first `reference` on this worker.
    #[serde(with = "humantime_serde")]
    pub reference: Duration,
    /// Current (sliding) window.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// How often every camera is evaluated.
    #[serde(with = "humantime_serde")]
    pub evaluate_every: Duration,
    /// Samples a window needs before its signal is scored.
    pub min_samples: u32,
    /// PSI at or above which an evaluation counts towards raising drift.
    pub raise_psi: f64,
    /// PSI below which an evaluation counts towards clearing it.
    pub clear_psi: f64,
    /// Consecutive evaluations at or above `raise_psi` that raise drift.
    pub raise_after: u32,
    /// Consecutive evaluations below `clear_psi` that clear it.
    pub clear_after: u32,
    /// Drift raised this long makes the current window the new reference (unset: never).
    #[serde(with = "humantime_serde")]
    pub rebaseline_after: Option<Duration>,
    /// A camera without samples this long is forgotten (reference included).
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
    /// Samples queued for the drift thread before new ones are dropped.
    pub queue: usize,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sample_every: 5,
            reference: Duration::from_secs(300),
            window: Duration::from_secs(60),
            evaluate_every: Duration::from_secs(5),
            min_samples: 20,
            raise_psi: 0.25,
            clear_psi: 0.1,
            raise_after: 3,
            clear_after: 3,
            rebaseline_after: None,
            forget_after: Duration::from_secs(600),
            queue: 1024,
        }
    }
}

impl DriftConfig {
    /// Checks bounds serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |s: &str| Err(format!("drift: {s}"));
        if self.sample_every == 0 || self.min_samples == 0 || self.queue == 0 {
            return bad("sample_every, min_samples and queue must be at least 1");
        }
        if self.raise_after == 0 || self.clear_after == 0 {
            return bad("raise_after and clear_after must be at least 1");
        }
        if !(self.clear_psi > 0.0 && self.clear_psi <= self.raise_psi && self.raise_psi.is_finite())
        {
            return bad("need 0 < clear_psi <= raise_psi");
        }
        if self.evaluate_every < Duration::from_millis(100) || self.window < self.evaluate_every {
            return bad("need 100ms <= evaluate_every <= window");
        }
        if self.forget_after < self.window {
            return bad("forget_after must be at least window");
        }
        Ok(())
    }
}

/// The drift metrics (registered with the worker's, [`crate::metrics::WorkerMetrics`]).
#[derive(Clone)]
pub struct DriftMetrics {
    /// PSI per camera and signal.
    pub psi: GaugeVec,
    /// 1 while drift is raised, per camera.
    pub active: IntGaugeVec,
    /// Drift raised, by signal.
    pub events: IntCounterVec,
    /// Samples dropped because the drift thread was behind.
    pub dropped: IntCounter,
}

impl DriftMetrics {
    /// Creates the metrics in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let psi = GaugeVec::new(
            Opts::new(
                "panoptes_worker_drift_psi",
                "Population stability index of a camera's current window against its reference, per signal.",
            ),
            &["camera", "signal"],
        )?;
        let active = IntGaugeVec::new(
            Opts::new(
                "panoptes_worker_drift_active",
                "1 while drift is raised for the camera.",
            ),
            &["camera"],
        )?;
        let events = IntCounterVec::new(
            Opts::new(
                "panoptes_worker_drift_events_total",
                "Drift raised, by the signal with the highest PSI at that moment.",
            ),
            &["signal"],
        )?;
        let dropped = IntCounter::new(
            "panoptes_worker_drift_samples_dropped_total",
            "Drift samples dropped because the drift thread was behind (the data path never waits for it).",
        )?;
        registry.register(Box::new(psi.clone()))?;
        registry.register(Box::new(active.clone()))?;
        registry.register(Box::new(events.clone()))?;
        registry.register(Box::new(dropped.clone()))?;
        for s in SIGNALS {
            events.with_label_values(&[s.as_str()]);
        }
        Ok(Self {
            psi,
            active,
            events,
            dropped,
        })
    }

    /// Removes every series of `camera`.
    fn remove_camera(&self, camera: &str) {
        for s in SIGNALS {
            let _ = self.psi.remove_label_values(&[camera, s.as_str()]);
        }
        let _ = self.active.remove_label_values(&[camera]);
    }

    /// Writes one camera's evaluation.
    fn write(&self, camera: &str, e: &Evaluation) {
        for (s, v) in SIGNALS.iter().zip(e.psi) {
            match v {
                Some(v) => self.psi.with_label_values(&[camera, s.as_str()]).set(v),
                None => {
                    let _ = self.psi.remove_label_values(&[camera, s.as_str()]);
                }
            }
        }
        self.active
            .with_label_values(&[camera])
            .set(i64::from(e.active));
        if let Some(s) = e.raised {
            self.events.with_label_values(&[s.as_str()]).inc();
            tracing::warn!(camera, signal = s.as_str(), psi = ?e.psi, "drift raised");
        } else if e.rebaselined {
            tracing::info!(
                camera,
                "drift persisted: the current window is the new reference"
            );
        }
    }
}

/// One sample for the drift thread.
enum Sample {
    Image {
        camera: String,
        partition: i32,
        stats: Box<ImageStats>,
    },
    Detections {
        camera: String,
        partition: i32,
        detections: Vec<(u32, f32)>,
    },
}

struct TapInner {
    samples: Sender<Sample>,
    forget: Sender<i32>,
    sample_every: u64,
    dropped: IntCounter,
}

/// Where the stages hand drift samples: never blocks. The default tap is off (does nothing).
#[derive(Clone, Default)]
pub struct DriftTap {
    inner: Option<Arc<TapInner>>,
}

impl std::fmt::Debug for DriftTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftTap")
            .field("enabled", &self.inner.is_some())
            .finish()
    }
}

impl DriftTap {
    /// Starts the drift thread of lane `name` (nothing if `cfg.enabled` is false); it ends
    /// when the last clone of the tap is dropped.
    pub fn spawn(cfg: &DriftConfig, metrics: DriftMetrics, name: &str) -> std::io::Result<Self> {
        if !cfg.enabled {
            return Ok(Self::default());
        }
        let (samples, samples_rx) = crossbeam_channel::bounded(cfg.queue.max(1));
        let (forget, forget_rx) = crossbeam_channel::unbounded();
        let inner = TapInner {
            samples,
            forget,
            sample_every: u64::from(cfg.sample_every.max(1)),
            dropped: metrics.dropped.clone(),
        };
        let cfg = cfg.clone();
        std::thread::Builder::new()
            .name(format!("drift-{name}"))
            .spawn(move || run(&cfg, &metrics, &samples_rx, &forget_rx))?;
        Ok(Self {
            inner: Some(Arc::new(inner)),
        })
    }

    fn send(&self, inner: &TapInner, sample: Sample) {
        match inner.samples.try_send(sample) {
            Ok(()) | Err(TrySendError::Disconnected(_)) => {}
            Err(TrySendError::Full(_)) => inner.dropped.inc(),
        }
    }

    /// A decoded frame (packed RGB24 of the envelope's size) of `partition`: its image
    /// statistics, for one frame in `sample_every`. Runs on the calling (decode) thread.
    pub fn image(&self, partition: i32, headers: &FrameHeaders, rgb: &[u8]) {
        let Some(inner) = &self.inner else { return };
        if !headers.seq.is_multiple_of(inner.sample_every) {
            return;
        }
        if let Some(stats) = ImageStats::compute(rgb, headers.width, headers.height) {
            let camera = headers.camera_id.clone();
            let stats = Box::new(stats);
            self.send(
                inner,
                Sample::Image {
                    camera,
                    partition,
                    stats,
                },
            );
        }
    }

    /// A detection record on its way to the publisher: its detections (inferred frames only).
    pub fn record(&self, record: &DetectionRecord) {
        let Some(inner) = &self.inner else { return };
        if record.status != FrameStatus::Ok {
            return;
        }
        let sample = Sample::Detections {
            camera: record.camera_id.clone(),
            partition: record.partition,
            detections: record
                .detections
                .iter()
                .map(|d| (d.class_id, d.score))
                .collect(),
        };
        self.send(inner, sample);
    }

    /// `partition` left the lane (or restarts): forget its cameras and their series.
    pub fn forget_partition(&self, partition: i32) {
        if let Some(inner) = &self.inner {
            let _ = inner.forget.send(partition);
        }
    }
}

/// The drift thread: applies samples, evaluates every `evaluate_every`, until every tap is
/// gone.
fn run(
    cfg: &DriftConfig,
    metrics: &DriftMetrics,
    samples: &Receiver<Sample>,
    forget: &Receiver<i32>,
) {
    let start = Instant::now();
    let now_ms = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut book = DriftBook::default();
    let mut next = start + cfg.evaluate_every;
    loop {
        for p in forget.try_iter() {
            for camera in book.forget_partition(p) {
                metrics.remove_camera(&camera);
            }
        }
        match samples.recv_deadline(next) {
            Ok(Sample::Image {
                camera,
                partition,
                stats,
            }) => book.observe(
                &camera,
                partition,
                now_ms(),
                Observation::Image(&stats),
                cfg,
            ),
            Ok(Sample::Detections {
                camera,
                partition,
                detections,
            }) => {
                let obs = Observation::Detections(&detections);
                book.observe(&camera, partition, now_ms(), obs, cfg);
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next {
            let (evals, gone) = book.evaluate(now_ms(), cfg);
            for camera in gone {
                metrics.remove_camera(&camera);
            }
            for (camera, e) in &evals {
                metrics.write(camera, e);
            }
            next = (next + cfg.evaluate_every).max(Instant::now());
        }
    }
    for camera in book.clear() {
        metrics.remove_camera(&camera);
    }
}
