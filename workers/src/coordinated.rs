//! Coordinator mode (`[assignment] source = "coordinator"`): the worker is a member of the
//! coordination protocol (`docs/coordination-keys.md`) and runs the partitions the
//! coordinator grants it, changing them at run time without restarting.
//!
//! The protocol (lease, grants, revokes, handovers, drain) is the member [`Driver`] of
//! `panoptes-coordinator-client`; this module says what it means for a frames partition
//! ([`PartitionRunner`], an [`ItemRunner`]):
//!
//! - **run** a grant: start it in the lane of its cluster (created on demand, with its own
//!   consumer and model instance), from the group's committed offset, at the grant's epoch;
//!   a partition running at another epoch is aborted and started again. A takeover's
//!   partitions start side by side;
//! - **stop** a revoked partition: abort it at once, committing nothing more;
//! - **hand over** a partition: stop intake, finish in-flight frames and commit, bounded by
//!   `handover_timeout` (past it the partition is dropped without release; a later pass
//!   releases it with nothing left to finish); the driver then releases it;
//! - upkeep every pass (50 ms): a partition whose run failed (its publisher failed with a
//!   Kafka error, or the lane's watchdog found a transaction call wedged), or whose commit is
//!   stuck far past its timeout, is aborted and **given up at its epoch**: released through
//!   the member agent so that the coordinator grants it again at a higher epoch (to another
//!   worker when one can take it), and never started here again at that epoch or below. The
//!   given-up run may have left records of an open transaction behind (a thread wedged in
//!   librdkafka cannot abort it); on Kafka the next `init_transactions` of its transactional
//!   id aborts them, and on a broker that shows them (the development broker) they carry an
//!   epoch the restarted run supersedes, so readers applying the epoch rule can tell them
//!   apart (`docs/workers.md`, "Broker outages"). A release Redis does not take is tried
//!   again every second; a lane of another cluster idle for 30 s shuts down;
//! - **report** every 500 ms: the load (load units/s: frames/s scaled by width×height /
//!   (640×360) from the frame headers) and a per-item report; `broker_ok` comes from the
//!   node's broker probe.
//!
//! The worker does not fail closed when Redis is unreachable: every commit is checked
//! against the assignment record in Redis first, so without Redis nothing is committed.
//! A driver that dies (panics) is reported as the failure of the `Controller` stage.
//!
//! On SIGTERM the node calls [`CoordinatedNode::drain`] (state `draining`, serve until the
//! coordinator has moved everything or `drain_timeout`), then [`CoordinatedNode::stop`]: the
//! lanes shut down in pipeline order, and the membership ends last (deleting the member
//! record).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use panoptes_coordinator_client::keys::partition_item;
use panoptes_coordinator_client::{
    Desired, Driver, DriverConfig, Grant, HandoverOutcome, ItemRunner, MemberAgent, MemberConfig,
    MemberKind, Prepared, Report,
};

mod given_up;

use given_up::GivenUp;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::error::{Stage, StageError, WorkerError};
use crate::lane::{Handover, Lane, LaneBuilder, LaneContext};

/// A commit still running this long (its own timeout is 10 s) is given up on.
const STUCK_COMMIT: Duration = Duration::from_secs(15);
/// A lane of another cluster with no partition for this long is shut down.
const EMPTY_LANE_TTL: Duration = Duration::from_secs(30);

/// The running coordinator mode of a worker.
pub struct CoordinatedNode {
    driver: Driver<PartitionRunner>,
}

impl CoordinatedNode {
    /// Registers the worker (fails if Redis cannot be reached) and starts the driver with
    /// the home lane. Blocking.
    pub fn start(
        lane_ctx: LaneContext,
        home: Arc<Lane>,
        capacity: f64,
        http: String,
    ) -> Result<Self, WorkerError> {
        let cfg = &lane_ctx.config;
        let a = &cfg.assignment;
        let member = MemberConfig::new(MemberKind::Worker, &cfg.worker_id, &a.redis)
            .placed(&cfg.region, &cfg.group, capacity)
            .classed(&cfg.node_class())
            .serving(http, &cfg.kafka.frames_topic)
            .timing(a.lease_ttl, a.poll_interval);
        let driver_cfg = DriverConfig::new(a.handover_timeout);
        let agent_cancel = CancellationToken::new();
        let (agent, agent_thread) = MemberAgent::start(member, agent_cancel.clone())?;
        tracing::info!(worker = %cfg.worker_id, region = %cfg.region, group = %cfg.group, capacity, "member registered");
        let mut lanes = BTreeMap::new();
        lanes.insert(cfg.region.clone(), home);
        let runner = Arc::new(PartitionRunner {
            agent: agent.clone(),
            given_up: GivenUp::new(agent.clone()),
            ctx: lane_ctx,
            lanes: Mutex::new(lanes),
            handing: Mutex::new(BTreeSet::new()),
            empty_since: Mutex::new(BTreeMap::new()),
            windows: Mutex::new((Instant::now(), BTreeMap::new())),
        });
        let driver = Driver::start(agent, agent_cancel, agent_thread, runner, driver_cfg)?;
        Ok(Self { driver })
    }

    /// The member agent.
    pub fn agent(&self) -> &MemberAgent {
        self.driver.agent()
    }

    /// Leaving: marks the member draining and keeps serving (handing partitions over as the
    /// coordinator retargets them) until nothing is granted, running or moving (`true`),
    /// `timeout` passes, or `abort()` says to stop. Blocking.
    pub fn drain(&self, timeout: Duration, abort: impl Fn() -> bool) -> bool {
        self.driver.drain(timeout, abort)
    }

    /// Stops the driver, shuts every lane down in pipeline order, then ends the membership
    /// (the agent deletes the member record). Blocking.
    pub fn stop(self) {
        self.driver.stop();
        let runner = self.driver.runner();
        let lanes: Vec<_> = std::mem::take(&mut *runner.lanes.lock())
            .into_values()
            .collect();
        for lane in lanes {
            lane.shutdown();
        }
        runner.ctx.metrics.partitions_owned.set(0);
        self.driver.end_membership();
    }
}

/// Load-window counters of one partition run (by instance).
#[derive(Default)]
struct Window {
    consumed: u64,
    load_milli: u64,
}

/// What running, stopping and handing over a frames partition means: lanes, one per
/// cluster.
pub struct PartitionRunner {
    ctx: LaneContext,
    lanes: Mutex<BTreeMap<String, Arc<Lane>>>,
    /// Items whose graceful handover runs now (their lane must stay).
    handing: Mutex<BTreeSet<String>>,
    empty_since: Mutex<BTreeMap<String, Instant>>,
    /// When the load was last reported, and the counters then.
    windows: Mutex<(Instant, BTreeMap<u64, Window>)>,
    /// Runs given up at their epoch (released to be granted again at a higher one).
    given_up: GivenUp,
    /// Tells the member record which model version the home lane runs (`name@version`).
    agent: MemberAgent,
}

/// A partition running in a lane.
struct Run {
    lane: Arc<Lane>,
    partition: i32,
    epoch: u64,
}

impl PartitionRunner {
    fn lane(&self, cluster: &str) -> Option<Arc<Lane>> {
        self.lanes.lock().get(cluster).cloned()
    }

    /// What runs, by item.
    fn runs(&self) -> BTreeMap<String, Run> {
        let lanes: Vec<Arc<Lane>> = self.lanes.lock().values().cloned().collect();
        let mut runs = BTreeMap::new();
        for lane in lanes {
            for s in lane.running() {
                let run = Run {
                    lane: lane.clone(),
                    partition: s.partition,
                    epoch: s.epoch,
                };
                runs.insert(partition_item(lane.cluster(), s.partition), run);
            }
        }
        runs
    }

    /// The lane of `cluster`, created on first use from the region's bootstrap servers.
    fn lane_for(&self, cluster: &str, desired: &Desired) -> Option<Arc<Lane>> {
        if let Some(l) = self.lane(cluster) {
            return Some(l);
        }
        let Some(region) = desired.regions.get(cluster) else {
            tracing::warn!(
                cluster,
                "granted a partition of an unknown region: waiting for its record"
            );
            return None;
        };
        let mut kafka = self.ctx.config.kafka.clone();
        kafka.client.bootstrap_servers = region.bootstrap_servers.clone();
        match LaneBuilder::new(&self.ctx, cluster, kafka).build() {
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

    /// Starts partitions side by side: each start creates and initialises a transactional
    /// producer (tens of ms once connected first, see `EosPartition::producer`; seconds for
    /// 64 at once on 2 cores), and failover time is the slowest partition's.
    fn start_all(starts: &[(String, Arc<Lane>, i32, u64)]) {
        std::thread::scope(|scope| {
            for (item, lane, p, epoch) in starts {
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
    }

    fn drop_empty_lanes(&self) {
        let mut empty = self.empty_since.lock();
        let mut gone = Vec::new();
        for (cluster, lane) in self.lanes.lock().iter() {
            if cluster == &self.ctx.config.region || !lane.running().is_empty() {
                empty.remove(cluster);
                continue;
            }
            let since = *empty.entry(cluster.clone()).or_insert_with(Instant::now);
            if since.elapsed() >= EMPTY_LANE_TTL && !self.handing_in(cluster) {
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

    fn handing_in(&self, cluster: &str) -> bool {
        let prefix = format!("{cluster}:");
        self.handing.lock().iter().any(|k| k.starts_with(&prefix))
    }

    /// Commits the partition's finished work within `timeout`.
    fn graceful(&self, grant: &Grant, lane: &Lane, partition: i32, timeout: Duration) -> Prepared {
        let item = &grant.item;
        tracing::info!(item, epoch = grant.epoch(), "handing the partition over");
        self.handing.lock().insert(item.clone());
        let prepared = match lane.handover_partition(partition, Instant::now() + timeout) {
            Handover::Committed => Prepared::Ready {
                next_seq: None,
                complete: true,
            },
            Handover::TimedOut => {
                tracing::warn!(item, "handover deadline passed: dropped without release");
                Prepared::TimedOut
            }
            Handover::Superseded | Handover::NotRunning => Prepared::Failed,
        };
        self.handing.lock().remove(item);
        prepared
    }
}

impl ItemRunner for PartitionRunner {
    fn running(&self) -> BTreeMap<String, u64> {
        let lanes: Vec<Arc<Lane>> = self.lanes.lock().values().cloned().collect();
        for lane in &lanes {
            lane.reap();
            // A failed run (its transaction could not commit, e.g. while a broker was away)
            // is stopped here and given up at its epoch: the coordinator grants it again at
            // a higher one, from the committed offsets, so that whatever the wedged run left
            // on the topic is told apart by its epoch.
            for p in lane.stuck_commits(STUCK_COMMIT) {
                tracing::error!(cluster = %lane.cluster(), partition = p, "a transaction commit is stuck far past its timeout: restarting the partition with a fresh producer");
                lane.mark_failed(p);
            }
            let failed = lane.failed();
            let epochs: BTreeMap<i32, u64> = lane
                .running()
                .iter()
                .filter(|s| failed.contains(&s.partition))
                .map(|s| (s.partition, s.epoch))
                .collect();
            for (p, epoch) in epochs {
                self.ctx.metrics.partition_restarts.inc();
                lane.abort_partition(p);
                self.given_up
                    .give_up(&partition_item(lane.cluster(), p), epoch);
            }
        }
        self.given_up.release_due();
        self.runs()
            .into_iter()
            .map(|(item, r)| (item, r.epoch))
            .collect()
    }

    fn stop(&self, items: &[String]) {
        let runs = self.runs();
        for item in items {
            if let Some(r) = runs.get(item) {
                tracing::warn!(item, epoch = r.epoch, "partition taken away: stopping it");
                r.lane.abort_partition(r.partition);
            }
        }
    }

    fn run(&self, grants: &[Grant], desired: &Desired) {
        self.given_up.forget_settled(&desired.grants);
        let runs = self.runs();
        let mut starts = Vec::new();
        for g in grants {
            let item = &g.item;
            if self.given_up.blocks(item, g.epoch()) {
                // Released (or being released) at this epoch: its next run is at a higher one.
                continue;
            }
            match runs.get(item) {
                Some(r) if r.epoch == g.epoch() => continue,
                Some(r) => {
                    tracing::warn!(
                        item,
                        epoch = r.epoch,
                        new = g.epoch(),
                        "granted again at a new epoch"
                    );
                    r.lane.abort_partition(r.partition);
                }
                None => {}
            }
            let Some((cluster, p)) = g.partition() else {
                tracing::warn!(item, "unreadable partition item ignored");
                continue;
            };
            if let Some(lane) = self.lane_for(cluster, desired) {
                starts.push((item.clone(), lane, p, g.epoch()));
            }
        }
        Self::start_all(&starts);
        self.drop_empty_lanes();
        let owned: usize = self.lanes.lock().values().map(|l| l.running().len()).sum();
        self.ctx.metrics.partitions_owned.set(owned as i64);
    }

    fn hand_over(&self, grant: &Grant, ran: bool, timeout: Duration) -> Prepared {
        let Some((_, p)) = grant.partition() else {
            tracing::warn!(item = %grant.item, "unreadable partition item ignored");
            return Prepared::Failed;
        };
        let nothing_to_finish = Prepared::Ready {
            next_seq: None,
            complete: true,
        };
        match (self.runs().remove(&grant.item), ran) {
            (Some(r), true) => self.graceful(grant, &r.lane, p, timeout),
            // Stopped since the driver looked: the lane has nothing to hand over.
            (None, true) => Prepared::Failed,
            // A run at an older epoch was superseded by the grant: it stops without
            // committing, and nothing of this epoch runs here to finish.
            (Some(r), false) => {
                tracing::warn!(item = %grant.item, epoch = r.epoch, new = grant.epoch(), "granted again at a new epoch");
                r.lane.abort_partition(p);
                nothing_to_finish
            }
            (None, false) => nothing_to_finish,
        }
    }

    fn handed_over(&self, grant: &Grant, ran: bool, outcome: HandoverOutcome) {
        let item = &grant.item;
        let result = match outcome {
            HandoverOutcome::Released { .. } => "released",
            HandoverOutcome::Superseded { .. } => {
                tracing::warn!(item, "release refused: the record changed");
                "failed"
            }
            HandoverOutcome::ReleaseFailed(e) => {
                tracing::warn!(item, error = %e, "release failed");
                "failed"
            }
            HandoverOutcome::TimedOut => "timeout",
            HandoverOutcome::Failed => "failed",
        };
        // Only graceful handovers of a running partition count; releasing a grant that did
        // not run here is bookkeeping.
        if ran {
            self.ctx
                .metrics
                .handovers
                .with_label_values(&[result])
                .inc();
        }
    }

    fn report(&self, _desired: &Desired) -> Report {
        let mut guard = self.windows.lock();
        let (last, windows) = &mut *guard;
        let dt = last.elapsed().as_secs_f64().max(1e-3);
        *last = Instant::now();
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
                items.insert(
                    partition_item(lane.cluster(), s.partition),
                    serde_json::json!({
                        "lag": s.lag.load(Ordering::Relaxed).max(0),
                        "fps": (fps * 100.0).round() / 100.0,
                        "epoch": s.epoch,
                    }),
                );
            }
        }
        windows.retain(|k, _| seen.contains(k));
        if let Some(m) = self.lane(&self.ctx.config.region).and_then(|l| l.model()) {
            self.agent.set_model(&format!("{}@{}", m.name, m.version));
        }
        Report {
            load: (load * 100.0).round() / 100.0,
            report: serde_json::json!({ "items": items }),
            broker_ok: None,
        }
    }

    fn lease_lost(&self, n: u64) {
        self.ctx.metrics.lease_lost.inc_by(n);
    }

    fn driver_died(&self) {
        self.ctx
            .failures
            .stage_failed(Stage::Controller, StageError::Ended);
    }
}
