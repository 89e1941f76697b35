//! The error budget a run burned against the fleet's two objectives (`docs/operations.md`,
//! `deploy/observability/prometheus/rules/panoptes-recording.yml`), computed exactly from the
//! frames and detection records a run's topic watchers saw, not sampled from metrics.
//!
//! The definitions are the recording rules', on a finer grid so that a 30-second chaos
//! scenario still has several windows per camera:
//!
//! - **availability**: a camera-window (10 s, 2 s in a CI-scale run, whose faults are seconds
//!   apart; the rules use minutes) is good when the
//!   camera published frames in it and at least `fresh_share` (99 %) of them got an `ok`
//!   detection record that a `read_committed` reader saw within `fresh_within` (5 s) of
//!   capture. A camera-window without frames is bad (a dead ingest node, an unreachable
//!   camera). The objective allows `1 − availability` (0.1 %) of camera-time to be bad over
//!   the budget period (30 days), so the run's bad camera-time is reported as a share of that
//!   monthly budget for the run's cameras.
//! - **latency**: at most `1 − latency_share` (1 %) of detection records later than
//!   `latency_bound` (1 s, capture → publish, as the worker measures it). The run's late
//!   records are reported as a share of the month's budget at the run's own record rate.
//!
//! Each camera's grid starts at the capture of its first frame answered in time (start-up is
//! not the objective's concern) and ends with the last whole window before the end of intake.
//! It is measured after the run settled (the workers answered what intake left in Kafka), so
//! every window's frames had their chance to be answered.
//!
//! Pure: the chaos harness hands in what its watchers saw ([`crate::chaos`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The objectives and the grid they are measured on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Objectives {
    /// Share of camera-time that must be good (0.999).
    pub availability: f64,
    /// Length of a camera-window.
    pub window: Duration,
    /// A frame answered within this of its capture is fresh (5 s).
    pub fresh_within: Duration,
    /// Share of a window's frames that must be fresh for the window to be good (0.99).
    pub fresh_share: f64,
    /// Latency bound of a detection record (1 s).
    pub latency_bound: Duration,
    /// Share of records that must be within `latency_bound` (0.99).
    pub latency_share: f64,
    /// The period each budget is set over (30 days).
    pub period: Duration,
}

impl Default for Objectives {
    fn default() -> Self {
        Self {
            availability: 0.999,
            window: Duration::from_secs(10),
            fresh_within: Duration::from_secs(5),
            fresh_share: 0.99,
            latency_bound: Duration::from_secs(1),
            latency_share: 0.99,
            period: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// A frame a watcher saw: camera, sequence number, capture time (ms since the epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// Camera.
    pub camera: String,
    /// Sequence number.
    pub seq: u64,
    /// Capture time (ms since the epoch).
    pub capture_ms: u64,
}

/// A detection record a `read_committed` watcher saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// Camera.
    pub camera: String,
    /// Sequence number of its frame.
    pub seq: u64,
    /// When the watcher saw it (ms since the epoch, the clock the frames' capture times are on).
    pub arrived_ms: u64,
    /// Status `ok` (inferred); skipped and shed records do not answer a frame.
    pub ok: bool,
    /// The record's end-to-end latency (capture → publish) in ms.
    pub end_to_end_ms: f64,
}

/// What a run burned.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SloBurn {
    /// Length of a camera-window (s).
    pub window_s: f64,
    /// Camera-windows measured.
    pub camera_windows: u64,
    /// Of those, bad ones.
    pub bad_windows: u64,
    /// Bad windows per camera (cameras with none are left out).
    pub bad_by_camera: BTreeMap<String, u64>,
    /// Share of camera-windows that were good (`None` without any window).
    pub availability: Option<f64>,
    /// Bad camera-time as a share of the period's availability budget for the run's cameras.
    pub availability_budget_burned: f64,
    /// `ok` detection records with a latency.
    pub records: u64,
    /// Of those, later than the latency bound.
    pub late_records: u64,
    /// Late records as a share of the period's latency budget at the run's record rate.
    pub latency_budget_burned: f64,
}

/// Measures `frames` and `answers` of `cameras` against `obj`, up to `intake_end_ms` (the end
/// of intake: no frame was captured after it).
pub fn measure(
    obj: &Objectives,
    cameras: &[String],
    frames: &[Frame],
    answers: &[Answer],
    intake_end_ms: u64,
) -> SloBurn {
    let fresh_ms = obj.fresh_within.as_millis() as u64;
    let window_ms = (obj.window.as_millis() as u64).max(1);
    // The earliest `ok` answer of each frame.
    let mut answered: HashMap<(&str, u64), u64> = HashMap::new();
    for a in answers.iter().filter(|a| a.ok) {
        let at = answered.entry((&a.camera, a.seq)).or_insert(a.arrived_ms);
        *at = (*at).min(a.arrived_ms);
    }
    let is_fresh = |f: &Frame| {
        answered
            .get(&(f.camera.as_str(), f.seq))
            .is_some_and(|at| at.saturating_sub(f.capture_ms) <= fresh_ms)
    };
    let mut out = SloBurn {
        window_s: obj.window.as_secs_f64(),
        ..SloBurn::default()
    };
    let mut first_capture = u64::MAX;
    for cam in cameras {
        let mut own: Vec<&Frame> = frames.iter().filter(|f| &f.camera == cam).collect();
        own.sort_by_key(|f| f.capture_ms);
        // A camera never answered in time is bad from the first frame it published (or,
        // without any frame, it cannot be placed on a grid: one bad window for it).
        let start = own
            .iter()
            .find(|f| is_fresh(f))
            .or(own.first())
            .map(|f| f.capture_ms);
        let Some(start) = start else {
            out.camera_windows += 1;
            out.bad_windows += 1;
            *out.bad_by_camera.entry(cam.clone()).or_default() += 1;
            continue;
        };
        first_capture = first_capture.min(start);
        let mut w = start;
        while w + window_ms <= intake_end_ms {
            let inside: Vec<&&Frame> = own
                .iter()
                .filter(|f| f.capture_ms >= w && f.capture_ms < w + window_ms)
                .collect();
            let fresh = inside.iter().filter(|f| is_fresh(f)).count();
            let good = !inside.is_empty() && fresh as f64 >= obj.fresh_share * inside.len() as f64;
            out.camera_windows += 1;
            if !good {
                out.bad_windows += 1;
                *out.bad_by_camera.entry(cam.clone()).or_default() += 1;
            }
            w += window_ms;
        }
    }
    if out.camera_windows > 0 {
        out.availability = Some(1.0 - out.bad_windows as f64 / out.camera_windows as f64);
    }
    let period_ms = obj.period.as_millis() as f64;
    let allowed_bad_ms = (1.0 - obj.availability) * cameras.len() as f64 * period_ms;
    if allowed_bad_ms > 0.0 {
        out.availability_budget_burned = (out.bad_windows * window_ms) as f64 / allowed_bad_ms;
    }
    let bound_ms = obj.latency_bound.as_secs_f64() * 1000.0;
    for a in answers.iter().filter(|a| a.ok) {
        out.records += 1;
        if a.end_to_end_ms > bound_ms {
            out.late_records += 1;
        }
    }
    let span_ms = intake_end_ms.saturating_sub(first_capture) as f64;
    if out.records > 0 && span_ms > 0.0 && first_capture != u64::MAX {
        let records_per_period = out.records as f64 / span_ms * period_ms;
        let allowed_late = (1.0 - obj.latency_share) * records_per_period;
        if allowed_late > 0.0 {
            out.latency_budget_burned = out.late_records as f64 / allowed_late;
        }
    }
    out
}

impl SloBurn {
    /// One line: what share of each 30-day budget the run burned.
    pub fn summary(&self) -> String {
        format!(
            "error budget burned: availability {:.3} % ({} of {} camera-windows bad), latency \
             {:.3} % ({} of {} records late)",
            self.availability_budget_burned * 100.0,
            self.bad_windows,
            self.camera_windows,
            self.latency_budget_burned * 100.0,
            self.late_records,
            self.records
        )
    }

    /// The report's Markdown section.
    pub fn to_markdown(&self, obj: &Objectives) -> String {
        let pct = |x: f64| format!("{:.3} %", x * 100.0);
        let bad: Vec<String> = self
            .bad_by_camera
            .iter()
            .map(|(c, n)| format!("`{c}` {n}"))
            .collect();
        format!(
            "## Objectives: error budget burned\n\n\
             - Detection availability (objective {avail} of camera-time; camera-windows of \
             {win} s, good when frames were published and ≥ {share} of them answered within \
             {fresh} s): {good} of {all} windows good ({measured}); bad windows by camera: \
             {bad}. Bad camera-time = **{burn_a}** of the {days}-day budget of these cameras.\n\
             - End-to-end latency (objective {lshare} of records within {bound} s): {late} of \
             {records} records late = **{burn_l}** of the {days}-day budget at this run's \
             record rate.\n\n",
            avail = pct(obj.availability),
            win = self.window_s,
            share = pct(obj.fresh_share),
            fresh = obj.fresh_within.as_secs_f64(),
            good = self.camera_windows - self.bad_windows,
            all = self.camera_windows,
            measured = self.availability.map_or("no window".into(), pct),
            bad = if bad.is_empty() {
                "none".into()
            } else {
                bad.join(", ")
            },
            burn_a = pct(self.availability_budget_burned),
            days = obj.period.as_secs() / 86_400,
            lshare = pct(obj.latency_share),
            bound = obj.latency_bound.as_secs_f64(),
            late = self.late_records,
            records = self.records,
            burn_l = pct(self.latency_budget_burned),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(cam: &str, from_ms: u64, n: u64, every_ms: u64) -> Vec<Frame> {
        (0..n)
            .map(|i| Frame {
                camera: cam.into(),
                seq: i,
                capture_ms: from_ms + i * every_ms,
            })
            .collect()
    }

    fn answer(f: &Frame, after_ms: u64, e2e: f64) -> Answer {
        Answer {
            camera: f.camera.clone(),
            seq: f.seq,
            arrived_ms: f.capture_ms + after_ms,
            ok: true,
            end_to_end_ms: e2e,
        }
    }

    #[test]
    fn a_healthy_run_burns_nothing() {
        let fs = frames("a", 1_000, 300, 200); // 60 s at 5 fps
        let ans: Vec<Answer> = fs.iter().map(|f| answer(f, 300, 250.0)).collect();
        let b = measure(&Objectives::default(), &["a".into()], &fs, &ans, 61_000);
        // Grid from 1 s to 61 s: six whole 10-s windows.
        assert_eq!((b.camera_windows, b.bad_windows), (6, 0));
        assert_eq!(b.availability, Some(1.0));
        assert_eq!(b.availability_budget_burned, 0.0);
        assert_eq!((b.records, b.late_records), (300, 0));
        assert_eq!(b.latency_budget_burned, 0.0);
    }

    #[test]
    fn an_outage_burns_its_camera_time_and_late_records_their_share() {
        let fs = frames("a", 0, 300, 200);
        // Frames captured from 20 s to 30 s are answered 8 s late (a stalled worker).
        let ans: Vec<Answer> = fs
            .iter()
            .map(|f| {
                if (20_000..30_000).contains(&f.capture_ms) {
                    answer(f, 8_000, 8_000.0)
                } else {
                    answer(f, 300, 250.0)
                }
            })
            .collect();
        let obj = Objectives::default();
        let b = measure(&obj, &["a".into(), "b".into()], &fs, &ans, 60_000);
        // Camera a: windows 0–10, …, 50–60: window 20–30 bad. Camera b never published: one
        // bad window.
        assert_eq!((b.camera_windows, b.bad_windows), (7, 2));
        assert_eq!(b.bad_by_camera.get("a"), Some(&1));
        assert_eq!(b.bad_by_camera.get("b"), Some(&1));
        // 20 s bad of the allowed 0.1 % × 2 cameras × 30 days.
        let allowed = 0.001 * 2.0 * 30.0 * 86_400_000.0;
        assert!((b.availability_budget_burned - 20_000.0 / allowed).abs() < 1e-12);
        assert_eq!(b.late_records, 50);
        // 300 records in 60 s → 1 % of a month's records at that rate is the budget.
        let allowed_late = 0.01 * 300.0 / 60_000.0 * 30.0 * 86_400_000.0;
        assert!((b.latency_budget_burned - 50.0 / allowed_late).abs() < 1e-12);
        assert!(b.to_markdown(&obj).contains("`a` 1, `b` 1"));
    }

    #[test]
    fn skipped_records_do_not_answer_and_lost_frames_make_a_window_bad() {
        let fs = frames("a", 0, 100, 200); // 20 s
        let mut ans: Vec<Answer> = fs.iter().map(|f| answer(f, 100, 100.0)).collect();
        // Window 10–20 s: one frame skipped (2 % of its 50 frames > the 1 % allowed).
        ans[60].ok = false;
        let b = measure(&Objectives::default(), &["a".into()], &fs, &ans, 20_000);
        assert_eq!((b.camera_windows, b.bad_windows), (2, 1));
        // A window after the camera's last frame, before the end of intake, is bad.
        let b = measure(&Objectives::default(), &["a".into()], &fs, &ans, 30_000);
        assert_eq!((b.camera_windows, b.bad_windows), (3, 2));
        // The earliest `ok` answer counts: a late duplicate does not spoil a fresh one.
        ans[60].ok = true;
        ans.push(answer(&fs[60], 9_000, 100.0));
        let b = measure(&Objectives::default(), &["a".into()], &fs, &ans, 20_000);
        assert_eq!(b.bad_windows, 0);
    }
}
