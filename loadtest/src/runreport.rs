//! The report of `panoptes-loadtest run`: what was asked for, the machine, per-stage
//! throughput, latency, resources per process and the checker's accounting, as JSON
//! (`report.json`) and as Markdown for people (`report.md`, charts embedded).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use panoptes_checker::Report;
use panoptes_checker::report::fmt_map;
use panoptes_testkit::sys::MachineInfo;
use serde::{Deserialize, Serialize};

use crate::bench::scaffold::Table;
use crate::timeline::{Histogram, LatencySummary, Mark, ProcessSummary, Sample, Timeline};

/// Label of the mark the run sets when it stops intake.
pub const INTAKE_STOPPED: &str = "intake stopped";
/// Label of the mark the run sets when the checker has settled.
pub const SETTLED: &str = "settled";

/// What was asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunParams {
    /// Simulated cameras (one frames partition each).
    pub cameras: usize,
    /// Frames per second of every camera (source and sampled).
    pub fps: u32,
    /// Source resolution.
    pub resolution: (u32, u32),
    /// Analytic box the ingest nodes scale frames into.
    pub analytic: (u32, u32),
    /// Recording time with intake running (s).
    pub seconds: u64,
    /// Workers.
    pub workers: usize,
    /// Ingest nodes.
    pub ingest_nodes: usize,
    /// Exactly-once (transactions) or at-least-once delivery.
    pub exactly_once: bool,
}

impl RunParams {
    /// A one-line description, e.g. `6 cameras × 5 fps, 640×360, 2 workers, exactly-once`.
    pub fn describe(&self) -> String {
        format!(
            "{} camera{} × {} fps, {}×{}, {} worker{}, {}",
            self.cameras,
            plural(self.cameras),
            self.fps,
            self.resolution.0,
            self.resolution.1,
            self.workers,
            plural(self.workers),
            if self.exactly_once {
                "exactly-once"
            } else {
                "at-least-once"
            }
        )
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// One camera's throughput.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CameraThroughput {
    /// Frame records on the frames topic.
    pub frames: u64,
    /// Detection records (any status).
    pub detections: u64,
    /// `frames / intake_s`.
    pub fps: f64,
    /// What was asked for.
    pub target_fps: u32,
}

/// One stage's rate over the intake window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    /// Records in the intake window.
    pub records: u64,
    /// `records / intake_s`.
    pub mean_per_s: f64,
    /// Lowest one-second rate, leaving out the first 5 s (start-up).
    pub min_per_s: Option<f64>,
    /// Highest one-second rate.
    pub max_per_s: f64,
}

impl Rate {
    fn of(samples: &[&Sample], intake_s: f64, f: impl Fn(&Sample) -> (u64, f64)) -> Self {
        let records = samples.iter().map(|s| f(s).0).sum();
        let steady: Vec<f64> = samples
            .iter()
            .filter(|s| s.t_s > 5.0 && s.window_s > 0.9)
            .map(|s| f(s).1)
            .collect();
        Self {
            records,
            mean_per_s: records as f64 / intake_s.max(1e-3),
            min_per_s: steady.iter().copied().reduce(f64::min),
            max_per_s: samples.iter().map(|s| f(s).1).fold(0.0, f64::max),
        }
    }
}

/// Per-stage throughput.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throughput {
    /// Recording time with intake running (s).
    pub intake_s: f64,
    /// Frames topic (what the ingest nodes published).
    pub frames_in: Rate,
    /// Detections topic, committed (what the workers delivered) during intake.
    pub detections_out: Rate,
    /// Detection records that arrived after intake stopped (the backlog drained).
    pub detections_after_intake: u64,
    /// Time from stopping intake to the checker settling (s).
    pub drain_s: f64,
    /// Per camera.
    pub per_camera: BTreeMap<String, CameraThroughput>,
    /// Detection records by status over the whole recording.
    pub statuses: BTreeMap<String, u64>,
}

/// Whether the run passed, and why not.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// No failures.
    pub pass: bool,
    /// What broke a guarantee.
    pub failures: Vec<String>,
    /// Worth a look, not a failure.
    pub warnings: Vec<String>,
}

impl Verdict {
    /// Fails on loss (frames without a record or dead letter, malformed frames lost), on
    /// duplicates in exactly-once mode (a plain run kills no worker, so no duplicate is
    /// explained), and on reordering (guarantee 1). Warns on duplicates in at-least-once
    /// mode, skips, dead letters, superseded records and frames never seen.
    pub fn of(report: &Report, exactly_once: bool) -> Self {
        let t = &report.total;
        let mut failures = Vec::new();
        let mut warnings = Vec::new();
        if t.frames == 0 {
            failures.push("no frames reached the frames topic".into());
        }
        if t.lost > 0 {
            failures.push(format!(
                "{} frames lost (no detection record, no dead letter)",
                t.lost
            ));
        }
        if report.malformed_lost > 0 {
            failures.push(format!("{} malformed frames lost", report.malformed_lost));
        }
        if t.duplicated > 0 {
            let msg = format!("{} duplicated detection records", t.duplicated);
            if exactly_once {
                failures.push(format!("{msg} in exactly-once mode"));
            } else {
                warnings.push(format!("{msg} (allowed at least once)"));
            }
        }
        if t.reordered > 0 {
            failures.push(format!("{} records out of capture order", t.reordered));
        }
        if t.skipped_total() > 0 {
            warnings.push(format!(
                "{} frames skipped by workers ({})",
                t.skipped_total(),
                fmt_map(&t.skipped)
            ));
        }
        if t.dead_lettered_total() > 0 {
            warnings.push(format!(
                "{} frames dead-lettered ({})",
                t.dead_lettered_total(),
                fmt_map(&t.dead_lettered)
            ));
        }
        if t.superseded > 0 {
            warnings.push(format!(
                "{} records discarded as superseded (epoch rule)",
                t.superseded
            ));
        }
        if t.unknown_frames > 0 {
            warnings.push(format!(
                "{} records for frames the checker never saw",
                t.unknown_frames
            ));
        }
        Self {
            pass: failures.is_empty(),
            failures,
            warnings,
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The command, times, parameters and machine (the report's first keys).
    #[serde(flatten)]
    pub facts: RunFacts,
    /// Per-stage throughput.
    pub throughput: Throughput,
    /// End-to-end latency of `ok` records as the worker measured it (capture → publish).
    pub latency_ms: LatencySummary,
    /// Capture → arrival at a `read_committed` consumer (includes the transaction commit).
    pub delivered_latency_ms: LatencySummary,
    /// Mean of each worker stage of `ok` records (`queue_ms` … `end_to_end_ms`, as in the
    /// records' `latency`).
    pub stage_mean_ms: BTreeMap<String, f64>,
    /// The histogram drawn in `latency-histogram.png`.
    pub latency_histogram: Histogram,
    /// CPU and memory per process during intake.
    pub processes: BTreeMap<String, ProcessSummary>,
    /// Mean whole-machine CPU busy during intake (% of all cores).
    pub machine_cpu_mean_pct: Option<f64>,
    /// Highest total consumer lag the coordinator reported (records).
    pub lag_max: Option<i64>,
    /// The checker's accounting.
    pub checker: Report,
    /// Pass or fail.
    pub verdict: Verdict,
    /// Chart files, relative to the report.
    pub charts: Vec<String>,
    /// Fault and phase markers.
    pub marks: Vec<Mark>,
    /// The per-second samples.
    pub samples: Vec<Sample>,
}

/// What the run knows besides the timeline, the checker and the charts.
#[derive(Debug, Clone, Serialize)]
pub struct RunFacts {
    /// The command that produced it.
    pub command: String,
    /// When the run started (UTC).
    pub started_utc: String,
    /// Wall time of the whole run, start-up and drain included (s).
    pub wall_s: f64,
    /// Time for every camera and partition to be assigned after registration (s).
    pub settle_s: f64,
    /// What was asked for.
    pub params: RunParams,
    /// The machine.
    pub machine: MachineInfo,
}

impl RunReport {
    /// Derives the figures from the timeline (intake window: up to the
    /// [`INTAKE_STOPPED`] mark); `charts` are file names relative to the report.
    pub fn build(
        facts: RunFacts,
        checker: Report,
        charts: Vec<String>,
        timeline: &Timeline,
    ) -> Self {
        let intake_end = timeline
            .mark_time(INTAKE_STOPPED)
            .unwrap_or_else(|| timeline.samples.last().map_or(0.0, |s| s.t_s));
        // Samples whose window ends within half a second after the mark still belong to
        // intake (the mark lands between two samples).
        let intake: Vec<&Sample> = timeline.samples_until(intake_end + 0.5).collect();
        let intake_s = intake.last().map_or(intake_end, |s| s.t_s).max(1e-3);
        let frames_in = Rate::of(&intake, intake_s, |s| (s.frames, s.frames_per_s));
        let detections_out = Rate::of(&intake, intake_s, |s| (s.detections, s.detections_per_s));
        let all_detections: u64 = timeline.samples.iter().map(|s| s.detections).sum();
        let drain_s = timeline
            .mark_time(SETTLED)
            .map_or(0.0, |t| (t - intake_end).max(0.0));
        // Frames only arrive while intake runs, so a camera's frames over the intake time is
        // its rate.
        let per_camera = timeline
            .cameras
            .iter()
            .map(|(id, c)| {
                (
                    id.clone(),
                    CameraThroughput {
                        frames: c.frames,
                        detections: c.detections,
                        fps: c.frames as f64 / intake_s,
                        target_fps: facts.params.fps,
                    },
                )
            })
            .collect();
        let machine: Vec<f64> = intake.iter().filter_map(|s| s.machine_cpu_pct).collect();
        let verdict = Verdict::of(&checker, facts.params.exactly_once);
        Self {
            facts,
            throughput: Throughput {
                intake_s,
                detections_after_intake: all_detections.saturating_sub(detections_out.records),
                frames_in,
                detections_out,
                drain_s,
                per_camera,
                statuses: timeline.statuses.clone(),
            },
            latency_ms: timeline.latency(),
            delivered_latency_ms: timeline.delivered_latency(),
            stage_mean_ms: timeline.stage_mean_ms.clone(),
            latency_histogram: timeline.latency_histogram(40),
            processes: timeline.process_summary(intake_end + 0.5),
            machine_cpu_mean_pct: (!machine.is_empty())
                .then(|| machine.iter().sum::<f64>() / machine.len() as f64),
            lag_max: timeline.samples.iter().filter_map(|s| s.lag).max(),
            checker,
            verdict,
            charts,
            marks: timeline.marks.clone(),
            samples: timeline.samples.clone(),
        }
    }

    /// The Markdown report.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "# Panoptes load run: {}\n", self.facts.params.describe());
        let _ = writeln!(s, "```sh\n{}\n```\n", self.facts.command);
        self.md_result(&mut s);
        self.md_parameters(&mut s);
        self.md_machine(&mut s);
        self.md_throughput(&mut s);
        self.md_latency(&mut s);
        self.md_resources(&mut s);
        self.md_accounting(&mut s);
        self.md_marks(&mut s);
        s
    }

    /// The verdict with its failures and notes, and the run's timing.
    fn md_result(&self, s: &mut String) {
        let th = &self.throughput;
        if self.verdict.pass {
            let _ = writeln!(
                s,
                "**Result: PASS**: every frame on the frames topic has exactly one accepted \
                 detection record or a dead letter, in capture order.\n"
            );
        } else {
            let _ = writeln!(s, "**Result: FAIL**\n");
            for f in &self.verdict.failures {
                let _ = writeln!(s, "- {f}");
            }
            s.push('\n');
        }
        if !self.verdict.warnings.is_empty() {
            let _ = writeln!(s, "Notes:\n");
            for w in &self.verdict.warnings {
                let _ = writeln!(s, "- {w}");
            }
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "Started {}; {:.0} s recorded with intake running, {:.0} s of drain, {:.0} s \
             wall time in all (start-up included; the stack settled {:.1} s after the cameras \
             were registered).\n",
            self.facts.started_utc, th.intake_s, th.drain_s, self.facts.wall_s, self.facts.settle_s
        );
    }

    /// What was asked for.
    fn md_parameters(&self, s: &mut String) {
        let p = &self.facts.params;
        s.push_str("## Parameters\n\n| parameter | value |\n| --- | --- |\n");
        let rows = [
            ("cameras (one frames partition each)", p.cameras.to_string()),
            ("fps per camera (source and sampled)", p.fps.to_string()),
            (
                "source resolution",
                format!("{}×{} H.264 (simulator)", p.resolution.0, p.resolution.1),
            ),
            (
                "analytic box (JPEG to Kafka)",
                format!("{}×{}", p.analytic.0, p.analytic.1),
            ),
            ("recorded seconds", p.seconds.to_string()),
            ("ingest nodes", p.ingest_nodes.to_string()),
            (
                "workers (reference detector, CPU, 1 thread)",
                p.workers.to_string(),
            ),
            (
                "delivery",
                if p.exactly_once {
                    "exactly-once (Kafka transactions)".into()
                } else {
                    "at-least-once".to_string()
                },
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(s, "| {k} | {v} |");
        }
    }

    /// The machine the whole stack ran on.
    fn md_machine(&self, s: &mut String) {
        let m = &self.facts.machine;
        let _ = writeln!(
            s,
            "\n## Machine\n\n| | |\n| --- | --- |\n| CPUs (nproc) | {} |\n| CPU | {} |\n| kernel | {} |\n\
             | GStreamer | {} |\n| load average at start | {} |\n| mean machine CPU busy during intake (every process, other users' too) | {} |\n",
            m.nproc,
            m.cpu_model,
            m.kernel,
            m.gstreamer,
            m.loadavg_at_start,
            self.machine_cpu_mean_pct
                .map_or("–".into(), |v| format!("{v:.0} % of all cores")),
        );
        let _ = writeln!(
            s,
            "Every process of the stack (simulator, broker, Redis, coordinator, ingest, workers) \
             runs on this machine, together with the recorder and the checker.\n"
        );
    }

    /// Records per stage and per camera.
    fn md_throughput(&self, s: &mut String) {
        let p = &self.facts.params;
        let th = &self.throughput;
        s.push_str("## Throughput\n\n");
        let mut stages = Table::new(&[
            "stage",
            "records",
            "mean / s",
            "min / s (1 s samples, after 5 s)",
            "max / s",
        ]);
        let target = (p.cameras as u64 * u64::from(p.fps)) as f64;
        stages.row(&[
            "cameras (asked for)",
            "–",
            &format!("{target:.1}"),
            "–",
            "–",
        ]);
        for (name, r) in [
            ("frames in (frames topic)", &th.frames_in),
            ("detections out (committed)", &th.detections_out),
        ] {
            stages.row(&[
                name.to_string(),
                r.records.to_string(),
                format!("{:.1}", r.mean_per_s),
                r.min_per_s.map_or("–".into(), |v| format!("{v:.0}")),
                format!("{:.0}", r.max_per_s),
            ]);
        }
        s.push_str(&stages.finish());
        let _ = writeln!(
            s,
            "\n{} more detection records arrived after intake stopped (the backlog), in {:.1} s. \
             Records by status: {}.\n",
            th.detections_after_intake,
            th.drain_s,
            fmt_map(&th.statuses)
        );
        let mut cameras =
            Table::new(&["camera", "target fps", "frames", "fps", "detection records"]);
        for (id, c) in &th.per_camera {
            cameras.row(&[
                format!("`{id}`"),
                c.target_fps.to_string(),
                c.frames.to_string(),
                format!("{:.2}", c.fps),
                c.detections.to_string(),
            ]);
        }
        s.push_str(&cameras.finish());
        s.push_str("\n![throughput](throughput.png)\n\n");
    }

    /// End-to-end and delivered latency, where the time goes, lag.
    fn md_latency(&self, s: &mut String) {
        s.push_str("## Latency\n\n");
        let mut table = Table::new(&[
            "measure (ok records)",
            "count",
            "mean",
            "p50",
            "p90",
            "p99",
            "max",
        ]);
        for (name, l) in [
            (
                "end-to-end: capture → publish (worker's `latency.end_to_end_ms`)",
                &self.latency_ms,
            ),
            (
                "delivered: capture → committed record at a `read_committed` consumer",
                &self.delivered_latency_ms,
            ),
        ] {
            let f = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.0} ms"));
            table.row(&[
                name.to_string(),
                l.count.to_string(),
                f(l.mean),
                f(l.p50),
                f(l.p90),
                f(l.p99),
                f(l.max),
            ]);
        }
        s.push_str(&table.finish());
        if let Some(e2e) = self.stage_mean_ms.get("end_to_end_ms") {
            s.push_str(
                "\nWhere the time goes (means of the records' own `latency` fields):\n\n\
                 | stage | mean |\n| --- | --- |\n",
            );
            let mut inside = 0.0;
            for (key, name) in [
                ("queue_ms", "queue: broker timestamp → worker dequeues"),
                ("decode_ms", "JPEG decode"),
                ("batch_wait_ms", "batch wait"),
                ("inference_ms", "inference (whole batch)"),
                ("postprocess_ms", "NMS and box scaling"),
            ] {
                if let Some(v) = self.stage_mean_ms.get(key) {
                    inside += v;
                    let _ = writeln!(s, "| {name} | {v:.1} ms |");
                }
            }
            let _ = writeln!(
                s,
                "| rest: capture → broker, and publishing | {:.1} ms |\n| **end-to-end** | **{e2e:.1} ms** |",
                (e2e - inside).max(0.0)
            );
        }
        let _ = writeln!(
            s,
            "\nHighest total consumer lag reported to the coordinator: {}.\n",
            self.lag_max
                .map_or("not reported".into(), |l| format!("{l} records"))
        );
        s.push_str(
            "![latency over time](latency.png)\n\n![latency histogram](latency-histogram.png)\n\n",
        );
    }

    /// CPU and memory per process.
    fn md_resources(&self, s: &mut String) {
        s.push_str("## Resources (during intake)\n\n");
        let mut table = Table::new(&[
            "process",
            "CPU mean",
            "CPU max (1 s)",
            "RSS mean",
            "RSS max",
        ]);
        for (name, r) in &self.processes {
            table.row(&[
                name.clone(),
                format!("{:.0} %", r.cpu_mean_pct),
                format!("{:.0} %", r.cpu_max_pct),
                format!("{:.0} MB", r.rss_mean_mb),
                format!("{:.0} MB", r.rss_max_mb),
            ]);
        }
        s.push_str(&table.finish());
        s.push_str("\nCPU in % of one core (100 % = one core busy).\n\n![CPU per process](resources.png)\n\n");
    }

    /// The checker's totals and its per-camera table.
    fn md_accounting(&self, s: &mut String) {
        s.push_str("## Accounting (checker)\n\n");
        s.push_str(&self.checker.totals_markdown());
        s.push('\n');
        s.push_str(
            "`lost`: frames with neither a detection record nor a dead letter. `gaps`: seq numbers \
             missing on the frames topic (frames never published, e.g. in flight when intake \
             stopped); not losses. `superseded`: records discarded by the epoch rule.\n\nPer camera:\n\n",
        );
        s.push_str(&self.checker.to_markdown());
    }

    /// Fault and phase markers, if any.
    fn md_marks(&self, s: &mut String) {
        if !self.marks.is_empty() {
            s.push_str("\n## Timeline markers\n\n");
            let mut table = Table::new(&["t (s)", "event"]);
            for m in &self.marks {
                table.row(&[format!("{:.1}", m.t_s), m.label.clone()]);
            }
            s.push_str(&table.finish());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use panoptes_checker::CameraReport;

    #[test]
    fn verdicts() {
        let mut r = Report::default();
        r.total.frames = 10;
        assert!(Verdict::of(&r, true).pass);
        r.total.duplicated = 2;
        assert!(!Verdict::of(&r, true).pass);
        let v = Verdict::of(&r, false);
        assert!(v.pass && v.warnings.len() == 1, "{v:?}");
        r.total.duplicated = 0;
        r.total.lost = 1;
        assert!(!Verdict::of(&r, false).pass);
        r.total.lost = 0;
        r.total.skipped.insert("skipped_stale".into(), 3);
        let v = Verdict::of(&r, true);
        assert!(
            v.pass && v.warnings[0].contains("skipped_stale: 3"),
            "{v:?}"
        );
        assert!(!Verdict::of(&Report::default(), true).pass);
    }

    #[test]
    fn report_from_a_timeline() {
        let mut t = Timeline::default();
        for i in 1..=12 {
            t.samples.push(Sample {
                t_s: f64::from(i),
                window_s: 1.0,
                frames: if i <= 10 { 10 } else { 0 },
                frames_per_s: if i <= 10 { 10.0 } else { 0.0 },
                detections: 10,
                detections_per_s: 10.0,
                ..Sample::default()
            });
        }
        t.marks.push(Mark {
            t_s: 10.2,
            label: INTAKE_STOPPED.into(),
        });
        t.marks.push(Mark {
            t_s: 12.0,
            label: SETTLED.into(),
        });
        t.latencies_ms = vec![10.0, 20.0, 30.0];
        t.stage_mean_ms = [("inference_ms", 5.0), ("end_to_end_ms", 20.0)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let checker = Report {
            total: CameraReport {
                frames: 100,
                ..CameraReport::default()
            },
            ..Report::default()
        };
        let r = RunReport::build(
            RunFacts {
                command: "panoptes-loadtest run".into(),
                started_utc: "x".into(),
                wall_s: 20.0,
                settle_s: 1.0,
                params: RunParams {
                    cameras: 2,
                    fps: 5,
                    resolution: (640, 360),
                    analytic: (640, 360),
                    seconds: 10,
                    workers: 2,
                    ingest_nodes: 1,
                    exactly_once: true,
                },
                machine: panoptes_testkit::sys::machine_info(),
            },
            checker,
            vec![],
            &t,
        );
        assert_eq!(r.throughput.frames_in.records, 100);
        assert_eq!(r.throughput.detections_out.records, 100);
        assert_eq!(r.throughput.detections_after_intake, 20);
        assert!((r.throughput.intake_s - 10.0).abs() < 1e-9);
        assert!((r.throughput.drain_s - 1.8).abs() < 1e-9);
        assert_eq!(r.latency_ms.p50, Some(20.0));
        assert!(r.verdict.pass);
        let md = r.to_markdown();
        assert!(md.contains("**Result: PASS**"), "{md}");
        assert!(
            md.contains("## Accounting (checker)\n\n| camera | frames | accepted |"),
            "{md}"
        );
        assert!(md.contains("| **total** | 100 | 0 | 0 |"), "{md}");
        assert!(md.contains("![throughput](throughput.png)"), "{md}");
        assert!(md.contains("| inference (whole batch) | 5.0 ms |"), "{md}");
        assert!(
            md.contains("| rest: capture → broker, and publishing | 15.0 ms |"),
            "{md}"
        );
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["throughput"]["frames_in"]["records"], 100);
    }
}
