//! [`Driver`]: the member side of the lease/grant/handover protocol, once for every kind
//! of node. The node says what starting, stopping and handing over one of its items means
//! (an [`ItemRunner`]: a camera pipeline for ingest nodes, a frames partition in a lane for
//! workers); the driver decides when.
//!
//! # Contract
//!
//! Each pass compares the agent's last [`Desired`] snapshot with what the runner runs
//! ([`plan::plan`], a pure function) and acts:
//!
//! - **a new grant** (or one at a new epoch): [`ItemRunner::run`] gets it; the runner starts
//!   it at the grant's epoch, and decides whether a run at an older epoch restarts or goes on;
//! - **a revoke** (the item is no longer granted, or names another owner): [`ItemRunner::stop`]
//!   stops it at once, committing nothing more; every such item of a pass in one call, so
//!   teardowns can overlap;
//! - **a handover target** (`target` set): the item is handed over on its own thread, off the
//!   driver's loop: [`ItemRunner::hand_over`] stops intake, finishes what is in flight and
//!   makes it durable within `handover_timeout`; when it says the item is ready, the driver
//!   releases it through the agent ([`MemberAgent::release`], with the next sequence number
//!   for cameras), then tells the runner the outcome ([`ItemRunner::handed_over`]). A grant
//!   that does not run here is handed over the same way (nothing to finish). An item is
//!   released once per epoch; a failed release is tried again by a later pass;
//! - **a lost lease** (the agent found its hash expired): counted through
//!   [`ItemRunner::lease_lost`]; the coordinator has probably granted the items elsewhere at
//!   higher epochs, which the next read shows as revokes;
//! - **Redis unreachable** for `fail_closed_after` (when set): every item is stopped and none
//!   starts until a read succeeds again (fail closed);
//! - **drain** ([`Driver::drain`]): the member is marked draining and the loop keeps handing
//!   items over as the coordinator retargets them, until nothing is held, runs or moves;
//! - **stop** ([`Driver::stop`]): the loop ends and in-flight handovers are joined; the node
//!   then shuts its items down and [`Driver::end_membership`] ends the lease last.
//!
//! Every `report_every` the runner's [`Report`] (load, per-item report, broker state) goes to
//! the agent for its next renewal.
//!
//! # Execution model
//!
//! One OS thread, woken by every change of the snapshot ([`MemberAgent::wait_change`]) and
//! otherwise every `tick`. A thread, not an async task: everything a runner does is blocking
//! (GStreamer state changes, librdkafka transactions, joins), the agent is a thread with
//! synchronous Redis, and the worker has no runtime to lend; waking on changes keeps the
//! latency of a grant at the agent's, and the tick runs the upkeep (failed runs, fail-closed
//! deadline, drain) that no change announces.
//!
//! # What the node must guarantee
//!
//! [`ItemRunner`] methods are called from the driver thread and (`hand_over`,
//! `handed_over`) from handover threads, concurrently: they take `&self`. `stop` must return
//! only once the items publish nothing more; `hand_over` must return by its timeout (or say
//! it timed out) and must not release anything itself; `running` must report every item that
//! may still publish.

pub mod plan;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::CoordError;
use crate::member::{Desired, Grant, MemberAgent};

/// What an item's handover prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prepared {
    /// Nothing more of it will be published and its work is durable (or there was none):
    /// release it. `next_seq`: a camera's next sequence number; `complete`: whether every
    /// output was confirmed (a camera's frames acknowledged by the broker).
    Ready {
        /// The number the next owner continues from (cameras).
        next_seq: Option<u64>,
        /// Whether every output was confirmed.
        complete: bool,
    },
    /// The work could not be finished in time: the item was dropped without release.
    TimedOut,
    /// The item could not be handed over (superseded, no longer running): nothing released.
    Failed,
}

/// How an item's handover ended, for the runner's metrics and logs.
#[derive(Debug)]
pub enum HandoverOutcome {
    /// Released: the coordinator grants it to the target now.
    Released {
        /// As prepared.
        next_seq: Option<u64>,
        /// As prepared.
        complete: bool,
    },
    /// The release was refused: the record no longer names this node at that epoch.
    Superseded {
        /// As prepared.
        next_seq: Option<u64>,
    },
    /// Redis did not take the release; a later pass tries again.
    ReleaseFailed(CoordError),
    /// [`Prepared::TimedOut`].
    TimedOut,
    /// [`Prepared::Failed`].
    Failed,
}

/// What the node reports with its next renewals.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Load in load units.
    pub load: f64,
    /// Free-form report shown by `panoptes status`.
    pub report: serde_json::Value,
    /// Whether the node reaches its broker; `None` when something else reports it.
    pub broker_ok: Option<bool>,
}

/// What running, stopping and handing over an item means for one kind of node.
pub trait ItemRunner: Send + Sync + 'static {
    /// Items that run (or may still publish) here, with the epoch each runs at. Called first
    /// in every pass: the place for upkeep (reaping, restarting failed runs).
    fn running(&self) -> BTreeMap<String, u64>;
    /// Stops these items at once; returns when they publish nothing more.
    fn stop(&self, items: &[String]);
    /// Makes these grants run; called every pass with every grant that should run (also
    /// an empty list). A grant the runner cannot run (no record yet) it must not run.
    fn run(&self, grants: &[Grant], desired: &Desired);
    /// Prepares `grant` for release: stop intake, finish in flight, make it durable, by
    /// `timeout`. `ran`: whether it runs here at the grant's epoch. Runs on its own thread.
    fn hand_over(&self, grant: &Grant, ran: bool, timeout: Duration) -> Prepared;
    /// How the handover of `grant` ended (after the driver's release).
    fn handed_over(&self, grant: &Grant, ran: bool, outcome: HandoverOutcome);
    /// The node's load and report; called every `report_every`.
    fn report(&self, desired: &Desired) -> Report;
    /// The agent found `n` more lost leases.
    fn lease_lost(&self, n: u64) {
        let _ = n;
    }
    /// The driver thread panicked: nothing follows the grants any more (fatal for a node).
    fn driver_died(&self) {}
}

/// Tells the runner when the driver thread unwinds.
struct DeathWatch<R: ItemRunner>(Arc<R>);

impl<R: ItemRunner> Drop for DeathWatch<R> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("the member driver panicked");
            self.0.driver_died();
        }
    }
}

/// The driver's timing.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// Longest time between two passes (upkeep, fail-closed and drain checks).
    pub tick: Duration,
    /// How often the runner's report goes to the agent.
    pub report_every: Duration,
    /// Passed to [`ItemRunner::hand_over`].
    pub handover_timeout: Duration,
    /// Stop every item once Redis has been unreachable this long; `None`: keep running.
    pub fail_closed_after: Option<Duration>,
}

impl DriverConfig {
    /// 50 ms ticks, reports every 500 ms, no fail-closed deadline.
    pub fn new(handover_timeout: Duration) -> Self {
        Self {
            tick: Duration::from_millis(50),
            report_every: Duration::from_millis(500),
            handover_timeout,
            fail_closed_after: None,
        }
    }
}

#[derive(Default)]
struct State {
    /// `(item, epoch)` released (or refused): done until the snapshot no longer shows them.
    released: BTreeSet<(String, u64)>,
    /// Handovers in flight, by item.
    handovers: BTreeMap<String, JoinHandle<()>>,
    /// What ran at the last pass.
    running: BTreeMap<String, u64>,
    /// Since when Redis has been unreachable.
    disconnected_since: Option<Instant>,
    /// Whether the items were stopped because Redis stayed unreachable.
    fenced: bool,
    /// Lost leases already passed to the runner.
    leases_lost_seen: u64,
}

struct Shared<R> {
    agent: MemberAgent,
    runner: Arc<R>,
    cfg: DriverConfig,
    stopping: AtomicBool,
    state: Mutex<State>,
}

/// The running driver of one member. Dropping it does not stop it: call [`Driver::stop`].
pub struct Driver<R: ItemRunner> {
    shared: Arc<Shared<R>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    agent_cancel: CancellationToken,
    agent_thread: Mutex<Option<JoinHandle<()>>>,
}

impl<R: ItemRunner> Driver<R> {
    /// Starts the driver thread for `agent` (started with `agent_cancel`, running as
    /// `agent_thread`, both ended by [`Driver::end_membership`]).
    pub fn start(
        agent: MemberAgent,
        agent_cancel: CancellationToken,
        agent_thread: JoinHandle<()>,
        runner: Arc<R>,
        cfg: DriverConfig,
    ) -> Result<Self, CoordError> {
        let name = format!("driver-{}", agent.config().id);
        let shared = Arc::new(Shared {
            agent,
            runner,
            cfg,
            stopping: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let _watch = DeathWatch(s.runner.clone());
                s.run();
            })
            .map_err(|e| CoordError::Invalid(format!("cannot start the driver thread: {e}")))?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
            agent_cancel,
            agent_thread: Mutex::new(Some(agent_thread)),
        })
    }

    /// The member agent.
    pub fn agent(&self) -> &MemberAgent {
        &self.shared.agent
    }

    /// The node's runner.
    pub fn runner(&self) -> &Arc<R> {
        &self.shared.runner
    }

    /// Grants this node still holds (not released).
    pub fn held(&self) -> Vec<Grant> {
        let desired = self.shared.agent.desired();
        let st = self.shared.state.lock();
        desired
            .grants
            .into_values()
            .filter(|g| !st.released.contains(&(g.item.clone(), g.epoch())))
            .collect()
    }

    /// Leaving: marks the member draining and keeps handing items over as the coordinator
    /// retargets them, until nothing is held, runs or moves (`true`), `timeout` passes or
    /// `abort()` says to stop (`false`). Blocking.
    pub fn drain(&self, timeout: Duration, abort: impl Fn() -> bool) -> bool {
        let agent = &self.shared.agent;
        agent.set_draining(true);
        tracing::info!(
            ?timeout,
            "draining: waiting for the coordinator to move this node's items"
        );
        let deadline = Instant::now() + timeout;
        let mut seen = agent.changes();
        while Instant::now() < deadline && !abort() {
            let idle = {
                let st = self.shared.state.lock();
                st.running.is_empty() && st.handovers.is_empty()
            };
            if idle && self.held().is_empty() {
                tracing::info!("drained: nothing granted, running or moving");
                return true;
            }
            seen = agent.wait_change(seen, self.shared.cfg.tick);
        }
        tracing::warn!(held = ?self.held().iter().map(|g| &g.item).collect::<Vec<_>>(),
            "drain deadline passed: stopping with items still held");
        false
    }

    /// Ends the loop and waits for it and for the handovers in flight. Idempotent; the items
    /// still running are the node's to shut down. Blocking.
    pub fn stop(&self) {
        self.shared.stopping.store(true, Ordering::Release);
        self.shared.agent.poke();
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
        let handovers = std::mem::take(&mut self.shared.state.lock().handovers);
        for h in handovers.into_values() {
            let _ = h.join();
        }
    }

    /// Stops the loop if needed, then ends the membership: the agent deletes the member
    /// record, so the coordinator moves what is left at once. Call last. Blocking.
    pub fn end_membership(&self) {
        self.stop();
        self.agent_cancel.cancel();
        if let Some(t) = self.agent_thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl<R: ItemRunner> Shared<R> {
    fn run(self: &Arc<Self>) {
        let mut seen = self.agent.changes();
        let mut last_report = Instant::now();
        while !self.stopping.load(Ordering::Acquire) {
            let desired = self.agent.desired();
            self.pass(&desired);
            if last_report.elapsed() >= self.cfg.report_every {
                last_report = Instant::now();
                self.report(&desired);
            }
            seen = self.agent.wait_change(seen, self.cfg.tick);
        }
    }

    /// One pass: plan, stop, hand over, run.
    fn pass(self: &Arc<Self>, desired: &Desired) {
        self.reap_handovers();
        let running = self.runner.running();
        let plan = {
            let mut st = self.state.lock();
            st.released
                .retain(|(item, ep)| desired.grants.get(item).is_some_and(|g| g.epoch() == *ep));
            let fenced = self.fence(&mut st, desired.connected);
            st.running = running.clone();
            let busy: BTreeSet<String> = st.handovers.keys().cloned().collect();
            plan::plan(&desired.grants, &running, &busy, &st.released, fenced)
        };
        if !plan.stop.is_empty() {
            self.runner.stop(&plan.stop);
        }
        for (grant, ran) in plan.hand_over {
            self.begin_handover(grant, ran);
        }
        self.runner.run(&plan.run, desired);
    }

    /// Whether the node fails closed now: Redis unreachable for `fail_closed_after`. The
    /// lease expires at most its TTL after the last renewal, so past that the coordinator
    /// may be granting the items elsewhere.
    fn fence(&self, st: &mut State, connected: bool) -> bool {
        let Some(after) = self.cfg.fail_closed_after else {
            return false;
        };
        if connected {
            st.disconnected_since = None;
        } else if st.disconnected_since.is_none() {
            st.disconnected_since = Some(Instant::now());
        }
        let fence = st.disconnected_since.is_some_and(|t| t.elapsed() >= after);
        if fence != st.fenced {
            st.fenced = fence;
            if fence {
                tracing::error!(
                    "coordinator unreachable for most of the lease TTL: stopping every item"
                );
            } else {
                tracing::info!("coordinator reachable again: resuming granted items");
            }
        }
        fence
    }

    fn begin_handover(self: &Arc<Self>, grant: Grant, ran: bool) {
        let item = grant.item.clone();
        let me = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("handover-{item}"))
            .spawn(move || me.hand_over(grant, ran));
        match spawned {
            Ok(h) => {
                self.state.lock().handovers.insert(item, h);
            }
            Err(e) => tracing::error!(item, error = %e, "cannot start a handover thread"),
        }
    }

    /// On a handover thread: prepare, release, tell the runner.
    fn hand_over(&self, grant: Grant, ran: bool) {
        let (item, epoch) = (grant.item.as_str(), grant.epoch());
        let outcome = match self
            .runner
            .hand_over(&grant, ran, self.cfg.handover_timeout)
        {
            Prepared::Ready { next_seq, complete } => {
                match self.agent.release(item, epoch, next_seq) {
                    Ok(true) => HandoverOutcome::Released { next_seq, complete },
                    Ok(false) => HandoverOutcome::Superseded { next_seq },
                    Err(e) => HandoverOutcome::ReleaseFailed(e),
                }
            }
            Prepared::TimedOut => HandoverOutcome::TimedOut,
            Prepared::Failed => HandoverOutcome::Failed,
        };
        if matches!(
            outcome,
            HandoverOutcome::Released { .. } | HandoverOutcome::Superseded { .. }
        ) {
            self.state.lock().released.insert((item.to_string(), epoch));
        }
        self.runner.handed_over(&grant, ran, outcome);
        self.agent.poke();
    }

    fn reap_handovers(&self) {
        let mut st = self.state.lock();
        let done: Vec<String> = st
            .handovers
            .iter()
            .filter(|(_, t)| t.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        for k in done {
            if let Some(t) = st.handovers.remove(&k) {
                let _ = t.join();
            }
        }
    }

    fn report(&self, desired: &Desired) {
        let r = self.runner.report(desired);
        self.agent.set_load(r.load);
        self.agent.set_report(r.report);
        if let Some(ok) = r.broker_ok {
            self.agent.set_broker_ok(ok);
        }
        let lost = self.agent.leases_lost();
        let mut st = self.state.lock();
        if lost > st.leases_lost_seen {
            let n = lost - st.leases_lost_seen;
            st.leases_lost_seen = lost;
            drop(st);
            self.runner.lease_lost(n);
        }
    }
}
