//! Per-camera drift state: reference window, current window, PSI per signal and the combined
//! drift state with hysteresis. Pure: time comes in as milliseconds on a monotonic clock.
//!
//! Contract, per camera:
//! - **Reference**: every sample of the camera's first `[drift] reference` (counted from its
//!   first sample on this worker) goes into the reference histograms; then they are frozen,
//!   once at least `min_samples` image (or record) samples arrived. Until then the camera is
//!   not evaluated. The reference is rebuilt when the camera is forgotten (its partition left
//!   this worker, or no sample for `forget_after`) and seen again, and, if
//!   `rebaseline_after` is set, when drift stayed raised that long (the current window then
//!   becomes the reference: a camera moved for good stops alerting).
//! - **Current**: a sliding window of the last `[drift] window`.
//! - **PSI** per signal ([`Signal`]) between the two, when both hold at least `min_samples`
//!   samples (frames, or detections for `confidence`); else that signal is not scored.
//! - **State**: drift is raised when the highest PSI is ≥ `raise_psi` at `raise_after`
//!   consecutive evaluations (the signal with the highest PSI at that moment is the one
//!   counted), and cleared when it is < `clear_psi` at `clear_after` consecutive ones.
//!
//! Memory per camera is fixed: 7 histograms per signal (reference + [`SLOTS`] slots), 156
//! bins per histogram set.
//!
//! [`SLOTS`]: super::window::SLOTS

use std::collections::HashMap;

use super::DriftConfig;
use super::stats::{COLOUR_BINS, CONTRAST_BINS, ImageStats, LUMA_BINS, SHARP_BINS};
use super::window::{Hist, SlidingHist, psi};

/// Bins of the class-mix histogram: bin 0 counts frames without any detection, bin `1 + k`
/// detections of class `k` for `k < 32`, the last bin every higher class id.
pub const CLASS_BINS: usize = 34;
/// Bins of the confidence histogram (0.1 wide over `[0, 1]`).
pub const CONFIDENCE_BINS: usize = 10;

/// What drift compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// Luma histogram.
    Brightness,
    /// |luma − mean| histogram.
    Contrast,
    /// |Laplacian| histogram.
    Sharpness,
    /// Coarse RGB histogram.
    Colour,
    /// Class mix of the detections (and frames without any).
    Classes,
    /// Confidence of the detections.
    Confidence,
}

/// Every signal, in metric order.
pub const SIGNALS: [Signal; 6] = [
    Signal::Brightness,
    Signal::Contrast,
    Signal::Sharpness,
    Signal::Colour,
    Signal::Classes,
    Signal::Confidence,
];

impl Signal {
    /// The `signal` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Brightness => "brightness",
            Signal::Contrast => "contrast",
            Signal::Sharpness => "sharpness",
            Signal::Colour => "colour",
            Signal::Classes => "classes",
            Signal::Confidence => "confidence",
        }
    }

    fn bins(self) -> usize {
        match self {
            Signal::Brightness => LUMA_BINS,
            Signal::Contrast => CONTRAST_BINS,
            Signal::Sharpness => SHARP_BINS,
            Signal::Colour => COLOUR_BINS,
            Signal::Classes => CLASS_BINS,
            Signal::Confidence => CONFIDENCE_BINS,
        }
    }
}

/// One observation of a camera.
#[derive(Debug, Clone, Copy)]
pub enum Observation<'a> {
    /// A decoded frame's image statistics.
    Image(&'a ImageStats),
    /// An inferred frame's detections, `(class id, score)`.
    Detections(&'a [(u32, f32)]),
}

/// One camera's evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    /// PSI per signal in [`SIGNALS`] order (`None`: not scored, too few samples or no
    /// reference yet).
    pub psi: [Option<f64>; 6],
    /// Drift raised now.
    pub active: bool,
    /// Drift was raised at this evaluation, by this signal.
    pub raised: Option<Signal>,
    /// The reference is frozen (the camera is evaluated).
    pub reference_ready: bool,
    /// The reference was rebuilt from the current window at this evaluation.
    pub rebaselined: bool,
}

/// Drift state of one camera.
#[derive(Debug, Clone)]
pub struct CameraDrift {
    /// The partition its frames come from (forgotten with it).
    pub partition: i32,
    first_ms: u64,
    last_ms: u64,
    reference: Vec<Hist>,
    frozen: bool,
    current: Vec<SlidingHist>,
    active: bool,
    active_since: u64,
    above: u32,
    below: u32,
}

impl CameraDrift {
    /// A camera first seen at `now_ms` on `partition`.
    pub fn new(partition: i32, now_ms: u64, window_ms: u64) -> Self {
        Self {
            partition,
            first_ms: now_ms,
            last_ms: now_ms,
            reference: SIGNALS.iter().map(|s| Hist::new(s.bins())).collect(),
            frozen: false,
            current: SIGNALS
                .iter()
                .map(|s| SlidingHist::new(s.bins(), window_ms))
                .collect(),
            active: false,
            active_since: 0,
            above: 0,
            below: 0,
        }
    }

    fn add(&mut self, now_ms: u64, signal: Signal, weights: &[f32], samples: u64) {
        let i = signal as usize;
        self.current[i].add(now_ms, weights, samples);
        if !self.frozen {
            self.reference[i].add(weights, samples);
        }
    }

    /// Adds an observation made at `now_ms`.
    pub fn observe(&mut self, now_ms: u64, obs: Observation<'_>) {
        self.last_ms = self.last_ms.max(now_ms);
        match obs {
            Observation::Image(s) => {
                self.add(now_ms, Signal::Brightness, &s.brightness, 1);
                self.add(now_ms, Signal::Contrast, &s.contrast, 1);
                self.add(now_ms, Signal::Sharpness, &s.sharpness, 1);
                self.add(now_ms, Signal::Colour, &s.colour, 1);
            }
            Observation::Detections(dets) => {
                let mut classes = [0f32; CLASS_BINS];
                let mut conf = [0f32; CONFIDENCE_BINS];
                if dets.is_empty() {
                    classes[0] = 1.0;
                }
                for &(class, score) in dets {
                    classes[(class as usize + 1).min(CLASS_BINS - 1)] += 1.0;
                    let b = (score.clamp(0.0, 1.0) * CONFIDENCE_BINS as f32) as usize;
                    conf[b.min(CONFIDENCE_BINS - 1)] += 1.0;
                }
                self.add(now_ms, Signal::Classes, &classes, 1);
                if !dets.is_empty() {
                    self.add(now_ms, Signal::Confidence, &conf, dets.len() as u64);
                }
            }
        }
    }

    /// Whether drift is raised.
    pub fn active(&self) -> bool {
        self.active
    }

    /// Evaluates at `now_ms`: freezes the reference when due, scores each signal and moves
    /// the drift state.
    pub fn evaluate(&mut self, now_ms: u64, cfg: &DriftConfig) -> Evaluation {
        let min = u64::from(cfg.min_samples);
        let mut out = Evaluation {
            psi: [None; 6],
            active: self.active,
            raised: None,
            reference_ready: self.frozen,
            rebaselined: false,
        };
        if !self.frozen {
            let due = now_ms.saturating_sub(self.first_ms) >= ms(cfg.reference);
            let enough = [Signal::Brightness, Signal::Classes]
                .iter()
                .any(|s| self.reference[*s as usize].samples >= min);
            if !(due && enough) {
                return out;
            }
            self.frozen = true;
            out.reference_ready = true;
        }
        let current: Vec<Hist> = self.current.iter().map(|w| w.sum(now_ms)).collect();
        let mut top: Option<(Signal, f64)> = None;
        for (i, s) in SIGNALS.iter().enumerate() {
            let (r, c) = (&self.reference[i], &current[i]);
            if r.samples >= min && c.samples >= min {
                let v = psi(&r.bins, &c.bins);
                out.psi[i] = Some(v);
                if top.is_none_or(|(_, t)| v > t) {
                    top = Some((*s, v));
                }
            }
        }
        let score = top.map_or(0.0, |(_, v)| v);
        if self.active {
            self.below = if score < cfg.clear_psi {
                self.below + 1
            } else {
                0
            };
            if self.below >= cfg.clear_after {
                self.active = false;
                self.below = 0;
            } else if cfg
                .rebaseline_after
                .is_some_and(|d| now_ms.saturating_sub(self.active_since) >= ms(d))
            {
                self.reference = current;
                self.active = false;
                out.rebaselined = true;
            }
        } else {
            self.above = if score >= cfg.raise_psi {
                self.above + 1
            } else {
                0
            };
            if self.above >= cfg.raise_after {
                self.active = true;
                self.active_since = now_ms;
                self.above = 0;
                out.raised = top.map(|(s, _)| s);
            }
        }
        out.active = self.active;
        out
    }
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The drift state of every camera one lane sees.
#[derive(Debug, Default)]
pub struct DriftBook {
    cameras: HashMap<String, CameraDrift>,
}

impl DriftBook {
    /// Adds an observation of `camera` (on `partition`) at `now_ms`; a camera not known yet
    /// starts its reference window.
    pub fn observe(
        &mut self,
        camera: &str,
        partition: i32,
        now_ms: u64,
        obs: Observation<'_>,
        cfg: &DriftConfig,
    ) {
        if let Some(cam) = self.cameras.get_mut(camera) {
            cam.partition = partition;
            cam.observe(now_ms, obs);
            return;
        }
        let mut cam = CameraDrift::new(partition, now_ms, ms(cfg.window));
        cam.observe(now_ms, obs);
        self.cameras.insert(camera.to_string(), cam);
    }

    /// Forgets the cameras of `partition` (it left this worker); returns their ids.
    pub fn forget_partition(&mut self, partition: i32) -> Vec<String> {
        let ids: Vec<String> = self
            .cameras
            .iter()
            .filter(|(_, c)| c.partition == partition)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            self.cameras.remove(id);
        }
        ids
    }

    /// Evaluates every camera at `now_ms`; cameras without a sample for `forget_after` are
    /// forgotten instead (second list).
    pub fn evaluate(
        &mut self,
        now_ms: u64,
        cfg: &DriftConfig,
    ) -> (Vec<(String, Evaluation)>, Vec<String>) {
        let idle = ms(cfg.forget_after);
        let gone: Vec<String> = self
            .cameras
            .iter()
            .filter(|(_, c)| now_ms.saturating_sub(c.last_ms) >= idle)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.cameras.remove(id);
        }
        let evals = self
            .cameras
            .iter_mut()
            .map(|(id, c)| (id.clone(), c.evaluate(now_ms, cfg)))
            .collect();
        (evals, gone)
    }

    /// Forgets every camera; returns their ids.
    pub fn clear(&mut self) -> Vec<String> {
        self.cameras.drain().map(|(id, _)| id).collect()
    }

    /// Cameras tracked.
    pub fn len(&self) -> usize {
        self.cameras.len()
    }

    /// No camera tracked.
    pub fn is_empty(&self) -> bool {
        self.cameras.is_empty()
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
