//! What every scenario shares: the stack with its checkers and topic watchers, fault markers,
//! recovery waits and the final accounting.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use panoptes_checker::Checker;
use panoptes_coordinator_client::{MemberKind, keys};
use panoptes_testkit::http::metric_value;

use super::{FaultEvent, Recovery, RegionAccounting, ScenarioReport};
use crate::stack::{Node, Stack, StackCamera, StackSpec, Watching};
use crate::timeline::Recorder;
use crate::watch::{SeenDetection, SeenFrame, Watch, wall_ms};

/// Registers the cameras with the coordinator (instead of [`Stack::register_cameras`]).
pub(crate) type Register<'r> = &'r dyn Fn(&Stack) -> Result<()>;

/// The running scenario.
pub(crate) struct Run<'a> {
    pub stack: Stack,
    pub report: &'a mut ScenarioReport,
    pub checkers: Vec<(String, Checker)>,
    pub dets: Watch<SeenDetection>,
    pub frames: Watch<SeenFrame>,
    t0: Instant,
    recorder: Option<Recorder>,
    out: PathBuf,
    first_fault_ms: Option<u64>,
    intake_stopped_ms: Option<u64>,
    /// Each worker's count of abandoned runs when [`Run::watch_abandoned_runs`] was first
    /// called; `finish` names the workers whose count grew culprits.
    abandoned_before: Option<BTreeMap<String, f64>>,
}

/// `n` small cameras at `fps` in region `local`, camera i on partition i.
pub(crate) fn cameras(n: usize, fps: u32) -> Vec<StackCamera> {
    StackCamera::small_set(n, "local", fps)
}

/// One region, exactly-once, fast rebalancing so that every worker gets partitions.
pub(crate) fn spec(cameras: Vec<StackCamera>) -> StackSpec {
    let n = cameras.len() as i32;
    let mut spec = StackSpec::single_region(cameras, n);
    spec.placement.rebalance_cooldown = Duration::from_secs(1);
    spec
}

impl<'a> Run<'a> {
    /// Starts the stack, `ingest` nodes and `workers` in region `local`, registers the cameras
    /// with `register` (default: [`Stack::register_cameras`]), waits until placement settled,
    /// every worker owns a partition and every camera has detections.
    pub fn start(
        report: &'a mut ScenarioReport,
        out: &Path,
        spec: StackSpec,
        ingest: &[&str],
        workers: &[&str],
        register: Option<Register<'_>>,
    ) -> Result<Self> {
        report.setup = format!(
            "{} cameras ({}×{} at {} fps), {} ingest node(s), {} exactly-once worker(s), {} \
             coordinator(s), {} broker(s) per region, member leases {} ms",
            spec.cameras.len(),
            spec.cameras.first().map_or(0, |c| c.sim.width),
            spec.cameras.first().map_or(0, |c| c.sim.height),
            spec.cameras.first().map_or(0, |c| c.sim.fps),
            ingest.len(),
            workers.len(),
            spec.coordinators,
            spec.brokers_per_region,
            spec.lease_ttl.as_millis()
        );
        let mut stack = Stack::start(spec)?;
        stack.start_members("local", ingest, workers)?;
        match register {
            Some(f) => f(&stack)?,
            None => stack.register_cameras()?,
        }
        stack.wait_settled(Duration::from_secs(60))?;
        for w in workers {
            stack.wait_owns(w, Duration::from_secs(30))?;
        }
        stack.wait_settled(Duration::from_secs(30))?;
        let mut checkers = Vec::new();
        for r in &stack.spec.regions {
            checkers.push((r.clone(), stack.checker(r)?));
        }
        let dets = stack.watch_detections("local")?;
        let frames = stack.watch_frames("local")?;
        let mut run = Self {
            stack,
            report,
            checkers,
            dets,
            frames,
            t0: Instant::now(),
            recorder: None,
            out: out.to_path_buf(),
            first_fault_ms: None,
            intake_stopped_ms: None,
            abandoned_before: None,
        };
        let cams = run.camera_ids();
        let since = wall_ms();
        let first = run.wait_cameras_detections(&cams, since, Duration::from_secs(60));
        if let Some((c, _)) = first.iter().find(|(_, v)| v.is_none()) {
            anyhow::bail!("camera {c} had no detections within 60 s of the stack settling");
        }
        run.recorder = Some(Recorder::start(&run.stack)?);
        run.t0 = Instant::now();
        Ok(run)
    }

    /// Camera ids of the spec.
    pub fn camera_ids(&self) -> Vec<String> {
        self.stack
            .spec
            .cameras
            .iter()
            .map(|c| c.id.clone())
            .collect()
    }

    /// Records a fault (or another moment) at the current time; returns its wall clock.
    pub fn mark(&mut self, label: &str) -> u64 {
        let now = wall_ms();
        self.first_fault_ms.get_or_insert(now);
        if let Some(r) = &self.recorder {
            r.refresh(&self.stack);
            r.mark(label);
        }
        eprintln!(
            "[chaos {}] {:.1} s: {label}",
            self.report.scenario,
            self.t0.elapsed().as_secs_f64()
        );
        self.report.faults.push(FaultEvent {
            at_s: self.t0.elapsed().as_secs_f64(),
            wall_ms: now,
            label: label.into(),
        });
        now
    }

    /// A line in the report's notes (and on stderr).
    pub fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("[chaos {}] {text}", self.report.scenario);
        self.report.notes.push(text);
    }

    /// A failure of the scenario (kept going: the accounting is still done).
    pub fn fail(&mut self, text: impl Into<String>) {
        let text = text.into();
        eprintln!("[chaos {}] FAIL: {text}", self.report.scenario);
        self.report.failures.push(text);
    }

    /// Records a measured recovery.
    pub fn recovery(&mut self, what: impl Into<String>, ms: Option<u64>, bound: Duration) {
        let r = Recovery {
            what: what.into(),
            ms,
            bound_ms: bound.as_millis() as u64,
        };
        eprintln!(
            "[chaos {}] recovery of {}: {:?} ms (bound {} ms)",
            self.report.scenario, r.what, r.ms, r.bound_ms
        );
        self.report.recoveries.push(r);
    }

    /// Notes the current partition owners and epochs (evidence for a failed recovery).
    pub fn note_assignments(&mut self) {
        match self.stack.assignments() {
            Ok((cams, parts)) => {
                let c: Vec<String> = cams
                    .iter()
                    .map(|(id, r)| format!("{id}→{}@{}", r.owner, r.epoch))
                    .collect();
                let p: Vec<String> = parts
                    .iter()
                    .map(|(id, r)| format!("{id}→{}@{}", r.owner, r.epoch))
                    .collect();
                self.note(format!("assignments now: cameras {c:?}; partitions {p:?}"));
            }
            Err(e) => self.note(format!("assignments unreadable: {e:#}")),
        }
    }

    /// Notes the transaction and consumer series of every running worker's metrics
    /// (evidence for a failed recovery).
    pub fn note_worker_metrics(&mut self) {
        let mut lines = Vec::new();
        for (id, n) in &self.stack.workers {
            let m = n.metrics();
            let picked: Vec<&str> = m
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter(|l| {
                    [
                        "frames_total",
                        "records_total",
                        "transactions",
                        "in_flight",
                        "partition_paused",
                        "publish_errors",
                        "_lag",
                    ]
                    .iter()
                    .any(|k| l.contains(k))
                })
                .take(40)
                .collect();
            lines.push(format!("{id}: {}", picked.join("; ")));
        }
        for l in lines {
            self.note(format!("worker metrics now: {l}"));
        }
    }

    /// Lets the system run for `d`.
    pub fn hold(&self, d: Duration) {
        std::thread::sleep(d);
    }

    /// The worker owning the most partitions (among running ones) and its partition numbers.
    pub fn busiest_worker(&self) -> Result<(String, Vec<i32>)> {
        let by = self.stack.partitions_by_worker()?;
        by.iter()
            .filter(|(w, _)| self.stack.workers.contains_key(*w))
            .max_by_key(|(_, items)| items.len())
            .map(|(w, items)| {
                (
                    w.clone(),
                    items
                        .iter()
                        .filter_map(|i| keys::parse_partition_item(i).map(|(_, p)| p))
                        .collect(),
                )
            })
            .context("no worker owns a partition")
    }

    /// For each key, ms from `since` to the first committed detection arriving after it that
    /// `matches` the key (None if none within `timeout`).
    pub fn wait_detections<K: Clone + Ord>(
        &self,
        keys: &[K],
        since: u64,
        timeout: Duration,
        matches: impl Fn(&SeenDetection, &K) -> bool,
    ) -> BTreeMap<K, Option<u64>> {
        let matches = &matches;
        first_arrivals(keys, timeout, || {
            let seen = self.dets.seen();
            move |k: &K| first_since(&seen, since, |d| matches(d, k))
        })
    }

    /// For each camera, ms from `since` to its first detection record arriving after it.
    pub fn wait_cameras_detections(
        &self,
        cams: &[String],
        since: u64,
        timeout: Duration,
    ) -> BTreeMap<String, Option<u64>> {
        self.wait_detections(cams, since, timeout, |d, c| &d.camera_id == c)
    }

    /// For each camera, ms from `since` to the arrival of its first frame captured after
    /// `since` (judged by the frame's capture time, so frames of the old owner do not count).
    pub fn wait_cameras_frames(
        &self,
        cams: &[String],
        since: u64,
        timeout: Duration,
    ) -> BTreeMap<String, Option<u64>> {
        first_arrivals(cams, timeout, || {
            let seen = self.frames.seen();
            move |c: &String| {
                seen.iter()
                    .filter(|f| &f.camera_id == c && f.capture_time_us / 1000 > since as i64)
                    .map(|f| f.arrived_ms.saturating_sub(since))
                    .min()
            }
        })
    }

    /// Kills (SIGKILL) a worker and names it a culprit; returns the wall clock of the kill.
    pub fn kill_worker(&mut self, id: &str) -> Result<u64> {
        let owned = self
            .stack
            .partitions_by_worker()?
            .remove(id)
            .unwrap_or_default();
        self.stack.kill(MemberKind::Worker, id)?;
        self.report.culprits.insert(id.to_string());
        Ok(self.mark(&format!("kill -9 worker {id} (owned {owned:?})")))
    }

    /// Each worker's count of partition runs it abandoned with a transaction possibly open:
    /// runs given up (`panoptes_worker_partition_restarts_total`) and handovers dropped at
    /// their deadline (`panoptes_worker_handovers_total{result="timeout"}`). Absent: 0.
    fn abandoned_runs(&self) -> BTreeMap<String, f64> {
        self.stack
            .workers
            .iter()
            .map(|(id, n)| {
                let m = n.metrics();
                let count = |series: &str| metric_value(&m, series).unwrap_or(0.0);
                let n = count("panoptes_worker_partition_restarts_total")
                    + count("panoptes_worker_handovers_total{result=\"timeout\"}");
                (id.clone(), n)
            })
            .collect()
    }

    /// From now until the run is settled, a worker that abandons a partition run (see
    /// [`Run::abandoned_runs`]) is a culprit: the fault left that run's transaction open,
    /// and the coordinator grants the partition again at a higher epoch. Kafka aborts such a
    /// transaction when the transactional id is initialised again; the development broker
    /// shows its records to `read_committed` readers, so the frames they answered come out
    /// again at the higher epoch: duplicates across epochs by the abandoning worker, as for
    /// a killed one. Same-epoch duplicates stay unexplained. Counted until the end because
    /// a run can be given up well after the fault (a call wedged 8 s). The first call sets
    /// the baseline.
    pub fn watch_abandoned_runs(&mut self) {
        if self.abandoned_before.is_none() {
            self.abandoned_before = Some(self.abandoned_runs());
        }
    }

    /// Names culprits the workers that abandoned runs since [`Run::watch_abandoned_runs`].
    fn name_abandoning_culprits(&mut self) {
        let Some(before) = self.abandoned_before.take() else {
            return;
        };
        let grew: BTreeMap<String, f64> = self
            .abandoned_runs()
            .into_iter()
            .map(|(w, n)| {
                let d = n - before.get(&w).copied().unwrap_or(0.0);
                (w, d)
            })
            .filter(|(_, d)| *d > 0.0)
            .collect();
        self.note(format!(
            "partition runs abandoned with their transaction open (given up or handover \
             timed out; granted again at a higher epoch) since the fault, by worker: {grew:?}"
        ));
        self.report.culprits.extend(grew.into_keys());
    }

    /// Stops intake (kills every ingest node), lets the workers answer what is in Kafka and
    /// records every region's accounting plus the per-camera detection gaps.
    pub fn finish(mut self) -> Result<()> {
        self.save_logs();
        let ids: Vec<String> = self.stack.ingest.keys().cloned().collect();
        for id in ids {
            self.stack.kill(MemberKind::Ingest, &id)?;
        }
        let intake_end = wall_ms();
        self.intake_stopped_ms = Some(intake_end);
        self.mark("end of intake (every ingest node killed)");
        let cams = self.camera_ids();
        let settle = Duration::from_secs(30);
        let checkers = std::mem::take(&mut self.checkers);
        for (region, checker) in checkers {
            let report = panoptes_testkit::settle::settle(checker, settle)?;
            self.report.regions.insert(
                region,
                RegionAccounting {
                    explained_duplicates: 0,
                    unexplained_duplicates: 0,
                    checker: report,
                },
            );
        }
        self.name_abandoning_culprits();
        // Again, now that everything settled (the first copy is evidence if settling fails).
        self.save_logs();
        if let Some(rec) = self.recorder.take() {
            rec.mark("settled");
            let timeline = rec.finish();
            std::fs::create_dir_all(&self.out)?;
            std::fs::write(
                self.out.join("timeline.json"),
                serde_json::to_vec(&timeline)?,
            )?;
            let title = format!("chaos {} ({:?})", self.report.scenario, self.report.scale);
            match crate::charts::render(&timeline, &self.out, &title) {
                Ok(files) => {
                    self.report.charts = files
                        .iter()
                        .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().to_string()))
                        .collect();
                }
                Err(e) => self.note(format!("charts could not be drawn: {e:#}")),
            }
        }
        let seen = self.dets.seen();
        self.report.slo = Some(self.slo_burn(&cams, &seen, intake_end));
        if let Some(from) = self.first_fault_ms {
            let to = intake_end;
            for c in &cams {
                let mut times: Vec<u64> = seen
                    .iter()
                    .filter(|d| &d.camera_id == c && d.arrived_ms <= to)
                    .map(|d| d.arrived_ms)
                    .collect();
                times.sort_unstable();
                times.dedup();
                let mut prev = from;
                let mut worst = 0;
                for t in times.into_iter().filter(|t| *t >= from) {
                    worst = worst.max(t - prev);
                    prev = t;
                }
                worst = worst.max(to.saturating_sub(prev));
                self.report
                    .longest_detection_gap_ms
                    .insert(c.clone(), worst);
            }
        }
        Ok(())
    }

    /// The error budget burned by the whole run up to `intake_end_ms` ([`crate::slo`]).
    fn slo_burn(
        &self,
        cams: &[String],
        dets: &[SeenDetection],
        intake_end_ms: u64,
    ) -> crate::slo::SloBurn {
        use crate::slo::{Answer, Frame, Objectives, measure};
        let frames: Vec<Frame> = self
            .frames
            .seen()
            .into_iter()
            .map(|f| Frame {
                camera: f.camera_id,
                seq: f.seq,
                capture_ms: u64::try_from(f.capture_time_us / 1000).unwrap_or(0),
            })
            .collect();
        let answers: Vec<Answer> = dets
            .iter()
            .map(|d| Answer {
                camera: d.camera_id.clone(),
                seq: d.seq,
                arrived_ms: d.arrived_ms,
                ok: d.status == "ok",
                end_to_end_ms: f64::from(d.latency.end_to_end_ms),
            })
            .collect();
        // CI-scale faults are seconds apart: a finer grid than the full scale's 10 s.
        let obj = Objectives {
            window: match self.report.scale {
                crate::chaos::Scale::Ci => Duration::from_secs(2),
                crate::chaos::Scale::Full => Duration::from_secs(10),
            },
            ..Objectives::default()
        };
        measure(&obj, cams, &frames, &answers, intake_end_ms)
    }

    /// Copies the stderr logs of the running workers, ingest nodes and coordinators to
    /// `<out>/logs/` (evidence when a component misbehaved).
    pub fn save_logs(&mut self) {
        let dir = self.out.join("logs");
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        let mut logs: Vec<(String, PathBuf)> = Vec::new();
        for (id, n) in &self.stack.workers {
            logs.push((format!("worker-{id}"), n.proc.log_path()));
        }
        for (id, n) in &self.stack.ingest {
            logs.push((format!("ingest-{id}"), n.proc.log_path()));
        }
        for c in &self.stack.coordinators {
            logs.push((format!("coordinator-{}", c.id), c.child.log_path()));
        }
        for (name, path) in logs {
            let _ = std::fs::copy(&path, dir.join(format!("{name}.log")));
        }
    }

    /// Restarts any worker, ingest node or coordinator whose process exited (what a process
    /// supervisor would do); returns what it restarted.
    pub fn supervise(&mut self) -> Result<Vec<String>> {
        let mut restarted = Vec::new();
        for (id, region) in exited(&mut self.stack.workers) {
            let log = tail(&self.stack.workers[&id].proc.log_text(), 3);
            self.stack.workers.remove(&id);
            self.stack.start_worker(&id, &region, "default")?;
            restarted.push(format!("worker {id} (it had exited: {log})"));
        }
        for (id, region) in exited(&mut self.stack.ingest) {
            let log = tail(&self.stack.ingest[&id].proc.log_text(), 3);
            self.stack.ingest.remove(&id);
            self.stack.start_ingest(&id, &region)?;
            restarted.push(format!("ingest {id} (it had exited: {log})"));
        }
        let mut i = 0;
        while i < self.stack.coordinators.len() {
            if self.stack.coordinators[i].child.is_running() {
                i += 1;
                continue;
            }
            let c = self.stack.coordinators.remove(i);
            let log = tail(&c.child.log_text(), 3);
            let id = c.id.clone();
            drop(c);
            self.stack.start_coordinator(&id)?;
            restarted.push(format!("coordinator {id} (it had exited: {log})"));
        }
        Ok(restarted)
    }

    /// Workers currently running.
    pub fn worker_ids(&self) -> BTreeSet<String> {
        self.stack.workers.keys().cloned().collect()
    }
}

/// `(id, region)` of the members whose process exited.
fn exited(members: &mut BTreeMap<String, Node>) -> Vec<(String, String)> {
    members
        .iter_mut()
        .filter_map(|(id, n)| (!n.proc.is_running()).then(|| (id.clone(), n.region.clone())))
        .collect()
}

/// Polls every 20 ms until every key has a first arrival or `timeout` passed: `lookup`
/// takes a snapshot of what was seen and returns, per key, the ms to its first arrival.
fn first_arrivals<K: Clone + Ord, F: Fn(&K) -> Option<u64>>(
    keys: &[K],
    timeout: Duration,
    lookup: impl Fn() -> F,
) -> BTreeMap<K, Option<u64>> {
    let deadline = Instant::now() + timeout;
    loop {
        let first = lookup();
        let got: BTreeMap<K, Option<u64>> = keys.iter().map(|k| (k.clone(), first(k))).collect();
        if got.values().all(Option::is_some) || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ms from `since` to the first detection at or after it that `matches`.
fn first_since(
    seen: &[SeenDetection],
    since: u64,
    matches: impl Fn(&SeenDetection) -> bool,
) -> Option<u64> {
    seen.iter()
        .filter(|d| d.arrived_ms >= since && matches(d))
        .map(|d| d.arrived_ms - since)
        .min()
}

/// The last error line of a log (`ERROR`, `Error:`, a panic), else its last `n` lines.
fn tail(text: &str, n: usize) -> String {
    let plain = strip_ansi(text);
    let lines: Vec<&str> = plain.lines().collect();
    for pat in ["ERROR", "panicked", "Error:"] {
        if let Some(l) = lines.iter().rev().find(|l| l.contains(pat)) {
            return l.trim().chars().take(400).collect();
        }
    }
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// `text` without ANSI colour sequences (`ESC [ … m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
