//! Coordinator mode: the node's cameras come from the coordinator at run time.
//!
//! The protocol (lease, grants, revokes, handovers, fail closed, drain) is the member
//! [`Driver`] of `panoptes-coordinator-client`; this module says what it means for a camera
//! ([`CameraRunner`], an [`ItemRunner`]):
//!
//! - **run** a grant: start the camera from its registry record ([`CameraRecord`]: URL with
//!   credentials, fps, analytic box, partition) and the node's `camera_defaults`, at sequence
//!   number `max(start_seq of the grant, the next number this node would have used)`, so a
//!   number is never published twice from here. A camera granted again at a higher epoch
//!   while it runs (after a lost lease) keeps running, unless the grant starts beyond its
//!   sequence; a changed record restarts it;
//! - **stop** a revoked camera: stop it and join its thread (it publishes nothing more),
//!   remembering its next sequence number;
//! - **hand over** a camera: stop it, wait until the broker acknowledged its frames (bounded
//!   by `handover_flush_timeout`, or 250 ms while the broker is unreachable: the producer
//!   keeps the frames for this region's Kafka and the camera must stream elsewhere now), then
//!   the driver releases it with its next sequence number, which the next owner starts from;
//! - **fail closed** after ¾ of the lease TTL without Redis (renewals come every ¼, so by
//!   then the lease may have expired and the coordinator may be granting the cameras
//!   elsewhere): every camera stops, and starts again once the records are readable and still
//!   name this node;
//! - **report** every ~500 ms: load (the configured load of its running cameras), a
//!   per-camera report (state, measured fps, next sequence number, epoch) and whether its
//!   broker answers;
//! - **fence**: every frame carries the epoch of the camera's grant (`owner_epoch`, set on
//!   the publisher before the camera runs at that epoch), and the publisher enqueues nothing
//!   once the member lease may have expired (the agent's [`LeaseFence`]: last successful
//!   renewal's sent time + TTL − margin, monotonic), so a paused or cut-off node stops
//!   publishing at its lease's expiry, not when it notices. A node whose member id was taken
//!   over by another process (its session replaced) stops everything and shuts down.
//!
//! On shutdown [`Coordinator::drive`] drains (the cameras keep running while the coordinator
//! moves them, up to `drain_timeout`) and stops the driver; the caller then stops the rest,
//! flushes the producer, and [`Coordinator::finish`] releases what is left (with next
//! sequence numbers) and ends the membership last.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use panoptes_coordinator_client::sealed::Keyring;
use panoptes_coordinator_client::{
    CameraRecord, CoordError, Desired, Driver, DriverConfig, Grant, HandoverOutcome, ItemRunner,
    LeaseFence, MemberAgent, MemberConfig, MemberKind, Prepared, Report,
};
use panoptes_runtime::health::Readiness;
use panoptes_runtime::redact::redact_text;
use tokio_util::sync::CancellationToken;

use crate::camera::CameraStatus;
use crate::config::{CameraConfig, CameraConfigError, CameraDefaults, CameraSpec, IngestConfig};
use crate::metrics::IngestMetrics;
use crate::node::IngestNode;
use crate::publisher::FramePublisher;

/// Window over which the reported fps is measured.
const FPS_WINDOW: Duration = Duration::from_secs(2);
/// Longest wait for a handed-over camera's frames while the broker is unreachable.
const UNREACHABLE_FLUSH: Duration = Duration::from_millis(250);

/// Resolves a registry record into the spec the camera runs with: the record gives id, URL,
/// fps, analytic box and partition; the node's `camera_defaults` the rest.
pub fn spec_from_record(
    record: &CameraRecord,
    defaults: &CameraDefaults,
    start_seq: u64,
) -> Result<CameraSpec, CameraConfigError> {
    // The caller opens the record (sealed password back in the URL) first.
    let entry = CameraConfig {
        id: record.id.clone(),
        url: record.url.clone(),
        fps: Some(record.fps),
        width: Some(record.width),
        height: Some(record.height),
        partition: Some(record.partition),
        ..Default::default()
    };
    let mut spec = entry.resolve(defaults)?;
    spec.start_seq = start_seq;
    Ok(spec)
}

#[derive(Debug, Clone)]
struct Running {
    epoch: u64,
    load: f64,
}

#[derive(Default)]
struct State {
    /// Cameras this node runs under a grant, with the grant's epoch.
    running: BTreeMap<String, Running>,
    /// Next sequence number of cameras this node ran and stopped: never published again.
    seq_floor: BTreeMap<String, u64>,
    /// Grants already warned about (no record, bad record, other cluster), so each warns once.
    warned: BTreeSet<(String, u64, &'static str)>,
    /// Per camera: (when, frames) at the start of the current fps window, and the last fps.
    fps: BTreeMap<String, (Instant, u64, f64)>,
}

impl State {
    /// The number a camera continues from: above every number this node used, and at least
    /// where the grant starts it.
    fn next_seq(&self, g: &Grant) -> u64 {
        let floor = self.seq_floor.get(&g.item).copied().unwrap_or(0);
        floor.max(g.record.start_seq.unwrap_or(0))
    }
}

/// What running, stopping and handing over a camera means.
pub struct CameraRunner {
    node: Arc<IngestNode>,
    publisher: Arc<FramePublisher>,
    metrics: IngestMetrics,
    readiness: Readiness,
    defaults: CameraDefaults,
    region: String,
    /// Opens the camera passwords sealed in the registry (`None`: no keyring configured).
    camera_keys: Option<Keyring>,
    state: Mutex<State>,
}

/// The coordinator side of an ingest node.
pub struct Coordinator {
    driver: Driver<CameraRunner>,
    drain_timeout: Duration,
}

impl Coordinator {
    /// Registers the node with the coordinator, retrying while Redis cannot be reached, and
    /// starts following it. `None` when `cancel` fired first. `http` is the node's HTTP base
    /// URL.
    pub async fn start(
        config: &IngestConfig,
        http: String,
        node: Arc<IngestNode>,
        publisher: Arc<FramePublisher>,
        metrics: IngestMetrics,
        readiness: Readiness,
        cancel: &CancellationToken,
    ) -> Result<Option<Arc<Self>>, CoordError> {
        let c = &config.coordinator;
        // Fail closed: a configured keyring that cannot be read stops the node.
        let camera_keys = Keyring::load(c.camera_key_file.as_deref())
            .map_err(|e| CoordError::Invalid(e.to_string()))?;
        let member = MemberConfig::new(MemberKind::Ingest, &config.node_id, &c.redis)
            .placed(&config.region, &c.group, c.capacity)
            .classed(&c.node_class)
            .serving(
                c.advertise_http.clone().unwrap_or(http),
                &config.kafka.topic,
            )
            .timing(c.lease_ttl, c.poll_interval);
        readiness.set("coordinator", false, "not registered yet");
        let agent_cancel = CancellationToken::new();
        let Some((agent, thread)) =
            register(member, agent_cancel.clone(), &readiness, cancel).await?
        else {
            return Ok(None);
        };
        let redis = redact_text(&c.redis.redis_url);
        tracing::info!(redis = %redis, group = %c.group, capacity = c.capacity, "registered with the coordinator");
        readiness.set("coordinator", true, "registered");
        publisher.set_fence(agent.fence());
        let runner = Arc::new(CameraRunner {
            node,
            publisher,
            metrics,
            readiness,
            defaults: config.camera_defaults.clone(),
            region: config.region.clone(),
            camera_keys,
            state: Mutex::new(State::default()),
        });
        let cfg = DriverConfig {
            fail_closed_after: Some(c.lease_ttl * 3 / 4),
            ..DriverConfig::new(c.handover_flush_timeout)
        };
        let driver = Driver::start(agent, agent_cancel, thread, runner, cfg)?;
        Ok(Some(Arc::new(Self {
            driver,
            drain_timeout: c.drain_timeout,
        })))
    }

    /// Follows the coordinator until `shutdown` fires, then drains: returns once no camera
    /// is held any more or `drain_timeout` passed, with the driver stopped (nothing starts
    /// any more).
    pub async fn drive(self: &Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            if let Some(other) = self.replaced() {
                tracing::error!(other_session = %other, "this node's member id was taken over by another process: shutting down");
                break;
            }
        }
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            me.driver.drain(me.drain_timeout, || false);
            me.driver.stop();
        })
        .await;
    }

    /// After the cameras stopped and the producer flushed: releases every camera still held,
    /// with its next sequence number (so its next owner continues it without a gap), then
    /// ends the membership (the agent deletes the member record). Blocking parts run off the
    /// runtime.
    pub async fn finish(self: &Arc<Self>, stopped: Vec<CameraStatus>) {
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let runner = me.driver.runner();
            let mut st = runner.state();
            for s in stopped {
                st.seq_floor.insert(s.id.clone(), s.next_seq);
            }
            // Replaced: the member id (and whatever is granted to it) is another process's.
            let held = if me.replaced().is_some() {
                Vec::new()
            } else {
                me.driver.held()
            };
            for g in held {
                let next_seq = st.next_seq(&g);
                match me.driver.agent().release(&g.item, g.epoch(), Some(next_seq)) {
                    Ok(true) => {
                        runner.metrics.handovers.with_label_values(&["shutdown"]).inc();
                        tracing::info!(camera = %g.item, next_seq, "camera released at shutdown");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(camera = %g.item, error = %redact_text(&e.to_string()), "release at shutdown failed")
                    }
                }
            }
            drop(st);
            me.driver.end_membership();
        })
        .await;
    }
}

impl Coordinator {
    /// The session of the process that took this node's member id over, if one did.
    pub fn replaced(&self) -> Option<String> {
        self.driver.agent().replaced()
    }

    /// The node's lease fence.
    pub fn fence(&self) -> Arc<LeaseFence> {
        self.driver.agent().fence()
    }
}

/// Starts the member agent, retrying every second while Redis cannot be reached; `None`
/// when `cancel` fired first.
async fn register(
    member: MemberConfig,
    agent_cancel: CancellationToken,
    readiness: &Readiness,
    cancel: &CancellationToken,
) -> Result<Option<(MemberAgent, std::thread::JoinHandle<()>)>, CoordError> {
    let redis = redact_text(&member.redis.redis_url);
    loop {
        let (m, ac) = (member.clone(), agent_cancel.clone());
        let started = tokio::task::spawn_blocking(move || MemberAgent::start(m, ac))
            .await
            .map_err(|e| CoordError::Invalid(format!("member start task: {e}")))?;
        match started {
            Ok(pair) => return Ok(Some(pair)),
            Err(e) if e.is_retryable() => {
                tracing::warn!(redis = %redis, error = %redact_text(&e.to_string()), "coordinator unreachable; retrying");
                readiness.set("coordinator", false, redact_text(&e.to_string()));
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(None),
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

impl CameraRunner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn broker_ok(&self) -> bool {
        self.readiness.snapshot().get("kafka").is_some_and(|c| c.ok)
    }

    /// The specs of the grants this node can run (warning once about those it cannot), and
    /// the cameras to restart because a new grant starts beyond their sequence (with where).
    fn wanted(&self, grants: &[Grant], desired: &Desired) -> (Vec<CameraSpec>, Vec<(String, u64)>) {
        let mut st = self.state();
        let mut wanted = Vec::new();
        let mut restart = Vec::new();
        let mut running = BTreeMap::new();
        for g in grants {
            let id = &g.item;
            if let Some(cluster) = &g.record.cluster
                && cluster != &self.region
                && st.warned.insert((id.clone(), g.epoch(), "cluster"))
            {
                tracing::warn!(camera = %id, cluster = %cluster, region = %self.region,
                    "grant routes the camera to another region's Kafka; this node publishes to its own");
            }
            let Some(record) = desired.cameras.get(id) else {
                if st.warned.insert((id.clone(), g.epoch(), "record")) {
                    tracing::warn!(camera = %id, "granted camera has no registry record: not started");
                }
                continue;
            };
            let record = match record.opened(self.camera_keys.as_ref()) {
                Ok(r) => r,
                Err(e) => {
                    if st.warned.insert((id.clone(), g.epoch(), "credentials")) {
                        self.metrics
                            .credential_errors
                            .with_label_values(&[e.reason()])
                            .inc();
                        tracing::error!(camera = %id, error = %e, "granted camera's password cannot be opened: not started");
                    }
                    continue;
                }
            };
            let start = st.next_seq(g);
            match spec_from_record(&record, &self.defaults, start) {
                Ok(spec) => {
                    // Granted again at a higher epoch while running (e.g. after a lost
                    // lease): keep running unless the grant starts beyond our sequence.
                    if let Some(prev) = st.running.get(id)
                        && prev.epoch != g.epoch()
                        && self.node.status(id).is_some_and(|s| s.next_seq < start)
                    {
                        restart.push((id.clone(), start));
                    }
                    let load = record.load();
                    running.insert(
                        id.clone(),
                        Running {
                            epoch: g.epoch(),
                            load,
                        },
                    );
                    wanted.push(spec);
                }
                Err(e) => {
                    if st.warned.insert((id.clone(), g.epoch(), "spec")) {
                        tracing::warn!(camera = %id, error = %e, "granted camera has an unusable record: not started");
                    }
                }
            }
        }
        st.running = running;
        (wanted, restart)
    }

    /// Stops cameras at once (teardowns overlap), remembering their next numbers.
    fn stop_cameras(&self, ids: &[String]) -> Vec<CameraStatus> {
        let stopped = self.node.stop_many(ids);
        let mut st = self.state();
        for s in &stopped {
            st.seq_floor.insert(s.id.clone(), s.next_seq);
            st.fps.remove(&s.id);
            st.running.remove(&s.id);
            self.publisher.set_owner_epoch(&s.id, None);
        }
        stopped
    }
}

impl ItemRunner for CameraRunner {
    fn running(&self) -> BTreeMap<String, u64> {
        let st = self.state();
        self.node
            .ids()
            .into_iter()
            .map(|id| {
                let epoch = st.running.get(&id).map_or(0, |r| r.epoch);
                (id, epoch)
            })
            .collect()
    }

    fn stop(&self, items: &[String]) {
        for s in self.stop_cameras(items) {
            tracing::info!(camera = %s.id, next_seq = s.next_seq, "camera no longer granted: stopped");
        }
    }

    fn run(&self, grants: &[Grant], desired: &Desired) {
        let (wanted, restart) = self.wanted(grants, desired);
        for (id, start) in restart {
            tracing::info!(camera = %id, start_seq = start, "re-granted beyond this node's sequence: restarting");
            if let Some(s) = self.node.stop(&id) {
                self.state().seq_floor.insert(id, s.next_seq.max(start));
            }
        }
        // A granted camera this node cannot run (its record went or became unusable) must
        // not keep running.
        let ids: BTreeSet<&str> = wanted.iter().map(|s| s.id.as_str()).collect();
        let unusable: Vec<String> = grants
            .iter()
            .map(|g| g.item.clone())
            .filter(|id| !ids.contains(id.as_str()) && self.node.status(id).is_some())
            .collect();
        if !unusable.is_empty() {
            self.stop(&unusable);
        }
        for spec in wanted {
            // Before the camera runs at this grant: its frames carry the grant's epoch.
            let epoch = self.state().running.get(&spec.id).map(|r| r.epoch);
            self.publisher.set_owner_epoch(&spec.id, epoch);
            let id = spec.id.clone();
            if let Err(e) = self.node.upsert(spec) {
                tracing::error!(error = %e, "could not start a granted camera");
            }
            // The leader's degradation cap (in the grant's record), applied in place.
            let cap = grants
                .iter()
                .find(|g| g.item == id)
                .and_then(|g| g.record.fps_cap);
            self.node.set_rate_cap(&id, cap);
        }
    }

    fn hand_over(&self, grant: &Grant, _ran: bool, timeout: Duration) -> Prepared {
        let id = &grant.item;
        self.stop_cameras(std::slice::from_ref(id));
        let wait = if self.broker_ok() {
            timeout
        } else {
            timeout.min(UNREACHABLE_FLUSH)
        };
        let delivered = self.publisher.wait_delivered(id, wait);
        let next_seq = self.state().next_seq(grant);
        Prepared::Ready {
            next_seq: Some(next_seq),
            complete: delivered,
        }
    }

    fn handed_over(&self, grant: &Grant, _ran: bool, outcome: HandoverOutcome) {
        let id = &grant.item;
        let (result, next_seq) = match outcome {
            HandoverOutcome::Released { next_seq, complete } => {
                (if complete { "ok" } else { "undelivered" }, next_seq)
            }
            HandoverOutcome::Superseded { next_seq } => ("superseded", next_seq),
            HandoverOutcome::ReleaseFailed(e) => {
                // The camera stays stopped; a later pass retries the release.
                tracing::warn!(camera = %id, error = %redact_text(&e.to_string()), "release failed; retrying");
                self.metrics.handovers.with_label_values(&["error"]).inc();
                return;
            }
            HandoverOutcome::TimedOut | HandoverOutcome::Failed => return,
        };
        self.metrics.handovers.with_label_values(&[result]).inc();
        self.publisher.forget(id);
        tracing::info!(camera = %id, epoch = grant.epoch(), next_seq, target = ?grant.record.target, result, "camera handed over");
    }

    fn report(&self, desired: &Desired) -> Report {
        let statuses = self.node.statuses();
        let mut st = self.state();
        let now = Instant::now();
        let mut cams = serde_json::Map::new();
        let mut load = 0.0;
        for s in &statuses {
            let entry = st.fps.entry(s.id.clone()).or_insert((now, s.frames, 0.0));
            let dt = now.duration_since(entry.0);
            if dt >= FPS_WINDOW {
                entry.2 = s.frames.saturating_sub(entry.1) as f64 / dt.as_secs_f64();
                *entry = (now, s.frames, entry.2);
            }
            let fps = (entry.2 * 100.0).round() / 100.0;
            let r = st.running.get(&s.id);
            load += r.map_or(0.0, |r| r.load);
            cams.insert(
                s.id.clone(),
                serde_json::json!({
                    "state": s.state,
                    "fps": fps,
                    "next_seq": s.next_seq,
                    "epoch": r.map(|r| r.epoch),
                    "last_error_kind": s.last_error_kind,
                }),
            );
        }
        drop(st);
        let connected = desired.connected;
        let why = if connected {
            "connected"
        } else {
            "redis unreachable"
        };
        self.readiness.set("coordinator", connected, why);
        Report {
            load,
            report: serde_json::json!({ "cameras": cams }),
            broker_ok: Some(self.broker_ok()),
        }
    }

    fn lease_lost(&self, n: u64) {
        self.metrics.lease_lost.inc_by(n);
    }
}
