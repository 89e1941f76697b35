//! A per-second timeline of a running [`Stack`], for load runs and chaos scenarios: frames in
//! and detections out per second, end-to-end latency percentiles of each second's detections,
//! CPU and memory of every process of the stack, and the total consumer lag the coordinator
//! reports, with fault markers (`mark`) that the charts draw as labelled vertical lines.
//!
//! The recorder runs on its own thread. It watches the frames and detections topics of every
//! region with [`crate::watch`] (`read_committed`, from the moment it starts) and takes what
//! the watches saw once per second, so a sample costs a fixed amount of memory whatever the
//! frame rate; only the latencies of `ok` records are kept whole (4 bytes each, for the
//! histogram and exact run-wide percentiles: a one-hour run at 100 fps keeps 1.4 MB).
//!
//! ```no_run
//! # fn f(stack: &panoptes_loadtest::stack::Stack) -> anyhow::Result<()> {
//! use panoptes_loadtest::timeline::Recorder;
//! let recorder = Recorder::start(stack)?;
//! std::thread::sleep(std::time::Duration::from_secs(10));
//! recorder.mark("kill worker-0");
//! // … after starting or killing processes: recorder.refresh(stack);
//! let timeline = recorder.finish();
//! panoptes_loadtest::charts::render(&timeline, std::path::Path::new("out"), "my run")?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use panoptes_testkit::coordinator::TEST_TOKEN;
use panoptes_testkit::sys;
use serde::{Deserialize, Serialize};

use crate::bench::scaffold::nearest_rank;
use crate::stack::{Stack, Watching};
use crate::watch::{SeenDetection, SeenFrame, Watch};

/// Resources of one process in one sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessSample {
    /// CPU used during the sample's window, in % of one core (200 = two cores busy).
    pub cpu_pct: f64,
    /// Resident memory at the end of the window (MB, 10^6 bytes).
    pub rss_mb: f64,
}

/// One second of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// End of the window, in seconds since the recorder started.
    pub t_s: f64,
    /// Length of the window (s); about 1, shorter for the last one.
    pub window_s: f64,
    /// Frame records that arrived on the frames topics (all regions).
    pub frames: u64,
    /// Committed detection records that arrived (all regions, any status).
    pub detections: u64,
    /// `frames / window_s`.
    pub frames_per_s: f64,
    /// `detections / window_s`.
    pub detections_per_s: f64,
    /// Median `latency.end_to_end_ms` (capture → publish, measured by the worker) of the
    /// window's `ok` records.
    pub latency_p50_ms: Option<f64>,
    /// 99th percentile of the same.
    pub latency_p99_ms: Option<f64>,
    /// 99th percentile of capture → arrival at a `read_committed` consumer (includes the
    /// transaction commit; clocks of one machine).
    pub delivered_p99_ms: Option<f64>,
    /// Sum of the consumer lag (records) of every partition, as the owners report it to
    /// the coordinator (`GET /v1/status`); `None` when no coordinator answered.
    pub lag: Option<i64>,
    /// Whole-machine CPU busy during the window, in % of all cores.
    pub machine_cpu_pct: Option<f64>,
    /// Per process of the stack (by label, e.g. `worker-0`, `camsim`).
    pub processes: BTreeMap<String, ProcessSample>,
}

/// A fault marker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mark {
    /// Seconds since the recorder started.
    pub t_s: f64,
    /// What happened, e.g. `kill worker-0`.
    pub label: String,
}

/// Frames and detections of one camera over the whole recording.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CameraCounts {
    /// Frame records.
    pub frames: u64,
    /// Detection records (any status).
    pub detections: u64,
}

/// What a recorder saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    /// When the recorder started (UTC, RFC 3339).
    pub started_utc: String,
    /// Seconds between samples.
    pub interval_s: f64,
    /// One per interval.
    pub samples: Vec<Sample>,
    /// Fault markers, in order.
    pub marks: Vec<Mark>,
    /// Per camera totals.
    pub cameras: BTreeMap<String, CameraCounts>,
    /// Detection records by status (`ok`, `skipped_stale`, `shed_overload`).
    pub statuses: BTreeMap<String, u64>,
    /// `latency.end_to_end_ms` of every `ok` record, in arrival order.
    pub latencies_ms: Vec<f32>,
    /// Capture → arrival at a `read_committed` consumer of every `ok` record (ms).
    pub delivered_ms: Vec<f32>,
    /// Mean of each `latency.*_ms` stage of the `ok` records (`queue_ms`, `decode_ms`,
    /// `batch_wait_ms`, `inference_ms`, `postprocess_ms`, `end_to_end_ms`).
    #[serde(default)]
    pub stage_mean_ms: BTreeMap<String, f64>,
}

/// Percentiles of a set of latencies (ms).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Values.
    pub count: u64,
    /// Mean.
    pub mean: Option<f64>,
    /// Median (nearest rank).
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Maximum.
    pub max: Option<f64>,
}

impl LatencySummary {
    /// Summary of `values` (any order).
    pub fn of(values: &[f32]) -> Self {
        let mut v = values.to_vec();
        v.sort_by(f32::total_cmp);
        let mean =
            (!v.is_empty()).then(|| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64);
        Self {
            count: v.len() as u64,
            mean,
            p50: percentile(&v, 0.5),
            p90: percentile(&v, 0.9),
            p99: percentile(&v, 0.99),
            max: v.last().map(|&x| f64::from(x)),
        }
    }
}

/// Mean and maximum resources of one process over the samples in which it was alive.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessSummary {
    /// Samples in which it was measured.
    pub samples: u64,
    /// Mean CPU (% of one core).
    pub cpu_mean_pct: f64,
    /// Highest one-second CPU (% of one core).
    pub cpu_max_pct: f64,
    /// Mean resident memory (MB).
    pub rss_mean_mb: f64,
    /// Highest resident memory (MB).
    pub rss_max_mb: f64,
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f32], q: f64) -> Option<f64> {
    nearest_rank(sorted, q).map(f64::from)
}

impl Timeline {
    /// Samples whose window ends at or before `until_s` (e.g. the "intake stopped" mark).
    pub fn samples_until(&self, until_s: f64) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.t_s <= until_s + 1e-6)
    }

    /// The first mark with this label.
    pub fn mark_time(&self, label: &str) -> Option<f64> {
        self.marks.iter().find(|m| m.label == label).map(|m| m.t_s)
    }

    /// Run-wide end-to-end latency (worker-measured) of `ok` records.
    pub fn latency(&self) -> LatencySummary {
        LatencySummary::of(&self.latencies_ms)
    }

    /// Run-wide capture → committed-arrival latency of `ok` records.
    pub fn delivered_latency(&self) -> LatencySummary {
        LatencySummary::of(&self.delivered_ms)
    }

    /// Mean and maximum resources per process over the samples up to `until_s`.
    pub fn process_summary(&self, until_s: f64) -> BTreeMap<String, ProcessSummary> {
        let mut out: BTreeMap<String, ProcessSummary> = BTreeMap::new();
        for s in self.samples_until(until_s) {
            for (name, p) in &s.processes {
                let e = out.entry(name.clone()).or_default();
                e.samples += 1;
                e.cpu_mean_pct += p.cpu_pct;
                e.rss_mean_mb += p.rss_mb;
                e.cpu_max_pct = e.cpu_max_pct.max(p.cpu_pct);
                e.rss_max_mb = e.rss_max_mb.max(p.rss_mb);
            }
        }
        for e in out.values_mut() {
            e.cpu_mean_pct /= e.samples as f64;
            e.rss_mean_mb /= e.samples as f64;
        }
        out
    }

    /// Latency histogram of `ok` records: about `buckets` buckets of a round width covering
    /// everything up to the 99.5th percentile; the values above the last bucket are counted
    /// separately.
    pub fn latency_histogram(&self, buckets: usize) -> Histogram {
        Histogram::of(&self.latencies_ms, buckets)
    }
}

/// Counts per latency bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Width of every bucket (ms).
    pub width_ms: f64,
    /// Count per bucket; bucket `i` covers `[i·width, (i+1)·width)`.
    pub counts: Vec<u64>,
    /// Values at or beyond the end of the last bucket.
    pub overflow: u64,
}

impl Histogram {
    /// Histogram of `values` with about `buckets` buckets of a round width (1, 2, 5 × 10^k ms)
    /// up to the 99.5th percentile (start-up and fault outliers would squash the rest).
    pub fn of(values: &[f32], buckets: usize) -> Self {
        let mut v = values.to_vec();
        v.sort_by(f32::total_cmp);
        let Some(top) = percentile(&v, 0.995) else {
            return Self {
                width_ms: 1.0,
                ..Self::default()
            };
        };
        let width_ms = nice_width(top.max(1.0) / buckets.max(1) as f64);
        let n = ((top / width_ms).floor() as usize + 1).max(1);
        let mut counts = vec![0; n];
        let mut overflow = 0;
        for &x in &v {
            let i = (f64::from(x).max(0.0) / width_ms) as usize;
            match counts.get_mut(i) {
                Some(c) => *c += 1,
                None => overflow += 1,
            }
        }
        Self {
            width_ms,
            counts,
            overflow,
        }
    }
}

/// The smallest of 1, 2, 5 × 10^k at or above `raw`.
fn nice_width(raw: f64) -> f64 {
    let mut unit = 10f64.powf(raw.max(1e-3).log10().floor());
    loop {
        for m in [1.0, 2.0, 5.0] {
            if m * unit >= raw {
                return m * unit;
            }
        }
        unit *= 10.0;
    }
}

/// What the recorder measures besides the topics; refreshed by [`Recorder::refresh`].
#[derive(Debug, Default)]
struct Targets {
    /// `(label, pid)` of every process.
    processes: Vec<(String, u32)>,
    /// Coordinators' HTTP base URLs.
    coordinators: Vec<String>,
    marks: Vec<Mark>,
    last: Option<Sample>,
}

/// Labels and pids of every process of `stack` that it can name.
pub fn stack_processes(stack: &Stack) -> Vec<(String, u32)> {
    let label = |kind: &str, id: &str| {
        if id.starts_with(kind) {
            id.to_string()
        } else {
            format!("{kind} {id}")
        }
    };
    let mut out = vec![
        ("camsim".to_string(), stack.camsim.pid()),
        ("redis".to_string(), stack.redis.pid()),
    ];
    for (region, b) in &stack.brokers {
        out.push((format!("broker {region}"), b.pid()));
    }
    for c in &stack.coordinators {
        out.push((label("coord", &c.id), c.child.pid()));
    }
    for (id, n) in &stack.ingest {
        out.push((label("ingest", id), n.proc.pid()));
    }
    for (id, n) in &stack.workers {
        out.push((label("worker", id), n.proc.pid()));
    }
    out
}

/// A running recorder; see the module docs.
pub struct Recorder {
    targets: Arc<Mutex<Targets>>,
    stop: Arc<AtomicBool>,
    started: Instant,
    thread: Option<std::thread::JoinHandle<Timeline>>,
}

impl Recorder {
    /// Starts watching `stack` (every region's frames and detections topics, every process).
    pub fn start(stack: &Stack) -> Result<Self> {
        let mut frames = Vec::new();
        let mut detections = Vec::new();
        for region in stack.brokers.keys() {
            frames.push(stack.watch_frames(region)?);
            detections.push(stack.watch_detections(region)?);
        }
        let targets = Arc::new(Mutex::new(Targets::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let mut rec = Self {
            targets: targets.clone(),
            stop: stop.clone(),
            started,
            thread: None,
        };
        rec.refresh(stack);
        let started_utc = sys::utc_timestamp(SystemTime::now());
        let thread = std::thread::Builder::new()
            .name("timeline".into())
            .spawn(move || {
                Sampler::new(frames, detections, targets, started, started_utc).run(&stop)
            })?;
        rec.thread = Some(thread);
        Ok(rec)
    }

    /// Re-reads the stack's processes and coordinators (after starting or killing some).
    pub fn refresh(&self, stack: &Stack) {
        let mut t = self.lock();
        t.processes = stack_processes(stack);
        t.coordinators = stack.coordinators.iter().map(|c| c.http.clone()).collect();
    }

    /// Records a fault marker now.
    pub fn mark(&self, label: &str) {
        let t_s = self.elapsed_s();
        self.lock().marks.push(Mark {
            t_s,
            label: label.to_string(),
        });
    }

    /// Seconds since the recorder started.
    pub fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The latest sample, if any.
    pub fn last_sample(&self) -> Option<Sample> {
        self.lock().last.clone()
    }

    /// Stops the recorder (after a last, partial sample) and returns what it saw.
    pub fn finish(mut self) -> Timeline {
        self.stop.store(true, Ordering::Relaxed);
        let mut timeline = self
            .thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        timeline.marks = std::mem::take(&mut self.lock().marks);
        timeline
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Targets> {
        self.targets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The recorder thread's state.
struct Sampler {
    frames: Vec<Watch<SeenFrame>>,
    detections: Vec<Watch<SeenDetection>>,
    targets: Arc<Mutex<Targets>>,
    started: Instant,
    timeline: Timeline,
    ticks_per_s: f64,
    /// CPU ticks of each pid at the previous sample.
    cpu: HashMap<u32, u64>,
    machine: Option<sys::SystemCpu>,
    http: Option<reqwest::blocking::Client>,
    /// Sums of the stage latencies of `ok` records (order of [`STAGES`]) and their count.
    stage_sums: [f64; 6],
    stage_n: u64,
}

/// Stage names of [`Timeline::stage_mean_ms`], in the order of a record's `latency`.
pub const STAGES: [&str; 6] = [
    "queue_ms",
    "decode_ms",
    "batch_wait_ms",
    "inference_ms",
    "postprocess_ms",
    "end_to_end_ms",
];

fn stages(l: &panoptes_schemas::StageLatencies) -> [f32; 6] {
    [
        l.queue_ms,
        l.decode_ms,
        l.batch_wait_ms,
        l.inference_ms,
        l.postprocess_ms,
        l.end_to_end_ms,
    ]
}

impl Sampler {
    fn new(
        frames: Vec<Watch<SeenFrame>>,
        detections: Vec<Watch<SeenDetection>>,
        targets: Arc<Mutex<Targets>>,
        started: Instant,
        started_utc: String,
    ) -> Self {
        let mut s = Self {
            frames,
            detections,
            targets,
            started,
            timeline: Timeline {
                started_utc,
                interval_s: 1.0,
                ..Timeline::default()
            },
            ticks_per_s: sys::clock_ticks().per_second as f64,
            cpu: HashMap::new(),
            machine: sys::system_cpu().ok(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_millis(500))
                .build()
                .ok(),
            stage_sums: [0.0; 6],
            stage_n: 0,
        };
        for (_, pid) in s.processes() {
            if let Ok(t) = sys::process_cpu_ticks(pid) {
                s.cpu.insert(pid, t);
            }
        }
        s
    }

    fn processes(&self) -> Vec<(String, u32)> {
        self.targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .processes
            .clone()
    }

    fn run(mut self, stop: &AtomicBool) -> Timeline {
        let interval = Duration::from_secs(1);
        let mut prev = self.started;
        let mut n = 1u32;
        loop {
            let next = self.started + interval * n;
            while Instant::now() < next && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(
                    next.saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(50)),
                );
            }
            let stopping = stop.load(Ordering::Relaxed);
            let now = Instant::now();
            let window = now.duration_since(prev).as_secs_f64();
            if !stopping || window >= 0.2 {
                self.sample(now, window);
            }
            if stopping {
                if self.stage_n > 0 {
                    self.timeline.stage_mean_ms = STAGES
                        .iter()
                        .zip(self.stage_sums)
                        .map(|(k, sum)| (k.to_string(), sum / self.stage_n as f64))
                        .collect();
                }
                return self.timeline;
            }
            prev = now;
            // Skip intervals missed while the machine was too busy to wake us.
            n = n.max(now.duration_since(self.started).as_secs() as u32) + 1;
        }
    }

    fn sample(&mut self, now: Instant, window: f64) {
        let frames: Vec<SeenFrame> = self.frames.iter().flat_map(Watch::take).collect();
        let dets: Vec<SeenDetection> = self.detections.iter().flat_map(Watch::take).collect();
        for f in &frames {
            self.timeline
                .cameras
                .entry(f.camera_id.clone())
                .or_default()
                .frames += 1;
        }
        let mut lat = Vec::new();
        let mut delivered = Vec::new();
        for d in &dets {
            self.timeline
                .cameras
                .entry(d.camera_id.clone())
                .or_default()
                .detections += 1;
            *self
                .timeline
                .statuses
                .entry(d.status.to_string())
                .or_default() += 1;
            if d.status == "ok" {
                lat.push(d.latency.end_to_end_ms);
                for (sum, v) in self.stage_sums.iter_mut().zip(stages(&d.latency)) {
                    *sum += f64::from(v);
                }
                self.stage_n += 1;
                let cap_ms = d.capture_time_us as f64 / 1000.0;
                delivered.push((d.arrived_ms as f64 - cap_ms).max(0.0) as f32);
            }
        }
        self.timeline.latencies_ms.extend_from_slice(&lat);
        self.timeline.delivered_ms.extend_from_slice(&delivered);
        lat.sort_by(f32::total_cmp);
        delivered.sort_by(f32::total_cmp);

        let mut processes = BTreeMap::new();
        let mut cpu = HashMap::new();
        for (label, pid) in self.processes() {
            let Ok(ticks) = sys::process_cpu_ticks(pid) else {
                continue;
            };
            cpu.insert(pid, ticks);
            let Some(before) = self.cpu.get(&pid) else {
                continue;
            };
            let cpu_pct =
                ticks.saturating_sub(*before) as f64 / self.ticks_per_s / window.max(1e-3) * 100.0;
            let rss_mb = sys::process_rss_kib(pid).unwrap_or(0) as f64 * 1024.0 / 1e6;
            processes.insert(label, ProcessSample { cpu_pct, rss_mb });
        }
        self.cpu = cpu;
        let machine_now = sys::system_cpu().ok();
        let machine_cpu_pct = match (&self.machine, &machine_now) {
            (Some(a), Some(b)) => Some(b.busy_fraction_since(a) * 100.0),
            _ => None,
        };
        self.machine = machine_now;

        let sample = Sample {
            t_s: now.duration_since(self.started).as_secs_f64(),
            window_s: window,
            frames: frames.len() as u64,
            detections: dets.len() as u64,
            frames_per_s: frames.len() as f64 / window.max(1e-3),
            detections_per_s: dets.len() as f64 / window.max(1e-3),
            latency_p50_ms: percentile(&lat, 0.5),
            latency_p99_ms: percentile(&lat, 0.99),
            delivered_p99_ms: percentile(&delivered, 0.99),
            lag: self.lag(),
            machine_cpu_pct,
            processes,
        };
        self.targets.lock().unwrap_or_else(|e| e.into_inner()).last = Some(sample.clone());
        self.timeline.samples.push(sample);
    }

    /// Total lag from the first coordinator that answers `GET /v1/status`.
    fn lag(&self) -> Option<i64> {
        let http = self.http.as_ref()?;
        let urls = self
            .targets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .coordinators
            .clone();
        for url in urls {
            let Ok(resp) = http
                .get(format!("{url}/v1/status"))
                .bearer_auth(TEST_TOKEN)
                .send()
            else {
                continue;
            };
            let Ok(v) = resp.json::<serde_json::Value>() else {
                continue;
            };
            let parts = v.get("partitions")?.as_array()?;
            let lags: Vec<i64> = parts
                .iter()
                .filter_map(|p| p.get("lag").and_then(serde_json::Value::as_i64))
                .collect();
            return (!lags.is_empty()).then(|| lags.iter().sum());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_has_round_buckets_and_overflow() {
        let mut v: Vec<f32> = (0..1000).map(|i| i as f32 / 10.0).collect(); // 0..100 ms
        v.push(10_000.0);
        let h = Histogram::of(&v, 20);
        assert_eq!(h.width_ms, 5.0);
        assert_eq!(h.counts.iter().sum::<u64>() + h.overflow, 1001);
        assert_eq!(h.overflow, 1);
        assert_eq!(h.counts[0], 50);
        assert_eq!(Histogram::of(&[], 10).counts.len(), 0);
    }

    #[test]
    fn nice_widths() {
        assert_eq!(nice_width(0.7), 1.0);
        assert_eq!(nice_width(1.0), 1.0);
        assert_eq!(nice_width(3.0), 5.0);
        assert_eq!(nice_width(11.0), 20.0);
        assert_eq!(nice_width(480.0), 500.0);
    }

    #[test]
    fn summaries() {
        let l = LatencySummary::of(&[3.0, 1.0, 2.0, 4.0]);
        assert_eq!(l.count, 4);
        assert_eq!(l.p50, Some(2.0));
        assert_eq!(l.max, Some(4.0));
        assert_eq!(l.mean, Some(2.5));
        assert_eq!(LatencySummary::of(&[]).p99, None);

        let mut t = Timeline::default();
        for (i, cpu) in [10.0, 30.0, 500.0].into_iter().enumerate() {
            let mut s = Sample {
                t_s: i as f64 + 1.0,
                ..Sample::default()
            };
            s.processes.insert(
                "worker-0".into(),
                ProcessSample {
                    cpu_pct: cpu,
                    rss_mb: 100.0 * (i + 1) as f64,
                },
            );
            t.samples.push(s);
        }
        let p = t.process_summary(2.0)["worker-0"];
        assert_eq!(p.samples, 2);
        assert_eq!(p.cpu_mean_pct, 20.0);
        assert_eq!(p.cpu_max_pct, 30.0);
        assert_eq!(p.rss_max_mb, 200.0);
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(serde_json::from_str::<Timeline>(&json).unwrap(), t);
    }
}
