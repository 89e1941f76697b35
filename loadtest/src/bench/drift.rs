//! `panoptes-bench-drift`: what drift per camera costs and whether steady scenes stay quiet.
//!
//! Two parts, one report (`drift-bench.json` / `.md`):
//!
//! 1. **Cost** (in process): the worker's per-frame drift statistics
//!    (`panoptes_workers::drift::ImageStats::compute`) against the JPEG decode the decode
//!    thread does anyway (`panoptes_workers::preprocess::decode_jpeg_into`), on the same
//!    simulator frames, alternating rounds; reported as ns per frame and as the ratio
//!    stats / decode (the target: under [`COST_TARGET`]).
//! 2. **Steady run** (real processes, [`run`]): the camera simulator with steady scenes, an
//!    ingest node, the broker and a worker with the reference detector and drift on; its
//!    `/metrics` read every few seconds for the whole duration (10 minutes by default). The
//!    target: no drift raised (`panoptes_worker_drift_events_total` stays 0) and the highest
//!    PSI seen per camera stays below the raise threshold.

pub mod run;

use serde::Serialize;

use super::scaffold::{self, BenchReport, RunInfo, Table};
use super::sys::MachineInfo;

/// Drift statistics must cost less than this fraction of a JPEG decode.
pub const COST_TARGET: f64 = 0.05;

/// The cost part's result.
#[derive(Debug, Clone, Serialize)]
pub struct Cost {
    /// Frame size.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Frames per round.
    pub frames: usize,
    /// Median ns per frame of the drift statistics, over rounds.
    pub stats_ns: f64,
    /// Median ns per frame of the JPEG decode, over rounds.
    pub decode_ns: f64,
    /// `stats_ns / decode_ns`.
    pub ratio: f64,
    /// `ratio / sample_every` of the default `[drift]` (statistics of one frame in N): the
    /// cost per decoded frame, what [`COST_TARGET`] bounds.
    pub amortized_ratio: f64,
}

/// One camera's steady-run result.
#[derive(Debug, Clone, Serialize)]
pub struct CameraResult {
    /// Camera id.
    pub camera: String,
    /// Highest PSI of any signal seen in any scrape after its reference was built.
    pub max_psi: f64,
    /// The signal of that PSI.
    pub max_signal: String,
    /// Scrapes in which drift was raised for it.
    pub active_scrapes: u64,
}

/// The steady part's result.
#[derive(Debug, Clone, Serialize)]
pub struct Steady {
    /// Seconds the scenes were watched after every reference was built.
    pub watched_s: u64,
    /// Scrapes of `/metrics`.
    pub scrapes: u64,
    /// Drift events (sum of `panoptes_worker_drift_events_total`) at the end.
    pub events: f64,
    /// Samples dropped (`panoptes_worker_drift_samples_dropped_total`) at the end.
    pub dropped: f64,
    /// Per camera.
    pub cameras: Vec<CameraResult>,
    /// The drift configuration the worker ran (TOML-like summary).
    pub drift_config: String,
    /// The raise threshold.
    pub raise_psi: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct DriftReport {
    /// The run.
    pub run: RunInfo,
    /// The machine.
    pub machine: MachineInfo,
    /// Cost part.
    pub cost: Cost,
    /// Steady part (absent with `--cost-only`).
    pub steady: Option<Steady>,
}

impl DriftReport {
    /// Both targets met.
    pub fn met(&self) -> bool {
        self.cost.amortized_ratio < COST_TARGET
            && self
                .steady
                .as_ref()
                .is_none_or(|s| s.events == 0.0 && s.cameras.iter().all(|c| c.active_scrapes == 0))
    }
}

impl BenchReport for DriftReport {
    const STEM: &'static str = "drift-bench";

    fn summary_table(&self) -> String {
        let mut t = Table::new(&["measure", "value", "target"]);
        let c = &self.cost;
        t.row(&[
            format!("drift statistics, {}×{} frame", c.width, c.height),
            format!("{:.0} ns/frame", c.stats_ns),
            String::new(),
        ]);
        t.row(&[
            "JPEG decode, same frames".to_string(),
            format!("{:.0} ns/frame", c.decode_ns),
            String::new(),
        ]);
        t.row(&[
            "statistics / decode".to_string(),
            format!("{:.4}", c.ratio),
            String::new(),
        ]);
        t.row(&[
            "statistics / decode, per decoded frame (default sample_every)".to_string(),
            format!("{:.4}", c.amortized_ratio),
            format!("< {COST_TARGET}"),
        ]);
        if let Some(s) = &self.steady {
            t.row(&[
                format!(
                    "steady scenes, {} cameras, {} s",
                    s.cameras.len(),
                    s.watched_s
                ),
                format!("{} drift events", s.events),
                "0".to_string(),
            ]);
            let worst = s.cameras.iter().map(|c| c.max_psi).fold(0.0, f64::max);
            t.row(&[
                "highest PSI of a steady camera".to_string(),
                format!("{worst:.4}"),
                format!("< {} (raise_psi)", s.raise_psi),
            ]);
        }
        t.finish()
    }

    fn to_markdown(&self) -> String {
        let mut md = scaffold::markdown_header(
            "Drift per camera: cost and steady scenes",
            &self.run,
            &self.machine,
            "worker on the CPU",
        );
        let mut samples = String::new();
        if let Some(s) = &self.steady {
            let mut t = Table::new(&["camera", "highest PSI", "signal", "scrapes with drift"]);
            for c in &s.cameras {
                t.row(&[
                    c.camera.clone(),
                    format!("{:.4}", c.max_psi),
                    c.max_signal.clone(),
                    c.active_scrapes.to_string(),
                ]);
            }
            samples = format!(
                "Worker drift configuration: `{}`; {} scrapes; samples dropped: {}.\n\n{}",
                s.drift_config,
                s.scrapes,
                s.dropped,
                t.finish()
            );
        }
        md.push('\n');
        md.push_str(&scaffold::result_sections(&self.summary_table(), &samples));
        md
    }
}

/// The highest PSI per `(camera, signal)` series in a `/metrics` text:
/// `(camera, signal, value)` for every `panoptes_worker_drift_psi` line.
pub fn psi_series(metrics: &str) -> Vec<(String, String, f64)> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("panoptes_worker_drift_psi{"))
        .filter_map(|rest| {
            let (labels, value) = rest.split_once("} ")?;
            let label = |k: &str| {
                let start = labels.find(&format!("{k}=\""))? + k.len() + 2;
                let end = labels[start..].find('"')? + start;
                Some(labels[start..end].to_string())
            };
            Some((
                label("camera")?,
                label("signal")?,
                value.trim().parse().ok()?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_lines_are_read() {
        let text = "# HELP x\npanoptes_worker_drift_psi{camera=\"cam0\",signal=\"colour\"} 0.012\n\
                    panoptes_worker_drift_active{camera=\"cam0\"} 0\n\
                    panoptes_worker_drift_psi{camera=\"cam1\",signal=\"classes\"} 1.5\n";
        assert_eq!(
            psi_series(text),
            vec![
                ("cam0".into(), "colour".into(), 0.012),
                ("cam1".into(), "classes".into(), 1.5)
            ]
        );
    }
}
