//! Coordinator mode (`[assignment] source = "coordinator"`): the worker is a member of the
//! coordination protocol (`docs/coordination-keys.md`) and runs the partitions the
//! coordinator grants it, changing them at run time without restarting.
//!
//! A [`MemberAgent`] holds the worker's lease and publishes its grants ([`Desired`]); the
//! controller thread here compares them with what runs, every 50 ms:
//!
//! - a grant not running (or running at another epoch) starts, in the lane of its cluster
//!   (created on demand, with its own consumer and model instance), from the group's
//!   committed offset, at the grant's epoch;
//! - a running partition no longer granted is stopped at once, committing nothing more;
//! - a grant the coordinator wants moved (`target` set) is handed over on its own thread:
//!   stop intake, finish in-flight frames, commit, [`MemberAgent::release`], bounded by
//!   `handover_timeout` (past it the partition is dropped without release; the coordinator
//!   then waits for the lease);
//! - every 500 ms the agent gets the load (load units/s: frames/s scaled by
//!   width×height / (640×360) from the frame headers), a per-item report and `broker_ok`.
//!
//! On SIGTERM the node calls [`CoordinatedNode::drain`] (state `draining`, serve until the
//! coordinator has moved everything or `drain_timeout`), then [`CoordinatedNode::stop`]: the
//! lanes shut down in pipeline order, and the agent is cancelled last (deleting the member
//! record).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use panoptes_coordinator_client::{Desired, MemberAgent, MemberConfig, MemberKind};
use panoptes_schemas::ModelRef;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::assignment::RedisAssignment;
use crate::config::WorkerConfig;
use crate::inference::{self, InferenceSpec};
use crate::lane::{FatalHook, Handover, Lane, LaneSpec};
use crate::metrics::WorkerMetrics;
use crate::node::WorkerError;

const TICK: Duration = Duration::from_millis(50);
/// A commit still running this long (its own timeout is 10 s) is given up on.
const STUCK_COMMIT: Duration = Duration::from_secs(15);
const REPORT_EVERY: Duration = Duration::from_millis(500);
/// A lane of another cluster with no partition for this long is shut down.
const EMPTY_LANE_TTL: Duration = Duration::from_secs(30);

/// Everything the controller needs to run and create lanes.
pub struct Controller {
    cfg: WorkerConfig,
    agent: MemberAgent,
    inference: InferenceSpec,
    model: ModelRef,
    metrics: WorkerMetrics,
    fatal: FatalHook,
    lanes: Mutex<BTreeMap<String, Arc<Lane>>>,
    handovers: Mutex<BTreeMap<String, JoinHandle<()>>>,
    released: Mutex<BTreeSet<(String, u64)>>,
    empty_since: Mutex<BTreeMap<String, Instant>>,
}

/// The running coordinator mode of a worker.
pub struct CoordinatedNode {
    ctl: Arc<Controller>,
    thread: Option<JoinHandle<()>>,
    stop: CancellationToken,
    agent_cancel: CancellationToken,
    agent_thread: Option<JoinHandle<()>>,
}

impl CoordinatedNode {
    /// Registers the worker (fails if Redis cannot be reached) and starts the controller
    /// with the home lane. Blocking.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        cfg: WorkerConfig,
        home: Arc<Lane>,
        inference: InferenceSpec,
        model: ModelRef,
        metrics: WorkerMetrics,
        fatal: FatalHook,
        capacity: f64,
        http: String,
    ) -> Result<Self, WorkerError> {
        let a = &cfg.assignment;
        let member = MemberConfig {
            redis_url: a.redis_url.clone(),
            kind: MemberKind::Worker,
            id: cfg.worker_id.clone(),
            region: cfg.region.clone(),
            group: cfg.group.clone(),
            capacity,
            http,
            frames_topic: cfg.kafka.frames_topic.clone(),
            lease_ttl: a.lease_ttl,
            poll_interval: a.poll_interval,
        };
        let agent_cancel = CancellationToken::new();
        let (agent, agent_thread) = MemberAgent::start(member, agent_cancel.clone())?;
        tracing::info!(worker = %cfg.worker_id, region = %cfg.region, group = %cfg.group, capacity, "member registered");
        let mut lanes = BTreeMap::new();
        lanes.insert(cfg.region.clone(), home);
        let ctl = Arc::new(Controller {
            cfg,
            agent,
            inference: InferenceSpec {
                measure_capacity: false,
                ..inference
            },
            model,
            metrics,
            fatal,
            lanes: Mutex::new(lanes),
            handovers: Mutex::new(BTreeMap::new()),
            released: Mutex::new(BTreeSet::new()),
            empty_since: Mutex::new(BTreeMap::new()),
        });
        let stop = CancellationToken::new();
        let (c, s) = (ctl.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("coordinated".into())
            .spawn(move || c.run(&s))?;
        Ok(Self {
            ctl,
            thread: Some(thread),
            stop,
            agent_cancel,
            agent_thread: Some(agent_thread),
        })
    }

    /// The member agent.
    pub fn agent(&self) -> &MemberAgent {
        &self.ctl.agent
    }

    /// Whether a lane's inference thread or the controller has stopped (fatal for the
    /// worker: nothing would follow the grants any more).
    pub fn stage_stopped(&self) -> bool {
        self.thread.as_ref().is_some_and(JoinHandle::is_finished)
            || self
                .ctl
                .lanes
                .lock()
                .values()
                .any(|l| l.inference_stopped())
    }

    /// Leaving: marks the member draining and keeps serving (handing partitions over as the
    /// coordinator retargets them) until nothing is granted or running, `timeout` passes, or
    /// `abort()` says to stop. Blocking.
    pub fn drain(&self, timeout: Duration, abort: impl Fn() -> bool) {
        self.ctl.agent.set_draining(true);
        tracing::info!(
            ?timeout,
            "draining: waiting for the coordinator to move the partitions"
        );
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && !abort() {
            let granted = self.ctl.agent.desired().grants.len();
            let running = self.ctl.running_count();
            let moving = self.ctl.handovers.lock().len();
            if granted == 0 && running == 0 && moving == 0 {
                tracing::info!("drained: nothing granted or running");
                return;
            }
            std::thread::sleep(TICK);
        }
        tracing::warn!(
            running = self.ctl.running_count(),
            "drain deadline passed: stopping with partitions still held"
        );
    }

    /// Stops the controller, shuts every lane down in pipeline order, then ends the
    /// membership (the agent deletes the member record). Blocking.
    pub fn stop(mut self) {
        self.stop.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let handovers: Vec<_> = std::mem::take(&mut *self.ctl.handovers.lock())
            .into_values()
            .collect();
        for h in handovers {
            let _ = h.join();
        }
        let lanes: Vec<_> = std::mem::take(&mut *self.ctl.lanes.lock())
            .into_values()
            .collect();
        for lane in lanes {
            lane.shutdown();
        }
        self.ctl.metrics.partitions_owned.set(0);
        self.agent_cancel.cancel();
        if let Some(t) = self.agent_thread.take() {
            let _ = t.join();
        }
    }
}

/// Load-window counters of one partition run (by instance).
#[derive(Default)]
struct Window {
    consumed: u64,
    load_milli: u64,
}

impl Controller {
    fn run(&self, stop: &CancellationToken) {
        let mut rx = self.agent.subscribe();
        let mut last_report = Instant::now();
        let mut windows: BTreeMap<u64, Window> = BTreeMap::new();
        let mut leases_lost = 0;
        while !stop.is_cancelled() {
            let desired = rx.borrow_and_update().clone();
            self.reconcile(&desired);
            if last_report.elapsed() >= REPORT_EVERY {
                let dt = last_report.elapsed().as_secs_f64();
                last_report = Instant::now();
                self.report(&mut windows, dt);
                let lost = self.agent.leases_lost();
                if lost > leases_lost {
                    self.metrics.lease_lost.inc_by(lost - leases_lost);
                    leases_lost = lost;
                }
            }
            std::thread::sleep(TICK);
        }
    }

    fn running_count(&self) -> usize {
        self.lanes.lock().values().map(|l| l.running().len()).sum()
    }

    /// Makes the running partitions match the grants.
    fn reconcile(&self, desired: &Desired) {
        self.reap_handovers();
        let lanes: Vec<Arc<Lane>> = self.lanes.lock().values().cloned().collect();
        let busy: BTreeSet<String> = self.handovers.lock().keys().cloned().collect();
        let mut running = BTreeMap::new();
        for lane in &lanes {
            lane.reap();
            // A failed run (its transaction could not commit, e.g. while a broker was away)
            // is stopped here; the grant loop below starts it again from the committed offsets.
            for p in lane.stuck_commits(STUCK_COMMIT) {
                tracing::error!(cluster = %lane.cluster(), partition = p, "a transaction commit is stuck far past its timeout: restarting the partition with a fresh producer");
                lane.mark_failed(p);
            }
            for p in lane.failed() {
                self.metrics.partition_restarts.inc();
                lane.abort_partition(p);
            }
            for s in lane.running() {
                let item =
                    panoptes_coordinator_client::keys::partition_item(lane.cluster(), s.partition);
                running.insert(item, (lane.clone(), s.partition, s.epoch));
            }
        }
        for (item, (lane, p, epoch)) in &running {
            if busy.contains(item) {
                continue;
            }
            match desired.grants.get(item) {
                None if desired.connected => {
                    tracing::warn!(item, epoch, "partition taken away: stopping it");
                    lane.abort_partition(*p);
                }
                Some(g) if g.epoch() != *epoch => {
                    tracing::warn!(item, epoch, new = g.epoch(), "granted again at a new epoch");
                    lane.abort_partition(*p);
                }
                Some(g) if g.moving() => self.begin_handover(item, lane.clone(), *p, *epoch),
                _ => {}
            }
        }
        let mut starts = Vec::new();
        for (item, g) in &desired.grants {
            if busy.contains(item)
                || self.handovers.lock().contains_key(item)
                || running.get(item).is_some_and(|(_, _, e)| *e == g.epoch())
            {
                continue;
            }
            let Some((cluster, p)) = g.partition() else {
                tracing::warn!(item, "unreadable partition item ignored");
                continue;
            };
            if g.moving() {
                // Asked to move something we do not run: nothing to finish, release now.
                let key = (item.clone(), g.epoch());
                let first = self.released.lock().insert(key);
                if first && let Err(e) = self.agent.release(item, g.epoch(), None) {
                    tracing::warn!(item, error = %e, "release failed");
                    self.released.lock().remove(&(item.clone(), g.epoch()));
                }
                continue;
            }
            let Some(lane) = self.lane_for(cluster, desired) else {
                continue;
            };
            starts.push((item.clone(), lane, p, g.epoch()));
        }
        // Each start initialises a transactional producer, which takes ~0.5 s (librdkafka
        // finds the transaction coordinator not yet connected and retries on its fixed 500 ms
        // timer): start a takeover's partitions side by side, so the last one does not wait
        // for the others (failover time is the slowest partition's).
        std::thread::scope(|scope| {
            for (item, lane, p, epoch) in &starts {
                scope.spawn(move || {
                    let t = Instant::now();
                    match lane.start_partition(*p, *epoch) {
                        Ok(()) => tracing::info!(
                            item,
                            took_ms = t.elapsed().as_millis() as u64,
                            "partition start"
                        ),
                        Err(e) => tracing::error!(item, error = %e, "cannot start the partition"),
                    }
                });
            }
        });
        self.released
            .lock()
            .retain(|(item, _)| desired.grants.contains_key(item));
        self.drop_empty_lanes();
        self.metrics
            .partitions_owned
            .set(self.running_count() as i64);
    }

    fn begin_handover(&self, item: &str, lane: Arc<Lane>, partition: i32, epoch: u64) {
        let deadline = Instant::now() + self.cfg.assignment.handover_timeout;
        let (agent, metrics, it) = (self.agent.clone(), self.metrics.clone(), item.to_string());
        tracing::info!(item, epoch, "handing the partition over");
        let spawned = std::thread::Builder::new()
            .name(format!("handover-{partition}"))
            .spawn(move || {
                let result = match lane.handover_partition(partition, deadline) {
                    Handover::Committed => match agent.release(&it, epoch, None) {
                        Ok(true) => "released",
                        Ok(false) => {
                            tracing::warn!(item = %it, "release refused: the record changed");
                            "failed"
                        }
                        Err(e) => {
                            tracing::warn!(item = %it, error = %e, "release failed");
                            "failed"
                        }
                    },
                    Handover::TimedOut => {
                        tracing::warn!(item = %it, "handover deadline passed: dropped without release");
                        "timeout"
                    }
                    Handover::Superseded | Handover::NotRunning => "failed",
                };
                metrics.handovers.with_label_values(&[result]).inc();
            });
        match spawned {
            Ok(h) => {
                self.handovers.lock().insert(item.to_string(), h);
            }
            Err(e) => tracing::error!(error = %e, "cannot start a handover thread"),
        }
    }

    fn reap_handovers(&self) {
        let mut h = self.handovers.lock();
        let done: Vec<String> = h
            .iter()
            .filter(|(_, t)| t.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        for k in done {
            if let Some(t) = h.remove(&k) {
                let _ = t.join();
            }
        }
    }

    /// The lane of `cluster`, created on first use from the region's bootstrap servers.
    fn lane_for(&self, cluster: &str, desired: &Desired) -> Option<Arc<Lane>> {
        if let Some(l) = self.lanes.lock().get(cluster) {
            return Some(l.clone());
        }
        let Some(region) = desired.regions.get(cluster) else {
            tracing::warn!(
                cluster,
                "granted a partition of an unknown region: waiting for its record"
            );
            return None;
        };
        let mut kafka = self.cfg.kafka.clone();
        kafka.bootstrap_servers = region.bootstrap_servers.clone();
        match self.new_lane(cluster, kafka) {
            Ok(lane) => {
                let lane = Arc::new(lane);
                self.lanes.lock().insert(cluster.to_string(), lane.clone());
                tracing::info!(cluster, "lane started");
                Some(lane)
            }
            Err(e) => {
                tracing::error!(cluster, error = %e, "cannot start a lane");
                None
            }
        }
    }

    fn new_lane(
        &self,
        cluster: &str,
        kafka: crate::config::KafkaConfig,
    ) -> Result<Lane, WorkerError> {
        let a = &self.cfg.assignment;
        let assignment = Arc::new(RedisAssignment::open(
            &a.redis_url,
            a.check_timeout,
            &self.cfg.worker_id,
            cluster,
            &kafka.frames_topic,
        )?);
        let consumer = Arc::new(crate::consumer::create(&kafka, &self.cfg.worker_id)?);
        let started = inference::spawn(self.inference.clone(), self.metrics.clone())?;
        let spec = LaneSpec::from_config(
            &self.cfg,
            cluster,
            kafka,
            assignment,
            self.metrics.clone(),
            self.fatal.clone(),
            self.cfg.partition_queue * 64,
        );
        Lane::start(spec, started, self.model.clone(), consumer)
    }

    fn drop_empty_lanes(&self) {
        let mut empty = self.empty_since.lock();
        let mut gone = Vec::new();
        for (cluster, lane) in self.lanes.lock().iter() {
            if cluster == &self.cfg.region || !lane.running().is_empty() {
                empty.remove(cluster);
                continue;
            }
            let since = *empty.entry(cluster.clone()).or_insert_with(Instant::now);
            if since.elapsed() >= EMPTY_LANE_TTL && !self.handovers_in(cluster) {
                gone.push(cluster.clone());
            }
        }
        for cluster in gone {
            empty.remove(&cluster);
            if let Some(lane) = self.lanes.lock().remove(&cluster) {
                tracing::info!(cluster, "lane idle: shutting it down");
                lane.shutdown();
            }
        }
    }

    fn handovers_in(&self, cluster: &str) -> bool {
        let prefix = format!("{cluster}:");
        self.handovers.lock().keys().any(|k| k.starts_with(&prefix))
    }

    /// Load, per-item report and broker state to the agent.
    fn report(&self, windows: &mut BTreeMap<u64, Window>, dt: f64) {
        let mut items = serde_json::Map::new();
        let mut load = 0.0;
        let mut seen = BTreeSet::new();
        for lane in self.lanes.lock().values() {
            for s in lane.running() {
                seen.insert(s.instance);
                let w = windows.entry(s.instance).or_default();
                let consumed = s.consumed.load(Ordering::Relaxed);
                let load_milli = s.load_milli.load(Ordering::Relaxed);
                let fps = (consumed - w.consumed) as f64 / dt;
                load += (load_milli - w.load_milli) as f64 / 1000.0 / dt;
                *w = Window {
                    consumed,
                    load_milli,
                };
                let item =
                    panoptes_coordinator_client::keys::partition_item(lane.cluster(), s.partition);
                items.insert(
                    item,
                    serde_json::json!({
                        "lag": s.lag.load(Ordering::Relaxed).max(0),
                        "fps": (fps * 100.0).round() / 100.0,
                        "epoch": s.epoch,
                    }),
                );
            }
        }
        windows.retain(|k, _| seen.contains(k));
        self.agent.set_load((load * 100.0).round() / 100.0);
        self.agent.set_report(serde_json::json!({ "items": items }));
    }
}
