//! Coordinator mode: the node's cameras come from the coordinator at run time.
//!
//! The node runs a [`MemberAgent`] (its lease, load and report in Redis) and follows the
//! [`Desired`] snapshots the agent publishes:
//!
//! - a camera granted to this node is started from its registry record
//!   ([`CameraRecord`]: URL with credentials, fps, analytic box, partition) and the node's
//!   `camera_defaults`, at sequence number `max(start_seq of the grant, the next number this
//!   node would have used)`, so a number is never published twice from here;
//! - a camera the coordinator asks to move (`target` set) is handed over: stopped (its thread
//!   joined, so it publishes nothing more), its frames waited for until the broker
//!   acknowledged them (bounded by `handover_flush_timeout`), then released with its next
//!   sequence number, which the next owner starts from;
//! - a camera no longer granted (taken away, or granted elsewhere after this node's lease
//!   expired) is stopped at once;
//! - while Redis cannot be reached for ¾ of the lease TTL (renewals come every ¼, so the
//!   lease may have expired by then) the node assumes its cameras are being moved and stops
//!   them all (fail closed); they start again once the records are readable and still name it.
//!
//! Every ~500 ms it reports its load (the configured load of its running cameras), a
//! per-camera report (state, measured fps, next sequence number) and whether its broker
//! answers. On shutdown it drains: marks itself draining, keeps handing cameras over as the
//! coordinator moves them until none is left or `drain_timeout` passes; the caller then
//! stops the rest, flushes the producer, and [`Coordinator::finish`] releases what is left
//! (with next sequence numbers) and ends the membership last.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use panoptes_coordinator_client::{
    CameraRecord, CoordError, Desired, Grant, MemberAgent, MemberConfig, MemberKind,
};
use panoptes_runtime::health::Readiness;
use panoptes_runtime::redact::redact_text;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::camera::CameraStatus;
use crate::config::{CameraConfig, CameraConfigError, CameraDefaults, CameraSpec, IngestConfig};
use crate::metrics::IngestMetrics;
use crate::node::IngestNode;
use crate::publisher::FramePublisher;

/// How often the node reports to the coordinator (and re-checks its assignment).
const REPORT_EVERY: Duration = Duration::from_millis(500);
/// Window over which the reported fps is measured.
const FPS_WINDOW: Duration = Duration::from_secs(2);

/// Resolves a registry record into the spec the camera runs with: the record gives id, URL,
/// fps, analytic box and partition; the node's `camera_defaults` the rest.
pub fn spec_from_record(
    record: &CameraRecord,
    defaults: &CameraDefaults,
    start_seq: u64,
) -> Result<CameraSpec, CameraConfigError> {
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
    /// Grants handed over: ignored until the snapshot no longer shows them.
    released: BTreeSet<(String, u64)>,
    /// Next sequence number of cameras this node ran and stopped: never published again.
    seq_floor: BTreeMap<String, u64>,
    /// Grants already warned about (no record, bad record, other cluster), so each warns once.
    warned: BTreeSet<(String, u64, &'static str)>,
    /// Since when Redis has been unreachable.
    disconnected_since: Option<Instant>,
    /// Whether the cameras were stopped because Redis was unreachable past the lease TTL.
    fenced: bool,
    /// Per camera: (when, frames) at the start of the current fps window, and the last fps.
    fps: BTreeMap<String, (Instant, u64, f64)>,
    /// Leases lost already counted in the metric.
    leases_lost_seen: u64,
}

/// The coordinator side of an ingest node.
pub struct Coordinator {
    agent: MemberAgent,
    agent_cancel: CancellationToken,
    agent_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    node: Arc<IngestNode>,
    publisher: Arc<FramePublisher>,
    metrics: IngestMetrics,
    readiness: Readiness,
    defaults: CameraDefaults,
    region: String,
    lease_ttl: Duration,
    drain_timeout: Duration,
    handover_flush_timeout: Duration,
    state: Mutex<State>,
}

impl Coordinator {
    /// Registers the node with the coordinator, retrying while Redis cannot be reached.
    /// `None` when `cancel` fired first. `http` is the node's HTTP base URL.
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
        let member = MemberConfig {
            redis_url: c.redis_url.clone(),
            kind: MemberKind::Ingest,
            id: config.node_id.clone(),
            region: config.region.clone(),
            group: c.group.clone(),
            capacity: c.capacity,
            http: c.advertise_http.clone().unwrap_or(http),
            frames_topic: config.kafka.topic.clone(),
            lease_ttl: c.lease_ttl,
            poll_interval: c.poll_interval,
        };
        readiness.set("coordinator", false, "not registered yet");
        let redis = redact_text(&c.redis_url);
        let agent_cancel = CancellationToken::new();
        let (agent, thread) = loop {
            let (m, ac) = (member.clone(), agent_cancel.clone());
            let started = tokio::task::spawn_blocking(move || MemberAgent::start(m, ac))
                .await
                .map_err(|e| CoordError::Invalid(format!("member start task: {e}")))?;
            match started {
                Ok(pair) => break pair,
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
        };
        tracing::info!(redis = %redis, group = %c.group, capacity = c.capacity, "registered with the coordinator");
        readiness.set("coordinator", true, "registered");
        Ok(Some(Arc::new(Self {
            agent,
            agent_cancel,
            agent_thread: Mutex::new(Some(thread)),
            node,
            publisher,
            metrics,
            readiness,
            defaults: config.camera_defaults.clone(),
            region: config.region.clone(),
            lease_ttl: c.lease_ttl,
            drain_timeout: c.drain_timeout,
            handover_flush_timeout: c.handover_flush_timeout,
            state: Mutex::new(State::default()),
        })))
    }

    /// How long after Redis became unreachable the node stops its cameras: the lease
    /// expires at most `lease_ttl` after the last renewal, and renewals come every
    /// `lease_ttl / 4`, so by then the lease may have expired and the coordinator may be
    /// granting the cameras elsewhere.
    fn fence_after(&self) -> Duration {
        self.lease_ttl * 3 / 4
    }

    /// When the node must stop its cameras if Redis stays unreachable.
    fn fence_at(&self) -> Option<tokio::time::Instant> {
        let st = self.state();
        match st.disconnected_since {
            Some(t) if !st.fenced => Some((t + self.fence_after()).into()),
            _ => None,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Follows the coordinator until `shutdown` fires, then drains: returns once no camera
    /// is held any more or `drain_timeout` passed.
    pub async fn drive(self: &Arc<Self>, shutdown: CancellationToken) {
        let mut rx = self.agent.subscribe();
        let mut tick = tokio::time::interval(REPORT_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        loop {
            let fence_at = self.fence_at();
            tokio::select! {
                r = rx.changed() => if r.is_err() {
                    tracing::warn!("member agent stopped");
                    return;
                },
                _ = tick.tick() => {}
                _ = shutdown.cancelled(), if drain_deadline.is_none() => {
                    tracing::info!(timeout = ?self.drain_timeout, "draining: waiting for the coordinator to move this node's cameras");
                    let a = self.agent.clone();
                    let _ = tokio::task::spawn_blocking(move || a.set_draining(true)).await;
                    drain_deadline = Some(tokio::time::Instant::now() + self.drain_timeout);
                }
                _ = sleep_until(drain_deadline) => {}
                _ = sleep_until(fence_at) => {}
            }
            self.step(&mut rx).await;
            if let Some(deadline) = drain_deadline {
                let held = self.held();
                if held.is_empty() {
                    tracing::info!("drained: every camera was handed over");
                    return;
                }
                if tokio::time::Instant::now() >= deadline {
                    tracing::warn!(cameras = ?held, "drain timeout: stopping the cameras still held");
                    return;
                }
            }
        }
    }

    async fn step(self: &Arc<Self>, rx: &mut watch::Receiver<Desired>) {
        let desired = rx.borrow_and_update().clone();
        let me = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || me.reconcile(&desired)).await {
            tracing::error!(error = %e, "reconcile task failed");
        }
        self.report();
    }

    /// Camera ids this node still holds (granted, not released).
    fn held(&self) -> Vec<String> {
        let desired = self.agent.desired();
        let st = self.state();
        desired
            .grants
            .values()
            .filter(|g| !st.released.contains(&(g.item.clone(), g.epoch())))
            .map(|g| g.item.clone())
            .collect()
    }

    /// Makes the running cameras match `desired`. Blocking.
    fn reconcile(&self, desired: &Desired) {
        let mut st = self.state();
        st.released
            .retain(|(id, ep)| desired.grants.get(id).is_some_and(|g| g.epoch() == *ep));

        // Fail closed: without Redis for longer than the lease, the cameras are probably
        // someone else's by now.
        if desired.connected {
            st.disconnected_since = None;
        } else if st.disconnected_since.is_none() {
            st.disconnected_since = Some(Instant::now());
        }
        let fence = st
            .disconnected_since
            .is_some_and(|t| t.elapsed() >= self.fence_after());
        if fence != st.fenced {
            st.fenced = fence;
            if fence {
                tracing::error!(
                    "coordinator unreachable for most of the lease TTL: stopping every camera"
                );
            } else {
                tracing::info!("coordinator reachable again: resuming granted cameras");
            }
        }

        let mut wanted: Vec<CameraSpec> = Vec::new();
        let mut running: BTreeMap<String, Running> = BTreeMap::new();
        let mut moving: Vec<&Grant> = Vec::new();
        if !fence {
            for g in desired.grants.values() {
                let id = &g.item;
                if st.released.contains(&(id.clone(), g.epoch())) {
                    continue;
                }
                if g.moving() {
                    moving.push(g);
                    continue;
                }
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
                let floor = st.seq_floor.get(id).copied().unwrap_or(0);
                let start = g.record.start_seq.unwrap_or(0).max(floor);
                match spec_from_record(record, &self.defaults, start) {
                    Ok(spec) => {
                        // Granted again at a higher epoch while running (e.g. after a lost
                        // lease): keep running unless the grant starts beyond our sequence.
                        if let Some(prev) = st.running.get(id)
                            && prev.epoch != g.epoch()
                            && self.node.status(id).is_some_and(|s| s.next_seq < start)
                        {
                            tracing::info!(camera = %id, start_seq = start, "re-granted beyond this node's sequence: restarting");
                            if let Some(s) = self.node.stop(id) {
                                st.seq_floor.insert(id.clone(), s.next_seq.max(start));
                            }
                        }
                        running.insert(
                            id.clone(),
                            Running {
                                epoch: g.epoch(),
                                load: record.load(),
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
        }

        // Stop what is no longer ours, and what moves, all at once (teardowns overlap).
        let wanted_ids: BTreeSet<&str> = wanted.iter().map(|s| s.id.as_str()).collect();
        let stop: Vec<String> = self
            .node
            .ids()
            .into_iter()
            .filter(|id| !wanted_ids.contains(id.as_str()))
            .collect();
        let stopped: BTreeMap<String, CameraStatus> = if stop.is_empty() {
            BTreeMap::new()
        } else {
            self.node
                .stop_many(&stop)
                .into_iter()
                .map(|s| (s.id.clone(), s))
                .collect()
        };
        for (id, s) in &stopped {
            st.seq_floor.insert(id.clone(), s.next_seq);
            st.fps.remove(id);
            if !moving.iter().any(|g| &g.item == id) {
                tracing::info!(camera = %id, next_seq = s.next_seq, "camera no longer granted: stopped");
            }
        }

        // Hand over what moves: frames delivered, then release with the next sequence.
        if !moving.is_empty() {
            // With the broker unreachable (the usual reason to move cameras across regions)
            // waiting is pointless: the producer keeps the frames and delivers them to this
            // region's Kafka once it is back; the camera must stream elsewhere now.
            let broker_ok = self.readiness.snapshot().get("kafka").is_some_and(|c| c.ok);
            let wait = if broker_ok {
                self.handover_flush_timeout
            } else {
                self.handover_flush_timeout.min(Duration::from_millis(250))
            };
            let deadline = Instant::now() + wait;
            for g in &moving {
                let id = &g.item;
                let delivered = self
                    .publisher
                    .wait_delivered(id, deadline.saturating_duration_since(Instant::now()));
                let next_seq = st
                    .seq_floor
                    .get(id)
                    .copied()
                    .unwrap_or(0)
                    .max(g.record.start_seq.unwrap_or(0));
                let result = match self.agent.release(id, g.epoch(), Some(next_seq)) {
                    Ok(true) if delivered => "ok",
                    Ok(true) => "undelivered",
                    Ok(false) => "superseded",
                    Err(e) => {
                        // The camera stays stopped; the next pass retries the release.
                        tracing::warn!(camera = %id, error = %redact_text(&e.to_string()), "release failed; retrying");
                        self.metrics.handovers.with_label_values(&["error"]).inc();
                        continue;
                    }
                };
                self.metrics.handovers.with_label_values(&[result]).inc();
                st.released.insert((id.clone(), g.epoch()));
                self.publisher.forget(id);
                tracing::info!(camera = %id, epoch = g.epoch(), next_seq, target = ?g.record.target, result, "camera handed over");
            }
        }

        if let Err(e) = self.node.apply(wanted) {
            tracing::error!(error = %e, "could not start a granted camera");
        }
        st.running = running;
    }

    /// Reports load, per-camera status, broker and coordinator health. Cheap: no I/O.
    fn report(&self) {
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
        let lost = self.agent.leases_lost();
        if lost > st.leases_lost_seen {
            self.metrics.lease_lost.inc_by(lost - st.leases_lost_seen);
            st.leases_lost_seen = lost;
        }
        drop(st);
        self.agent.set_load(load);
        self.agent
            .set_report(serde_json::json!({ "cameras": cams }));
        let broker_ok = self.readiness.snapshot().get("kafka").is_some_and(|c| c.ok);
        self.agent.set_broker_ok(broker_ok);
        let connected = self.agent.desired().connected;
        self.readiness.set(
            "coordinator",
            connected,
            if connected {
                "connected"
            } else {
                "redis unreachable"
            },
        );
    }

    /// After the cameras stopped and the producer flushed: releases every camera still held,
    /// with its next sequence number (so its next owner continues it without a gap), then
    /// ends the membership (the agent deletes the member record). Blocking parts run off the
    /// runtime.
    pub async fn finish(self: &Arc<Self>, stopped: Vec<CameraStatus>) {
        let me = self.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let desired = me.agent.desired();
            let mut st = me.state();
            for s in stopped {
                st.seq_floor.insert(s.id.clone(), s.next_seq);
            }
            for g in desired.grants.values() {
                if st.released.contains(&(g.item.clone(), g.epoch())) {
                    continue;
                }
                let next_seq = st
                    .seq_floor
                    .get(&g.item)
                    .copied()
                    .unwrap_or(0)
                    .max(g.record.start_seq.unwrap_or(0));
                match me.agent.release(&g.item, g.epoch(), Some(next_seq)) {
                    Ok(true) => {
                        me.metrics.handovers.with_label_values(&["shutdown"]).inc();
                        tracing::info!(camera = %g.item, next_seq, "camera released at shutdown");
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(camera = %g.item, error = %redact_text(&e.to_string()), "release at shutdown failed")
                    }
                }
            }
            drop(st);
            me.agent_cancel.cancel();
            let thread = me
                .agent_thread
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(t) = thread {
                let _ = t.join();
            }
        })
        .await;
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
