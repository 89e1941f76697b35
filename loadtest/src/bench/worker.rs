//! The worker benchmark's pure parts (binary `panoptes-bench-worker`, see
//! `docs/benchmarks.md`): parameters, results, percentiles, machine facts and the report;
//! [`run`] starts the processes.
//!
//! The worker is compared with a tight libtorch forward loop over pre-decoded, pre-letterboxed
//! tensors, same model, same batch size, same intra-op threads (design brief, "Performance is
//! measured as ratios on one machine"). The figure of merit is images per second; the result
//! is worker over baseline.

pub mod run;

use std::fmt::Write as _;

use serde::Serialize;

use super::scaffold::{
    BenchReport, RunInfo, Table, Target, markdown_header, nearest_rank, result_sections,
};
use super::sys;

/// Worker throughput over baseline throughput the worker should stay at or above.
pub const TARGET_RATIO: f64 = 0.85;

/// [`TARGET_RATIO`] as a [`Target`]: higher is better.
pub const TARGET: Target = Target {
    bound: TARGET_RATIO,
    higher_is_better: true,
};

/// What to run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerBenchParams {
    /// Model name (`yolov8n-like` or `reference-detector`).
    pub model: String,
    /// Batch sizes (`max_batch` of the worker, batch of the baseline).
    pub batch_sizes: Vec<usize>,
    /// libtorch intra-op threads, both sides.
    pub intra_op_threads: usize,
    /// Worker decode threads.
    pub decode_threads: usize,
    /// Worker `max_wait`, milliseconds.
    pub max_wait_ms: u64,
    /// Images timed per throughput point (both sides), after the warm-up.
    pub images: usize,
    /// Frames produced per latency point.
    pub latency_frames: usize,
    /// Batch size (`max_batch`) of the worker in the latency phases.
    pub latency_batch: usize,
    /// Frame size of the synthetic JPEGs.
    pub frame_width: u32,
    /// Frame height of the synthetic JPEGs.
    pub frame_height: u32,
    /// Device of both sides (`cpu`, `cuda:N`).
    pub device: String,
    /// `partition_queue` of the throughput and latency workers.
    pub partition_queue: usize,
    /// Frames of the consume-rate phase (0: skipped).
    pub consume_frames: usize,
    /// Whether the development broker answers waiting fetches when records are produced
    /// (`panoptes-devbroker --prompt-fetch`; without it every record waits 0–50 ms for the
    /// mock's fetch cycle: docs/benchmarks.md, "Consume rate and the latency sawtooth").
    pub prompt_fetch: bool,
}

/// The consume-rate phase: the worker with a no-op model against a bare consumer, same frames.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsumePoint {
    /// Frames in the backlog (one per record batch).
    pub frames: usize,
    /// Mean JPEG size, bytes.
    pub frame_bytes: usize,
    /// Frames the bare consumer read in its window (first to last).
    pub bare_frames: usize,
    /// The bare consumer's window, seconds.
    pub bare_s: f64,
    /// Records the worker published in its window (first to last).
    pub worker_frames: usize,
    /// The worker's window, seconds.
    pub worker_s: f64,
    /// Mean batch the worker ran.
    pub worker_mean_batch: f64,
    /// Where the worker's time went, per record (`capture` is the produce time of the
    /// backlog, so `end_to_end` includes waiting in it).
    pub worker_stage_mean_ms: StageMeans,
}

impl ConsumePoint {
    /// Bare consumer frames per second.
    pub fn bare_fps(&self) -> f64 {
        rate(self.bare_frames, self.bare_s)
    }
    /// Worker frames per second.
    pub fn worker_fps(&self) -> f64 {
        rate(self.worker_frames, self.worker_s)
    }
    /// Worker over bare consumer.
    pub fn ratio(&self) -> f64 {
        self.worker_fps() / self.bare_fps()
    }
}

/// Worker over bare consumer the consume phase should reach.
pub const CONSUME_TARGET: f64 = 0.8;

/// One throughput point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThroughputPoint {
    /// Batch size.
    pub batch: usize,
    /// Baseline images timed.
    pub baseline_images: usize,
    /// Baseline seconds.
    pub baseline_s: f64,
    /// Worker records (status ok) in the window.
    pub worker_images: usize,
    /// Worker window, seconds (first record after warm-up to the last).
    pub worker_s: f64,
    /// Mean batch size the worker ran in the window (from `panoptes_worker_batch_size`).
    pub worker_mean_batch: f64,
}

impl ThroughputPoint {
    /// Baseline images per second.
    pub fn baseline_ips(&self) -> f64 {
        rate(self.baseline_images, self.baseline_s)
    }
    /// Worker images per second.
    pub fn worker_ips(&self) -> f64 {
        rate(self.worker_images, self.worker_s)
    }
    /// Worker over baseline.
    pub fn ratio(&self) -> f64 {
        self.worker_ips() / self.baseline_ips()
    }
}

fn rate(n: usize, s: f64) -> f64 {
    if s > 0.0 { n as f64 / s } else { 0.0 }
}

/// One latency point: frames at a steady rate, end-to-end latency from the detection records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyPoint {
    /// Share of the measured worker throughput the frames were produced at (0.5, 1.0).
    pub load: f64,
    /// Frames per second produced.
    pub rate_fps: f64,
    /// Frames produced (and records received).
    pub frames: usize,
    /// `latency.end_to_end_ms` of every record received, sorted.
    pub end_to_end_ms: Vec<f64>,
    /// Mean batch size in the phase.
    pub mean_batch: f64,
    /// Mean of each stage the records report (`latency.*_ms`): where the time goes.
    pub stage_mean_ms: StageMeans,
    /// `latency.queue_ms` (broker timestamp → worker dequeues) of every record, in capture
    /// order: a periodic pattern here is the broker's fetch cycle.
    pub queue_ms: Vec<f64>,
}

/// Means of the stage latencies of a phase's records, milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StageMeans {
    /// Broker timestamp → worker dequeues.
    pub queue: f64,
    /// JPEG decode and letterbox.
    pub decode: f64,
    /// Waiting for the batch to fill or its timer.
    pub batch_wait: f64,
    /// The forward pass of the frame's batch.
    pub inference: f64,
    /// NMS and box scaling.
    pub postprocess: f64,
    /// Capture → publish.
    pub end_to_end: f64,
}

impl LatencyPoint {
    /// The `q`-quantile of the end-to-end latency, ms.
    pub fn quantile(&self, q: f64) -> f64 {
        quantile_sorted(&self.end_to_end_ms, q)
    }
}

/// Nearest-rank quantile of sorted values (`NaN` if empty).
pub fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    nearest_rank(sorted, q).unwrap_or(f64::NAN)
}

/// Facts about the machine: the shared ones plus the device the models ran on.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerMachine {
    /// CPUs, CPU model, kernel, load (shared readers in [`sys`]).
    #[serde(flatten)]
    pub host: sys::MachineInfo,
    /// Device the models ran on.
    pub device: String,
}

/// Collects [`WorkerMachine`] for `device` (`cpu`, `cuda:N`); unreadable facts are
/// `"unknown"`.
pub fn machine_info(device: &str) -> WorkerMachine {
    WorkerMachine {
        host: sys::machine_info(),
        device: device.into(),
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerBenchReport {
    /// Date, command line and build profile.
    #[serde(flatten)]
    pub run: RunInfo,
    /// Wall seconds the whole run took.
    pub duration_s: f64,
    /// Machine facts.
    pub machine: WorkerMachine,
    /// Parameters.
    pub params: WorkerBenchParams,
    /// Throughput per batch size.
    pub throughput: Vec<ThroughputPoint>,
    /// Latency at half and full load.
    pub latency: Vec<LatencyPoint>,
    /// The consume-rate phase, if run.
    pub consume: Option<ConsumePoint>,
    /// Target of worker / baseline.
    pub target_ratio: f64,
}

impl WorkerBenchReport {
    /// Worker throughput at the largest batch over that at the smallest (dynamic batching gain).
    pub fn batching_gain(&self) -> Option<(usize, usize, f64)> {
        let first = self.throughput.first()?;
        let last = self.throughput.last()?;
        (first.batch != last.batch).then(|| {
            (
                first.batch,
                last.batch,
                last.worker_ips() / first.worker_ips(),
            )
        })
    }

    /// Whether every batch size meets the target ratio.
    pub fn within_target(&self) -> bool {
        let target = Target {
            bound: self.target_ratio,
            ..TARGET
        };
        self.throughput.iter().all(|p| target.met_by(p.ratio()))
    }
}

impl BenchReport for WorkerBenchReport {
    const STEM: &'static str = "worker-bench";

    /// The result tables (Markdown).
    fn summary_table(&self) -> String {
        let head = format!(
            "{} ({} intra-op threads, {})",
            self.params.model, self.params.intra_op_threads, self.params.device
        );
        let mut table = Table::new(&[
            &head,
            ">baseline img/s",
            ">worker img/s",
            ">worker / baseline",
            ">worker mean batch",
        ]);
        for p in &self.throughput {
            table.row(&[
                format!("batch {}", p.batch),
                format!("{:.2}", p.baseline_ips()),
                format!("{:.2}", p.worker_ips()),
                format!("**{:.2}**", p.ratio()),
                format!("{:.1}", p.worker_mean_batch),
            ]);
        }
        let mut s = table.finish();
        if let Some((a, b, g)) = self.batching_gain() {
            let _ = writeln!(
                s,
                "\nDynamic batching gain (worker img/s at batch {b} / batch {a}): **{g:.2}×**; target worker / baseline {}: {}",
                Target {
                    bound: self.target_ratio,
                    ..TARGET
                }
                .describe(),
                if self.within_target() {
                    "met at every batch size"
                } else {
                    "NOT met at every batch size"
                }
            );
        }
        if !self.latency.is_empty() {
            s.push('\n');
            s.push_str(&self.latency_table());
        }
        if let Some(c) = &self.consume {
            let mut table = Table::new(&[
                "consume rate (backlog of one-frame record batches)",
                ">frames/s",
                ">frames",
                ">seconds",
            ]);
            table.row(&[
                "bare librdkafka consumer (defaults)".into(),
                format!("{:.0}", c.bare_fps()),
                c.bare_frames.to_string(),
                format!("{:.2}", c.bare_s),
            ]);
            table.row(&[
                format!(
                    "panoptes-worker, no-op model (mean batch {:.1})",
                    c.worker_mean_batch
                ),
                format!("{:.0}", c.worker_fps()),
                c.worker_frames.to_string(),
                format!("{:.2}", c.worker_s),
            ]);
            let _ = write!(
                s,
                "\n{}\nConsume rate worker / bare consumer: **{:.2}** (target ≥ {CONSUME_TARGET}; {} frames of {} bytes)\n",
                table.finish(),
                c.ratio(),
                c.frames,
                c.frame_bytes
            );
        }
        s
    }

    fn to_markdown(&self) -> String {
        let p = &self.params;
        let mut s = markdown_header(
            "Worker benchmark: panoptes-worker vs a bare libtorch forward loop",
            &self.run,
            &self.machine.host,
            &format!("device {}", self.machine.device),
        );
        let _ = writeln!(s, "- Run took {:.0} s", self.duration_s);
        let _ = writeln!(
            s,
            "- Parameters: model {}, batch sizes {:?}, intra_op_threads {}, decode_threads {}, max_wait {} ms, {} images per throughput point, {} frames per latency point at max_batch {}, synthetic {}x{} JPEG frames, staleness lossless\n",
            p.model,
            p.batch_sizes,
            p.intra_op_threads,
            p.decode_threads,
            p.max_wait_ms,
            p.images,
            p.latency_frames,
            p.latency_batch,
            p.frame_width,
            p.frame_height
        );
        s.push_str(&result_sections(
            &self.summary_table(),
            &self.samples_table(),
        ));
        s
    }
}

impl WorkerBenchReport {
    fn latency_table(&self) -> String {
        let head = format!(
            "end-to-end latency (capture → publish), max_batch {}, {}",
            self.params.latency_batch,
            if self.params.prompt_fetch {
                "prompt fetch"
            } else {
                "mock fetch wait"
            }
        );
        let mut table = Table::new(&[
            &head,
            ">rate fps",
            ">frames",
            ">p50 ms",
            ">p99 ms",
            ">max ms",
            ">mean batch",
            ">queue ms",
            ">decode ms",
            ">batch wait ms",
            ">inference ms",
        ]);
        for l in &self.latency {
            table.row(&[
                format!("{:.0} % load", l.load * 100.0),
                format!("{:.2}", l.rate_fps),
                l.frames.to_string(),
                format!("{:.0}", l.quantile(0.5)),
                format!("{:.0}", l.quantile(0.99)),
                format!("{:.0}", l.quantile(1.0)),
                format!("{:.1}", l.mean_batch),
                format!("{:.1}", l.stage_mean_ms.queue),
                format!("{:.1}", l.stage_mean_ms.decode),
                format!("{:.1}", l.stage_mean_ms.batch_wait),
                format!("{:.1}", l.stage_mean_ms.inference),
            ]);
        }
        table.finish()
    }

    /// Baseline and worker images and seconds at every batch size.
    fn samples_table(&self) -> String {
        let mut table = Table::new(&[
            ">batch",
            ">baseline images",
            ">baseline s",
            ">worker images",
            ">worker s",
        ]);
        for x in &self.throughput {
            table.row(&[
                x.batch.to_string(),
                x.baseline_images.to_string(),
                format!("{:.2}", x.baseline_s),
                x.worker_images.to_string(),
                format!("{:.2}", x.worker_s),
            ]);
        }
        table.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile_sorted(&v, 0.5), 50.0);
        assert_eq!(quantile_sorted(&v, 0.99), 99.0);
        assert_eq!(quantile_sorted(&v, 1.0), 100.0);
        assert_eq!(quantile_sorted(&[7.0], 0.99), 7.0);
        assert!(quantile_sorted(&[], 0.5).is_nan());
    }

    #[test]
    fn ratio_and_gain() {
        let point = |batch, worker_s| ThroughputPoint {
            batch,
            baseline_images: 40,
            baseline_s: 4.0,
            worker_images: 40,
            worker_s,
            worker_mean_batch: batch as f64,
        };
        let report = WorkerBenchReport {
            run: RunInfo {
                date: sys::utc_timestamp(UNIX_EPOCH),
                command: "x".into(),
                profile: "dev".into(),
            },
            duration_s: 1.0,
            machine: machine_info("cpu"),
            params: WorkerBenchParams {
                model: "m".into(),
                batch_sizes: vec![1, 16],
                intra_op_threads: 2,
                decode_threads: 2,
                max_wait_ms: 20,
                images: 40,
                latency_frames: 10,
                latency_batch: 16,
                frame_width: 640,
                frame_height: 360,
                device: "cpu".into(),
                partition_queue: 256,
                consume_frames: 0,
                prompt_fetch: true,
            },
            throughput: vec![point(1, 5.0), point(16, 4.0)],
            latency: Vec::new(),
            consume: None,
            target_ratio: TARGET_RATIO,
        };
        assert!((report.throughput[0].ratio() - 0.8).abs() < 1e-9);
        assert!(!report.within_target());
        let (a, b, g) = report.batching_gain().expect("two points");
        assert_eq!((a, b), (1, 16));
        assert!((g - 1.25).abs() < 1e-9);
        assert!(
            report
                .to_markdown()
                .contains("| batch 16 | 10.00 | 10.00 | **1.00** |")
        );
        assert_eq!(report.run.date, "1970-01-01T00:00:00Z");
    }
}
