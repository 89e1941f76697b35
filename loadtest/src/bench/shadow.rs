//! `panoptes-bench-shadow`: what a shadow rollout costs the primary detections.
//!
//! A shadow (`panoptes models shadow`, `docs/models.md`) infers a sample of frames with a
//! candidate on a low-priority thread of the same worker. Its promise is that the primary's
//! latency does not move. This benchmark measures that promise on real processes ([`run`]):
//! the development broker, `redis-server`, one worker with the reference detector from a model
//! repository, following its group's rollout record, and simulator scenes produced straight
//! into the frames topic at a steady rate (half the worker's capacity by default).
//!
//! The run alternates phases with the shadow **off** and **on** (the record's `shadow` set and
//! cleared, as the operator API does), starting with off, so that slow drifts of a shared
//! machine fall on both conditions alike. Each phase's first seconds are left out (the shadow
//! loading or unloading its model). The primary's end-to-end latency (capture → publish, from
//! the detection records) is pooled per condition.
//!
//! Then, with the shadow off, blue-green **swaps** ([`Swaps`]): the record's active version
//! alternates between two copies of the model, each swap after a steady stretch; the p99 of
//! the records captured from each request until 2 s after the worker reported the switch is
//! compared with the p99 of the steady stretches (target: at most [`SWAP_TARGET`] times).
//!
//! Figure of merit: `p50 off / p50 on` ≥ [`RATIO_TARGET`] (1.0 = unchanged, 0.95 = the shadow
//! made the typical frame 5 % slower). The p99 and mean ratios are reported beside it; the
//! checker must show every frame answered once and in order, and the shadow must have inferred
//! frames (a shadow that did nothing would pass trivially).

pub mod run;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::scaffold::{self, BenchReport, RunInfo, Table};
use super::sys::MachineInfo;

/// The primary's p50 with the shadow off over its p50 with the shadow on must reach this.
pub const RATIO_TARGET: f64 = 0.95;

/// The p99 during swaps over the steady p99 must stay at or under this.
pub const SWAP_TARGET: f64 = 1.5;

/// Blue-green swaps under the same load (shadow off).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Swaps {
    /// Swaps done.
    pub swaps: usize,
    /// Milliseconds from each record write to the worker's swap metric moving.
    pub switch_ms: Vec<u64>,
    /// Records captured in the steady stretches before each swap.
    pub steady: Latency,
    /// Records captured from each request until 2 s after its switch.
    pub during: Latency,
}

impl Swaps {
    /// `during.p99 / steady.p99`.
    pub fn p99_ratio(&self) -> f64 {
        self.during.p99_ms / self.steady.p99_ms
    }
}

/// One phase as run: whether the shadow was on, and the capture-time window measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    /// Shadow on in this phase.
    pub shadow: bool,
    /// First capture time measured (µs since the epoch), after the phase's settle time.
    pub from_us: i64,
    /// End of the phase (exclusive).
    pub to_us: i64,
}

/// Latency figures of a set of records.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Records measured.
    pub records: usize,
    /// Median end-to-end latency, ms.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank), ms.
    pub p99_ms: f64,
    /// Mean, ms.
    pub mean_ms: f64,
}

impl Latency {
    /// The figures of `ms` (any order); `None` if empty.
    pub fn of(ms: &[f64]) -> Option<Self> {
        let mut v = ms.to_vec();
        v.sort_by(f64::total_cmp);
        Some(Self {
            records: v.len(),
            p50_ms: scaffold::nearest_rank(&v, 0.5)?,
            p99_ms: scaffold::nearest_rank(&v, 0.99)?,
            mean_ms: v.iter().sum::<f64>() / v.len() as f64,
        })
    }
}

/// One phase's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseResult {
    /// The phase.
    pub phase: Phase,
    /// The primary's latency over the records captured in it.
    pub latency: Latency,
    /// Share of the phase the primary spent in forward passes (the worker's
    /// `panoptes_worker_stage_latency_seconds_sum{stage="inference"}` over the phase): its
    /// load, 1.0 = saturated.
    pub primary_busy: f64,
}

/// The primary's mean busy share over the phases with the shadow `on` or off.
pub fn mean_busy(phases: &[PhaseResult], on: bool) -> f64 {
    let busy: Vec<f64> = phases
        .iter()
        .filter(|p| p.phase.shadow == on)
        .map(|p| p.primary_busy)
        .collect();
    busy.iter().sum::<f64>() / busy.len().max(1) as f64
}

/// `(phase index, latency ms)` of each record (capture time, publish time, µs) that falls in
/// a phase's measured window; records outside every window are left out.
pub fn assign(phases: &[Phase], records: &[(i64, i64)]) -> Vec<(usize, f64)> {
    records
        .iter()
        .filter_map(|&(capture, published)| {
            let i = phases
                .iter()
                .position(|p| (p.from_us..p.to_us).contains(&capture))?;
            Some((i, (published - capture) as f64 / 1000.0))
        })
        .collect()
}

/// The setting of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    /// Cameras (one frames partition each).
    pub cameras: u32,
    /// Frames per second per camera.
    pub fps: u32,
    /// Frame size.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// The shadow's share of frames, percent.
    pub percent: u8,
    /// Seconds per phase.
    pub phase_s: u64,
    /// Seconds left out at the start of each phase.
    pub settle_s: u64,
    /// The worker's libtorch intra-op threads (the shadow runs one more, at nice 10).
    pub intra_op_threads: usize,
}

/// What the shadow itself did over the run (worker metrics at the end).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShadowWork {
    /// Frames it inferred (`panoptes_worker_shadow_frames_total{result="inferred"}`).
    pub inferred: f64,
    /// Frames it shed under load (`result="shed"`).
    pub shed: f64,
    /// Records on the shadow topic.
    pub records: usize,
    /// Agreement per class of the last shadow phase, read before it ended.
    pub agreement: BTreeMap<String, f64>,
}

/// The checker's verdict on the primary's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounting {
    /// Frames produced.
    pub frames: u64,
    /// Frames with no record.
    pub lost: u64,
    /// Frames with more than one.
    pub duplicated: u64,
    /// Records out of per-camera order.
    pub reordered: u64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct ShadowReport {
    /// The run.
    pub run: RunInfo,
    /// The machine.
    pub machine: MachineInfo,
    /// The setting.
    pub setting: Setting,
    /// Every phase, in order.
    pub phases: Vec<PhaseResult>,
    /// Pooled over the phases with the shadow off.
    pub off: Latency,
    /// Pooled over the phases with the shadow on.
    pub on: Latency,
    /// The shadow's work.
    pub shadow: ShadowWork,
    /// The checker.
    pub accounting: Accounting,
    /// Blue-green swaps (absent with `--swaps 0`).
    pub swaps: Option<Swaps>,
}

/// Latency ratios `off / on` (1.0 = unchanged; lower = the shadow slowed the primary).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratios {
    /// Of the medians: the figure of merit.
    pub p50: f64,
    /// Of the 99th percentiles.
    pub p99: f64,
    /// Of the means.
    pub mean: f64,
}

impl ShadowReport {
    /// `off / on` of each figure.
    pub fn ratios(&self) -> Ratios {
        Ratios {
            p50: self.off.p50_ms / self.on.p50_ms,
            p99: self.off.p99_ms / self.on.p99_ms,
            mean: self.off.mean_ms / self.on.mean_ms,
        }
    }

    /// The target met: the p50 ratio, a clean checker, and a shadow that did work.
    pub fn met(&self) -> bool {
        let a = &self.accounting;
        self.ratios().p50 >= RATIO_TARGET
            && self
                .swaps
                .as_ref()
                .is_none_or(|w| w.p99_ratio() <= SWAP_TARGET)
            && a.lost == 0
            && a.duplicated == 0
            && a.reordered == 0
            && self.shadow.inferred > 0.0
    }
}

fn latency_cells(l: &Latency) -> [String; 4] {
    [
        l.records.to_string(),
        format!("{:.1}", l.p50_ms),
        format!("{:.1}", l.p99_ms),
        format!("{:.1}", l.mean_ms),
    ]
}

impl BenchReport for ShadowReport {
    const STEM: &'static str = "shadow-bench";

    fn summary_table(&self) -> String {
        let s = &self.setting;
        let mut t = Table::new(&[
            "primary end-to-end latency",
            ">records",
            ">p50 ms",
            ">p99 ms",
            ">mean ms",
        ]);
        let [n, p50, p99, mean] = latency_cells(&self.off);
        t.row(&["shadow off".to_string(), n, p50, p99, mean]);
        let [n, p50, p99, mean] = latency_cells(&self.on);
        t.row(&[
            format!("shadow on ({} % of frames)", s.percent),
            n,
            p50,
            p99,
            mean,
        ]);
        let r = self.ratios();
        t.row(&[
            "off / on".to_string(),
            String::new(),
            format!("**{:.3}**", r.p50),
            format!("{:.3}", r.p99),
            format!("{:.3}", r.mean),
        ]);
        let mut swaps = String::new();
        if let Some(w) = &self.swaps {
            let mut t = Table::new(&[
                "primary, blue-green swaps",
                ">records",
                ">p50 ms",
                ">p99 ms",
                ">mean ms",
            ]);
            let [n, p50, p99, mean] = latency_cells(&w.steady);
            t.row(&["steady, before each swap".to_string(), n, p50, p99, mean]);
            let [n, p50, p99, mean] = latency_cells(&w.during);
            t.row(&["during the swaps".to_string(), n, p50, p99, mean]);
            let r = w.p99_ratio();
            let verdict = if r <= SWAP_TARGET { "met" } else { "missed" };
            swaps = format!(
                "\n{}\n{} swaps, switched {:?} ms after the request; p99 during / steady \
                 **{r:.2}** (target ≤ {SWAP_TARGET}: {verdict}).\n",
                t.finish(),
                w.swaps,
                w.switch_ms,
            );
        }
        let verdict = if self.met() { "met" } else { "missed" };
        let a = &self.accounting;
        format!(
            "{}\nTarget: p50 off / on {} ({verdict}); shadow inferred {} frames, shed {}, \
             {} shadow records; checker: {} frames, {} lost, {} duplicated, {} reordered.\n{swaps}",
            t.finish(),
            scaffold::Target {
                bound: RATIO_TARGET,
                higher_is_better: true
            }
            .describe(),
            self.shadow.inferred,
            self.shadow.shed,
            self.shadow.records,
            a.frames,
            a.lost,
            a.duplicated,
            a.reordered,
        )
    }

    fn to_markdown(&self) -> String {
        let s = &self.setting;
        let mut md = scaffold::markdown_header(
            "Shadow rollouts: the primary's latency with and without a shadow",
            &self.run,
            &self.machine,
            "worker on the CPU",
        );
        md.push_str(&format!(
            "- Setting: {} cameras × {} fps ({}×{} simulator scenes), one worker (reference \
             detector, {} intra-op thread(s)); the shadow is the same model under another \
             version on {} % of frames; {} phases of {} s alternating off/on, the first {} s of \
             each left out\n- Primary load (share of time in forward passes): {:.0} % with the \
             shadow off, {:.0} % with it on\n- Shadow agreement per class (last shadow \
             phase): {}\n\n",
            s.cameras,
            s.fps,
            s.width,
            s.height,
            s.intra_op_threads,
            s.percent,
            self.phases.len(),
            s.phase_s,
            s.settle_s,
            mean_busy(&self.phases, false) * 100.0,
            mean_busy(&self.phases, true) * 100.0,
            serde_json::to_string(&self.shadow.agreement).unwrap_or_default(),
        ));
        let mut t = Table::new(&[
            "phase",
            "shadow",
            ">records",
            ">p50 ms",
            ">p99 ms",
            ">mean ms",
            ">primary busy",
        ]);
        for (i, p) in self.phases.iter().enumerate() {
            let [n, p50, p99, mean] = latency_cells(&p.latency);
            let on = if p.phase.shadow { "on" } else { "off" };
            let busy = format!("{:.0} %", p.primary_busy * 100.0);
            t.row(&[(i + 1).to_string(), on.to_string(), n, p50, p99, mean, busy]);
        }
        md.push_str(&scaffold::result_sections(
            &self.summary_table(),
            &t.finish(),
        ));
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(shadow: bool, from_us: i64, to_us: i64) -> Phase {
        Phase {
            shadow,
            from_us,
            to_us,
        }
    }

    #[test]
    fn records_fall_in_the_window_of_their_capture_time() {
        let phases = [phase(false, 1_000, 2_000), phase(true, 3_000, 4_000)];
        let records = [
            (500, 900),
            (1_000, 3_000),
            (1_999, 2_500),
            (2_500, 2_600),
            (3_500, 5_500),
        ];
        assert_eq!(
            assign(&phases, &records),
            vec![(0, 2.0), (0, 0.501), (1, 2.0)]
        );
    }

    #[test]
    fn latency_figures() {
        assert_eq!(Latency::of(&[]), None);
        let l = Latency::of(&[30.0, 10.0, 20.0, 40.0]).unwrap();
        assert_eq!(
            (l.records, l.p50_ms, l.p99_ms, l.mean_ms),
            (4, 20.0, 40.0, 25.0)
        );
    }

    /// The committed report is consistent with itself: its pooled figures are those of its
    /// phases' conditions, phases alternate starting with off, and it says whether it met
    /// the target by the rule [`ShadowReport::met`] applies.
    #[test]
    fn the_committed_report_is_consistent() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/reports/shadow-bench.json");
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect(path)).expect("json");
        let phases: Vec<PhaseResult> = serde_json::from_value(v["phases"].clone()).unwrap();
        assert!(phases.len() >= 2);
        for (i, p) in phases.iter().enumerate() {
            assert_eq!(p.phase.shadow, i % 2 == 1, "phase {i}");
            assert!(p.latency.records > 0, "phase {i}");
        }
        let off: Latency = serde_json::from_value(v["off"].clone()).unwrap();
        let on: Latency = serde_json::from_value(v["on"].clone()).unwrap();
        let count = |shadow: bool| -> usize {
            let of = phases.iter().filter(|p| p.phase.shadow == shadow);
            of.map(|p| p.latency.records).sum()
        };
        assert_eq!((off.records, on.records), (count(false), count(true)));
        let md = std::fs::read_to_string(path.replace(".json", ".md")).expect("markdown");
        let ratio = off.p50_ms / on.p50_ms;
        assert!(md.contains(&format!("**{ratio:.3}**")), "{md}");
        let accounting: Accounting = serde_json::from_value(v["accounting"].clone()).unwrap();
        let inferred = v["shadow"]["inferred"].as_f64().unwrap();
        let swaps: Option<Swaps> = serde_json::from_value(v["swaps"].clone()).unwrap();
        if let Some(w) = &swaps {
            assert_eq!(w.switch_ms.len(), w.swaps);
            assert!(md.contains(&format!("**{:.2}**", w.p99_ratio())), "{md}");
        }
        let met = ratio >= RATIO_TARGET
            && swaps.as_ref().is_none_or(|w| w.p99_ratio() <= SWAP_TARGET)
            && accounting.lost + accounting.duplicated + accounting.reordered == 0
            && inferred > 0.0;
        let verdict = if met { "(met)" } else { "(missed)" };
        assert!(md.contains(verdict), "{md}");
    }
}
