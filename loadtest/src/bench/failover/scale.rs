//! The failover benchmark at scale (`panoptes-bench-failover --partitions-per-worker N`): two
//! exactly-once workers own N partitions each; the one owning the most is killed with SIGKILL
//! and the time from the kill to the first committed detection of EVERY partition it owned is
//! measured (`read_committed` reader), trial after trial. The checker reads the whole run.
//!
//! What is real and what is not: Redis, the coordinator, the broker, the workers (the same
//! binary and exactly-once path as in production) are real processes. The frames are
//! produced by the benchmark straight into the frames topic (64×64 JPEGs with proper
//! envelopes, `fps` per partition, spread evenly in time), the cameras are held by one
//! simulated ingest member (a real member agent under a real driver, running nothing: see
//! [`crate::fleet::host`]), and the workers run the no-op model: 2N RTSP cameras with real
//! ingest and inference do not fit this 2-core machine, and the figure of merit is the
//! takeover of many exactly-once partitions, not the media path.
//!
//! Each trial samples the surviving worker's resident memory and thread count
//! (`/proc/<pid>/status`, `/proc/<pid>/task`) before the kill and after it took the victim's
//! partitions: the deltas per partition taken are what one exactly-once partition costs a
//! worker. After each trial a fresh worker replaces the victim and the coordinator rebalances
//! (up to 16 moves under way, new ones every 100 ms) until both hold about N again, waited
//! for at most `balance_timeout_ms`: on a loaded machine the next victim may own more than
//! N, and each trial reports how many it owned.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use panoptes_checker::Report;
use panoptes_coordinator_client::driver::{Driver, DriverConfig};
use panoptes_coordinator_client::{MemberAgent, MemberConfig, MemberKind, keys};
use panoptes_testkit::kafka::{FrameProducer, frame_headers, test_jpeg};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::{TARGET, accounting_clean, fmt_ms};
use crate::bench::scaffold::{BenchReport, RunInfo, Table, markdown_header, nearest_rank};
use crate::bench::sys::{self, MachineInfo};
use crate::fleet::host::SimRunner;
use crate::stack::{Stack, StackCamera, StackSpec};
use crate::watch::{self, SeenDetection, Watch, wall_ms};

/// Size of the benchmark's frames (the no-op model's input).
const FRAME: (u32, u32) = (64, 64);
/// Id of the simulated ingest member holding every camera.
const SIM_INGEST: &str = "sim-ingest";

/// Parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleParams {
    /// Kill trials.
    pub trials: usize,
    /// Partitions each of the two workers owns (2× this partitions, one camera each).
    pub partitions_per_worker: usize,
    /// Frames per second per partition.
    pub fps: u32,
    /// Member lease TTL (ms).
    pub lease_ttl_ms: u64,
    /// Longest recovery waited for in one trial (ms) before the trial counts as failed.
    pub trial_timeout_ms: u64,
    /// Longest wait for the rebalance back to N partitions per worker between trials (ms).
    pub balance_timeout_ms: u64,
}

impl ScaleParams {
    /// The benchmark's defaults: 10 trials, 2 workers × 64 partitions at 1 fps, 1 s leases.
    pub fn full() -> Self {
        Self {
            trials: 10,
            partitions_per_worker: 64,
            fps: 1,
            lease_ttl_ms: 1000,
            trial_timeout_ms: 20_000,
            balance_timeout_ms: 45_000,
        }
    }

    /// A short run for CI: 2 trials, 2 workers × 16 partitions.
    pub fn quick() -> Self {
        Self {
            trials: 2,
            partitions_per_worker: 16,
            ..Self::full()
        }
    }

    fn partitions(&self) -> usize {
        2 * self.partitions_per_worker
    }
}

/// A worker process's footprint at one moment.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ProcSample {
    /// Partitions it owned (assignment records).
    pub partitions: usize,
    /// Resident memory (KiB).
    pub rss_kib: u64,
    /// Threads (`/proc/<pid>/task`).
    pub threads: usize,
    /// Of those, librdkafka's (`rdk:*`).
    pub rdkafka_threads: usize,
}

impl ProcSample {
    fn of(pid: u32, partitions: usize) -> Self {
        let mut s = Self {
            partitions,
            rss_kib: sys::process_rss_kib(pid).unwrap_or(0),
            ..Self::default()
        };
        if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for e in dir.flatten() {
                s.threads += 1;
                let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                if comm.starts_with("rdk:") {
                    s.rdkafka_threads += 1;
                }
            }
        }
        s
    }
}

/// One kill.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScaleTrial {
    /// Killed worker.
    pub victim: String,
    /// The worker that took its partitions.
    pub survivor: String,
    /// Partitions the victim owned.
    pub partitions: usize,
    /// Kill → every one of them granted to the survivor (assignment records, polled), ms.
    pub granted_ms: Option<u64>,
    /// Slowest `partition start` the survivor logged for them (producer creation,
    /// `init_transactions`, consumer assignment), ms.
    pub slowest_start_ms: Option<u64>,
    /// Of that, the slowest `init_transactions` (`transactional producer ready`), ms.
    pub slowest_init_ms: Option<u64>,
    /// Partition start → its first record in a transaction, slowest (`first transaction
    /// committed`, `first_record_ms`), ms.
    pub slowest_first_record_ms: Option<u64>,
    /// The slowest first commit (`commit_ms`), ms.
    pub slowest_first_commit_ms: Option<u64>,
    /// Kill → first committed detection by the survivor, per partition (ms).
    pub recovery_ms: BTreeMap<i32, u64>,
    /// Slowest partition (ms); `None` when one never recovered in time.
    pub worst_ms: Option<u64>,
    /// The survivor before the kill.
    pub before: ProcSample,
    /// The survivor once it runs every partition.
    pub after: ProcSample,
}

impl ScaleTrial {
    /// Resident memory added per partition taken (KiB).
    pub fn rss_kib_per_partition(&self) -> f64 {
        per_partition(self.before.rss_kib as f64, self.after.rss_kib as f64, self)
    }

    /// Threads added per partition taken.
    pub fn threads_per_partition(&self) -> f64 {
        per_partition(self.before.threads as f64, self.after.threads as f64, self)
    }
}

fn per_partition(before: f64, after: f64, t: &ScaleTrial) -> f64 {
    let taken = t
        .after
        .partitions
        .saturating_sub(t.before.partitions)
        .max(1);
    (after - before) / taken as f64
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// Parameters.
    pub params: ScaleParams,
    /// When, what, where.
    pub run: RunInfo,
    /// The machine and its load at the start.
    pub machine: MachineInfo,
    /// `/proc/loadavg` at the end.
    pub loadavg_at_end: String,
    /// Each trial.
    pub trials: Vec<ScaleTrial>,
    /// Per-trial worst recovery (every partition of the victim), nearest-rank p50 (ms).
    pub p50_ms: Option<u64>,
    /// Per-trial worst, p99 (ms).
    pub p99_ms: Option<u64>,
    /// Per-trial worst, maximum (ms).
    pub max_ms: Option<u64>,
    /// Every partition of every trial, p50 (ms).
    pub all_p50_ms: Option<u64>,
    /// Every partition of every trial, p99 (ms).
    pub all_p99_ms: Option<u64>,
    /// Kill → all granted, p50 over trials (ms).
    pub granted_p50_ms: Option<u64>,
    /// Trials whose partitions did not all recover within the timeout.
    pub failed_trials: usize,
    /// A worker owning nothing (before the cameras were registered).
    pub idle_worker: ProcSample,
    /// Median over trials of the resident memory added per partition taken (KiB).
    pub rss_kib_per_partition: Option<f64>,
    /// Median over trials of the threads added per partition taken.
    pub threads_per_partition: Option<f64>,
    /// Workers killed.
    pub victims: Vec<String>,
    /// Frames the benchmark produced.
    pub frames_produced: u64,
    /// The checker's accounting of the whole run.
    pub checker: Report,
    /// Wall time of the run (s).
    pub seconds: f64,
}

impl ScaleReport {
    /// Nothing lost or reordered; every duplicate a killed worker's uncommitted transaction.
    pub fn accounting_clean(&self) -> bool {
        accounting_clean(&self.checker, &self.victims)
    }

    /// Whether every trial recovered and the per-trial p99 stays under 2 s.
    pub fn within_target(&self) -> bool {
        self.failed_trials == 0 && self.p99_ms.is_some_and(|p99| p99 < TARGET.bound as u64)
    }
}

/// Runs the benchmark. `log` gets one line per step.
pub fn run(params: &ScaleParams, mut log: impl FnMut(&str)) -> Result<ScaleReport> {
    let started = Instant::now();
    let machine = sys::machine_info();
    let run = RunInfo::now("");
    let n = params.partitions();
    let cameras: Vec<StackCamera> = (0..n)
        .map(|i| {
            let mut c = StackCamera::small(&camera_id(i), "local", params.fps, 1 + i as u64);
            (c.sim.width, c.sim.height) = FRAME;
            c.analytic = FRAME;
            c
        })
        .collect();
    let mut spec = StackSpec::single_region(cameras, n as i32);
    spec.lease_ttl = Duration::from_millis(params.lease_ttl_ms);
    // Rebalancing moves start every leader tick, 16 under way at most: the replacement
    // worker gets its N back within seconds (one at a time took ~2.5 s per partition).
    spec.placement.rebalance_cooldown = Duration::from_millis(100);
    spec.placement.rebalance_moves = 16;
    let mut stack = Stack::start(spec)?;
    let models = tempfile::tempdir()?;
    let noop = crate::bench::worker::run::consume::generate_noop(models.path())?;
    let mut next_worker = 0;
    for _ in 0..2 {
        start_worker(&mut stack, next_worker, &noop)?;
        next_worker += 1;
    }
    let idle_worker = ProcSample::of(stack.workers["worker-0"].proc.pid(), 0);
    let ingest = start_sim_ingest(&stack)?;
    stack.register_cameras()?;
    let took = wait_balanced(&stack, params, Duration::from_secs(120))?;
    log(&format!("{n} partitions placed in {took:?}"));
    let checker = stack.checker("local")?;
    let bootstrap = stack.brokers["local"].bootstrap.clone();
    let detections = watch::detections(&bootstrap, &stack.topics.detections)?;
    let feeder = Feeder::start(&bootstrap, &stack.topics.frames, n, params.fps)?;
    wait_for_all_partitions(&detections, n, Duration::from_secs(120))?;
    log("every partition has committed detections");

    let mut trials = Vec::new();
    for t in 0..params.trials {
        let trial = kill_one(&mut stack, &detections, params)?;
        log(&format!(
            "trial {}: killed {} owning {}; granted after {} , slowest start {}, slowest \
             partition {}; survivor {} KiB / {} threads → {} KiB / {} threads",
            t + 1,
            trial.victim,
            trial.partitions,
            fmt_ms(trial.granted_ms),
            fmt_ms(trial.slowest_start_ms),
            fmt_ms(trial.worst_ms),
            trial.before.rss_kib,
            trial.before.threads,
            trial.after.rss_kib,
            trial.after.threads,
        ));
        trials.push(trial);
        start_worker(&mut stack, next_worker, &noop)?;
        next_worker += 1;
        match wait_balanced(
            &stack,
            params,
            Duration::from_millis(params.balance_timeout_ms),
        ) {
            Ok(took) => log(&format!("rebalanced in {took:?}")),
            Err(e) => {
                let counts: BTreeMap<String, usize> = current_owners(&stack)
                    .map(|o| o.into_iter().map(|(w, p)| (w, p.len())).collect())
                    .unwrap_or_default();
                log(&format!("not rebalanced ({counts:?}): {e:#}"));
            }
        }
    }

    let frames_produced = feeder.stop()?;
    let report = crate::stack::settle(checker, Duration::from_secs(120))?;
    ingest.end_membership();
    Ok(summarise(
        params,
        trials,
        idle_worker,
        frames_produced,
        report,
        (run, machine),
        started.elapsed().as_secs_f64(),
    ))
}

fn summarise(
    params: &ScaleParams,
    trials: Vec<ScaleTrial>,
    idle_worker: ProcSample,
    frames_produced: u64,
    checker: Report,
    (run, machine): (RunInfo, MachineInfo),
    seconds: f64,
) -> ScaleReport {
    let mut worst: Vec<u64> = trials.iter().filter_map(|t| t.worst_ms).collect();
    worst.sort_unstable();
    let mut all: Vec<u64> = trials
        .iter()
        .flat_map(|t| t.recovery_ms.values().copied())
        .collect();
    all.sort_unstable();
    let mut granted: Vec<u64> = trials.iter().filter_map(|t| t.granted_ms).collect();
    granted.sort_unstable();
    let median = |v: Vec<f64>| crate::bench::scaffold::median(&v);
    ScaleReport {
        params: params.clone(),
        run,
        machine,
        loadavg_at_end: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_string(),
        failed_trials: trials.iter().filter(|t| t.worst_ms.is_none()).count(),
        p50_ms: nearest_rank(&worst, 0.5),
        p99_ms: nearest_rank(&worst, 0.99),
        max_ms: worst.last().copied(),
        all_p50_ms: nearest_rank(&all, 0.5),
        all_p99_ms: nearest_rank(&all, 0.99),
        granted_p50_ms: nearest_rank(&granted, 0.5),
        idle_worker,
        rss_kib_per_partition: median(trials.iter().map(|t| t.rss_kib_per_partition()).collect()),
        threads_per_partition: median(trials.iter().map(|t| t.threads_per_partition()).collect()),
        victims: trials.iter().map(|t| t.victim.clone()).collect(),
        trials,
        frames_produced,
        checker,
        seconds,
    }
}

fn camera_id(i: usize) -> String {
    format!("cam{i}")
}

/// Starts exactly-once worker `worker-<k>` with the no-op model and a fixed capacity (no
/// timed forward passes at start; placement spreads by count).
fn start_worker(stack: &mut Stack, k: usize, noop: &panoptes_models::GeneratedModel) -> Result<()> {
    stack.start_worker_with(&format!("worker-{k}"), "local", "default", |c| {
        c.model.path = noop.model_path.clone();
        c.model.manifest = Some(noop.manifest_path.clone());
        c.assignment.capacity = Some(1000.0);
    })
}

/// The simulated ingest member that holds every camera (so that the coordinator places
/// their partitions) and runs nothing.
fn start_sim_ingest(stack: &Stack) -> Result<Driver<SimRunner>> {
    let mut cfg = MemberConfig::new(
        MemberKind::Ingest,
        SIM_INGEST,
        stack.redis.client_config(SIM_INGEST),
    )
    .placed("local", "default", 1.0e6)
    .timing(stack.spec.lease_ttl, Duration::from_millis(250));
    cfg.frames_topic = stack.topics.frames.clone();
    let cancel = CancellationToken::new();
    let (agent, thread) = MemberAgent::start(cfg, cancel.clone()).context("sim ingest member")?;
    Ok(Driver::start(
        agent,
        cancel,
        thread,
        Arc::new(SimRunner::new(MemberKind::Ingest)),
        DriverConfig::new(Duration::from_secs(5)),
    )?)
}

/// Partitions owned by each live worker, when every partition is owned by a live worker
/// with no handover pending.
fn settled_owners(stack: &Stack) -> Option<BTreeMap<String, Vec<i32>>> {
    let (_, parts) = stack.assignments().ok()?;
    let mut owners: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for i in 0..stack.spec.partitions {
        let rec = parts.get(&keys::partition_item("local", i))?;
        if !stack.workers.contains_key(&rec.owner) || rec.target.is_some() {
            return None;
        }
        owners.entry(rec.owner.clone()).or_default().push(i);
    }
    Some(owners)
}

/// The partitions of each live worker: settled ones if they settle within 15 s, else as the
/// records stand (a rebalance still moving; the trial reports how many the victim owned).
fn current_owners(stack: &Stack) -> Result<BTreeMap<String, Vec<i32>>> {
    let settled =
        panoptes_testkit::wait_until("settled partitions", Duration::from_secs(15), || {
            settled_owners(stack)
        });
    if let Ok(owners) = settled {
        return Ok(owners);
    }
    let (_, parts) = stack.assignments()?;
    let mut owners: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for i in 0..stack.spec.partitions {
        if let Some(rec) = parts.get(&keys::partition_item("local", i))
            && stack.workers.contains_key(&rec.owner)
        {
            owners.entry(rec.owner.clone()).or_default().push(i);
        }
    }
    Ok(owners)
}

/// Waits until the partitions are settled on the live workers, none holding more than
/// N + 1 (the rebalance threshold leaves 65–63).
fn wait_balanced(stack: &Stack, params: &ScaleParams, timeout: Duration) -> Result<Duration> {
    let start = Instant::now();
    let limit = params.partitions_per_worker + 1;
    panoptes_testkit::wait_until("the partitions to be balanced", timeout, || {
        let owners = settled_owners(stack)?;
        (owners.len() == stack.workers.len() && owners.values().all(|v| v.len() <= limit))
            .then_some(())
    })?;
    Ok(start.elapsed())
}

/// Kills the worker owning the most partitions and waits (up to the trial timeout) for each
/// of its partitions' first committed detection by the survivor.
fn kill_one(
    stack: &mut Stack,
    detections: &Watch<SeenDetection>,
    params: &ScaleParams,
) -> Result<ScaleTrial> {
    let owners = current_owners(stack)?;
    let (victim, parts) = owners
        .iter()
        .max_by_key(|(_, p)| p.len())
        .map(|(w, p)| (w.clone(), p.iter().copied().collect::<BTreeSet<i32>>()))
        .context("no worker owns a partition")?;
    let survivor = owners
        .keys()
        .find(|w| **w != victim)
        .cloned()
        .context("no second worker")?;
    let node = &stack.workers[&survivor];
    let pid = node.proc.pid();
    let log_before = node.proc.log_text().len();
    let before = ProcSample::of(pid, owners[&survivor].len());
    detections.take();
    stack.kill(MemberKind::Worker, &victim)?;
    let killed = wall_ms();
    let deadline = Instant::now() + Duration::from_millis(params.trial_timeout_ms);
    let mut recovery = BTreeMap::new();
    let mut granted_ms = None;
    while Instant::now() < deadline && recovery.len() < parts.len() {
        for d in detections.take() {
            if d.arrived_ms >= killed && d.worker_id == survivor && parts.contains(&d.partition) {
                recovery.entry(d.partition).or_insert(d.arrived_ms - killed);
            }
        }
        if granted_ms.is_none() && all_granted(stack, &survivor, &parts) {
            granted_ms = Some(wall_ms() - killed);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let worst_ms = (recovery.len() == parts.len())
        .then(|| recovery.values().copied().max())
        .flatten();
    // The footprint once every partition runs (a second for threads started lazily).
    std::thread::sleep(Duration::from_secs(1));
    let after = ProcSample::of(pid, before.partitions + parts.len());
    let text = stack.workers[&survivor].proc.log_text();
    let log = text.get(log_before..).unwrap_or_default();
    Ok(ScaleTrial {
        victim,
        survivor,
        partitions: parts.len(),
        granted_ms,
        slowest_start_ms: slowest(log, "partition start", "took_ms"),
        slowest_init_ms: slowest(log, "transactional producer ready", "init_ms"),
        slowest_first_record_ms: slowest(log, "first transaction committed", "first_record_ms"),
        slowest_first_commit_ms: slowest(log, "first transaction committed", "commit_ms"),
        recovery_ms: recovery,
        worst_ms,
        before,
        after,
    })
}

/// Whether every partition of `parts` is granted to `worker`.
fn all_granted(stack: &Stack, worker: &str, parts: &BTreeSet<i32>) -> bool {
    let Ok((_, recs)) = stack.assignments() else {
        return false;
    };
    parts.iter().all(|p| {
        recs.get(&keys::partition_item("local", *p))
            .is_some_and(|r| r.owner == worker)
    })
}

/// The largest `<field>=` value of the log lines saying `what`.
fn slowest(log: &str, what: &str, field: &str) -> Option<u64> {
    let key = format!(" {field}=");
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| {
            let rest = &l[l.find(&key)? + key.len()..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .max()
}

fn wait_for_all_partitions(w: &Watch<SeenDetection>, n: usize, timeout: Duration) -> Result<()> {
    let mut seen = BTreeSet::new();
    panoptes_testkit::wait_until("committed detections of every partition", timeout, || {
        seen.extend(w.take().into_iter().map(|d| d.partition));
        (seen.len() >= n).then_some(())
    })
}

/// Produces frames of cameras `cam0..cam<n>` (camera i on partition i) at `fps` each,
/// evenly spread in time, until stopped.
struct Feeder {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<u64>>,
}

impl Feeder {
    fn start(bootstrap: &str, topic: &str, partitions: usize, fps: u32) -> Result<Self> {
        let producer = FrameProducer::new(bootstrap, &[("linger.ms", "0")])?;
        let jpeg = test_jpeg(FRAME.0 as u16, FRAME.1 as u16);
        let topic = topic.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let halt = stop.clone();
        let interval = Duration::from_secs_f64(1.0 / (f64::from(fps) * partitions as f64));
        let thread =
            std::thread::Builder::new()
                .name("feeder".into())
                .spawn(move || -> Result<u64> {
                    let mut seq = vec![0u64; partitions];
                    let mut sent = 0u64;
                    let mut next = Instant::now();
                    while !halt.load(Ordering::Relaxed) {
                        let p = sent as usize % partitions;
                        let h = frame_headers(&camera_id(p), seq[p], FRAME, Duration::ZERO);
                        producer.send(&topic, p as i32, &h, &jpeg)?;
                        seq[p] += 1;
                        sent += 1;
                        next += interval;
                        if let Some(wait) = next.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                    producer.flush()?;
                    Ok(sent)
                })?;
        Ok(Self { stop, thread })
    }

    /// Stops producing; returns how many frames were produced.
    fn stop(self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the feeder panicked"))?
    }
}

impl BenchReport for ScaleReport {
    const STEM: &'static str = "failover-64-bench";

    fn summary_table(&self) -> String {
        let mut t = Table::new(&[
            "partitions per victim",
            "p50",
            "p99",
            "max",
            "all partitions p50",
            "all partitions p99",
            "failed trials",
            "target p99",
        ]);
        t.row(&[
            self.params.partitions_per_worker.to_string(),
            fmt_ms(self.p50_ms),
            fmt_ms(self.p99_ms),
            fmt_ms(self.max_ms),
            fmt_ms(self.all_p50_ms),
            fmt_ms(self.all_p99_ms),
            self.failed_trials.to_string(),
            format!("< {:.0} ms", TARGET.bound),
        ]);
        let mut f = Table::new(&[
            "worker",
            ">RSS (MiB)",
            ">threads",
            ">rdkafka threads",
            ">per partition: RSS (KiB)",
            ">per partition: threads",
        ]);
        f.row(&[
            "idle (0 partitions)".to_string(),
            format!("{:.1}", self.idle_worker.rss_kib as f64 / 1024.0),
            self.idle_worker.threads.to_string(),
            self.idle_worker.rdkafka_threads.to_string(),
            "-".into(),
            "-".into(),
        ]);
        if let Some(tr) = self.trials.last() {
            for (what, s) in [("survivor before", tr.before), ("survivor after", tr.after)] {
                f.row(&[
                    format!("{what} ({} partitions)", s.partitions),
                    format!("{:.1}", s.rss_kib as f64 / 1024.0),
                    s.threads.to_string(),
                    s.rdkafka_threads.to_string(),
                    format!("{:.0}", self.rss_kib_per_partition.unwrap_or(f64::NAN)),
                    format!("{:.1}", self.threads_per_partition.unwrap_or(f64::NAN)),
                ]);
            }
        }
        format!("{}\n{}", t.finish(), f.finish())
    }

    fn to_markdown(&self) -> String {
        let mut s = markdown_header(
            &format!(
                "Worker failover at {} partitions per worker",
                self.params.partitions_per_worker
            ),
            &self.run,
            &self.machine,
            &format!("load average at end: {}", self.loadavg_at_end),
        );
        let p = &self.params;
        s.push_str(&format!(
            "\n{} trials: 2 exactly-once workers (no-op model) owning {} partitions each; kill -9 \
             of the one owning the most; time from the kill to the first committed detection \
             (`read_committed` reader) of every partition it owned. Frames produced by the \
             benchmark straight into the frames topic ({}×{} JPEG, {} fps per partition), \
             cameras held by a simulated ingest member, lease TTL {} ms. A trial's figure is its \
             slowest partition; after each trial a fresh worker replaces the victim and the \
             coordinator rebalances.\n\n",
            p.trials, p.partitions_per_worker, FRAME.0, FRAME.1, p.fps, p.lease_ttl_ms
        ));
        s.push_str("## Result\n\n");
        s.push_str(&self.summary_table());
        s.push_str("\n## Samples\n\n");
        let mut trials = Table::new(&[
            "trial",
            "victim",
            ">partitions",
            ">all granted",
            ">slowest start",
            ">slowest init_transactions",
            ">slowest start → first record",
            ">slowest first commit",
            ">slowest partition",
            ">RSS / partition (KiB)",
            ">threads / partition",
        ]);
        for (i, tr) in self.trials.iter().enumerate() {
            trials.row(&[
                (i + 1).to_string(),
                tr.victim.clone(),
                tr.partitions.to_string(),
                fmt_ms(tr.granted_ms),
                fmt_ms(tr.slowest_start_ms),
                fmt_ms(tr.slowest_init_ms),
                fmt_ms(tr.slowest_first_record_ms),
                fmt_ms(tr.slowest_first_commit_ms),
                fmt_ms(tr.worst_ms),
                format!("{:.0}", tr.rss_kib_per_partition()),
                format!("{:.1}", tr.threads_per_partition()),
            ]);
        }
        s.push_str(&trials.finish());
        let t = &self.checker.total;
        s.push_str(&super::checker_summary(
            &format!(
                "{} frames produced, {} checked",
                self.frames_produced, t.frames
            ),
            t,
            self.accounting_clean(),
            self.seconds,
        ));
        s
    }
}
