//! [`MemberAgent`]: the thread an ingest or worker node runs to take part in coordination.
//!
//! It registers the node (hash `panoptes:member:<kind>:<id>` with a TTL: the node's lease),
//! renews it every `lease_ttl / 4` with the node's current load and report, and reads the
//! node's assignments: the items in `panoptes:owned:<kind>:<id>` whose record still names
//! this node. It re-reads them when the coordinator publishes on the node's channel and at
//! least every `poll_interval`, because pub/sub messages can be late or lost. The result is
//! published as a [`Desired`] snapshot through a `tokio::sync::watch` channel, which both
//! threads and async tasks can read; threads wait for changes with
//! [`MemberAgent::wait_change`]. The node's [`crate::driver::Driver`] compares it with what
//! runs, starts what was granted, drops what was taken away, and hands over (finish, commit,
//! [`MemberAgent::release`]) what the coordinator asks to move.
//!
//! Everything here is synchronous Redis on the agent's own thread: nothing blocks a runtime.
//!
//! **Sessions.** Every process draws a random session id, written into its lease hash. Each
//! renewal is a Lua script ([`scripts::member_renew`]) that writes only while the hash holds
//! no other session: a second process started with the same member id finds the first one's
//! session and, if that lease is still being renewed after waiting out one lease (a crashed
//! predecessor's lease simply expires meanwhile), fails at start with an error naming the id
//! and the other session ([`MemberAgent::start`]). A running process whose renewal finds
//! another session (it was paused past its lease and a new process took the id) has been
//! replaced: it stops renewing, closes its [`LeaseFence`] and reports it
//! ([`MemberAgent::replaced`]); leaving deletes the hash only while it holds its own session.
//!
//! **Lease fence.** After each successful renewal the agent extends its [`LeaseFence`] to
//! `sent_at + lease_ttl − margin` on the monotonic clock (see [`lease`]): whatever acts for
//! the member (an ingest node's publisher) stops when it lapses, before Redis expires the
//! lease, whether or not anything noticed. A renewal that finds the lease expired
//! re-registers but leaves the fence closed until the next renewal (`lease_ttl / 4` later),
//! by which time the driver has stopped the items that were moved meanwhile.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use redis::Connection;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use panoptes_runtime::config::RedisClientConfig;

use crate::records::{AssignRecord, CameraRecord, MemberKind, MemberRecord, RegionRecord};
use crate::scripts::Renewal;
use crate::{CoordError, RedisLink, keys, scripts};

pub mod lease;

pub use lease::LeaseFence;

/// How a node takes part in coordination.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    /// How to reach Redis (URL, TLS files, ACL user and password file).
    pub redis: RedisClientConfig,
    /// Ingest or worker.
    pub kind: MemberKind,
    /// Node id, unique per kind.
    pub id: String,
    /// Region the node runs in.
    pub region: String,
    /// Worker group or ingest pool.
    pub group: String,
    /// Capacity in load units (frames/s at 640×360).
    pub capacity: f64,
    /// Node class, priced by the coordinator's `[cost]` (default
    /// [`crate::records::default_node_class`] of the kind).
    pub node_class: String,
    /// The node's HTTP base URL.
    pub http: String,
    /// Frames topic (names partition assignment keys).
    pub frames_topic: String,
    /// Lease TTL; the coordinator treats the node as dead this long after its last renewal.
    pub lease_ttl: Duration,
    /// Longest time between two reads of the assignments.
    pub poll_interval: Duration,
}

impl MemberConfig {
    /// A member of `kind` named `id`, coordinating through `redis` (the node's
    /// [`RedisClientConfig`], or a bare URL in tests), with the protocol's defaults: no
    /// region, group `default`, capacity 0, the kind's default node class, lease TTL 1 s,
    /// polled every 500 ms, frames topic `panoptes.frames`. The other methods set the rest.
    pub fn new(kind: MemberKind, id: &str, redis: impl Into<RedisClientConfig>) -> Self {
        Self {
            redis: redis.into(),
            kind,
            id: id.to_string(),
            region: String::new(),
            group: "default".into(),
            capacity: 0.0,
            node_class: crate::records::default_node_class(kind).to_string(),
            http: String::new(),
            frames_topic: "panoptes.frames".into(),
            lease_ttl: Duration::from_secs(1),
            poll_interval: Duration::from_millis(500),
        }
    }

    /// Where the member is placed: its region, group (worker group or ingest pool) and
    /// capacity in load units.
    pub fn placed(mut self, region: &str, group: &str, capacity: f64) -> Self {
        self.region = region.to_string();
        self.group = group.to_string();
        self.capacity = capacity;
        self
    }

    /// The node's class (what the coordinator's `[cost]` prices); an empty one keeps the
    /// kind's default.
    pub fn classed(mut self, node_class: &str) -> Self {
        if !node_class.trim().is_empty() {
            self.node_class = node_class.trim().to_string();
        }
        self
    }

    /// The member's HTTP base URL and the frames topic (which names partition items' keys).
    pub fn serving(mut self, http: String, frames_topic: &str) -> Self {
        self.http = http;
        self.frames_topic = frames_topic.to_string();
        self
    }

    /// Its lease TTL and the longest time between two reads of its assignments.
    pub fn timing(mut self, lease_ttl: Duration, poll_interval: Duration) -> Self {
        self.lease_ttl = lease_ttl;
        self.poll_interval = poll_interval;
        self
    }
}

/// One item this node holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Item id: `<cluster>:<partition>` for workers, the camera id for ingest nodes.
    pub item: String,
    /// The record as read.
    pub record: AssignRecord,
}

impl Grant {
    /// The epoch this node holds the item at.
    pub fn epoch(&self) -> u64 {
        self.record.epoch
    }

    /// Whether the coordinator asks this node to hand the item over.
    pub fn moving(&self) -> bool {
        self.record.target.is_some() && self.record.released != Some(self.record.epoch)
    }

    /// `(cluster, partition)` of a worker's item.
    pub fn partition(&self) -> Option<(&str, i32)> {
        keys::parse_partition_item(&self.item)
    }
}

/// What the coordinator wants this node to run, as last read from Redis.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Desired {
    /// Items granted to this node (records naming it as owner), by item id. Items it has
    /// already released are left out.
    pub grants: BTreeMap<String, Grant>,
    /// Whether an operator asked this node to drain.
    pub drain_requested: bool,
    /// Regions and their Kafka.
    pub regions: BTreeMap<String, RegionRecord>,
    /// Ingest nodes: the registry records of the granted cameras.
    pub cameras: BTreeMap<String, CameraRecord>,
    /// Whether the last read reached Redis (when `false` the rest is the last good read).
    pub connected: bool,
    /// How many reads were made (changes on every successful read only when content changed).
    pub generation: u64,
}

#[derive(Debug)]
struct Status {
    load: f64,
    capacity: f64,
    report: serde_json::Value,
    broker_ok: bool,
    draining: bool,
    model: String,
}

struct Inner {
    cfg: MemberConfig,
    link: RedisLink,
    session: String,
    status: Mutex<Status>,
    conn: Mutex<Option<Connection>>,
    desired: watch::Sender<Desired>,
    /// Counts changes of `desired` and local pokes, for threads that wait on them
    /// ([`MemberAgent::wait_change`]).
    changes: Mutex<u64>,
    changed: Condvar,
    leases_lost: AtomicU64,
    registered: AtomicBool,
    renew_failures: AtomicU64,
    /// Until when the lease holds (extended after each successful renewal).
    fence: Arc<LeaseFence>,
    /// The session that replaced this process's, once a renewal found it.
    replaced: Mutex<Option<String>>,
    /// Highest epoch this process has held each item at, reported with every renewal
    /// (`records::HELD_FIELD`): a leader facing an emptied Redis grants above it.
    held: Mutex<BTreeMap<String, u64>>,
}

/// The node's handle on its membership. Cheap to clone.
#[derive(Clone)]
pub struct MemberAgent {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MemberAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberAgent")
            .field("kind", &self.inner.cfg.kind)
            .field("id", &self.inner.cfg.id)
            .finish_non_exhaustive()
    }
}

impl MemberAgent {
    /// Registers the node (failing if Redis cannot be reached now) and starts the agent
    /// thread, which runs until `cancel` fires and then removes the node's record, so the
    /// coordinator moves what is left at once. Fails with [`CoordError::Invalid`] naming the
    /// id and the other session when another live process holds the member id (after
    /// waiting up to two lease TTLs for a crashed predecessor's lease to expire). Blocking:
    /// call off the async runtime.
    pub fn start(
        cfg: MemberConfig,
        cancel: CancellationToken,
    ) -> Result<(Self, std::thread::JoinHandle<()>), CoordError> {
        if cfg.id.is_empty() || cfg.id.contains(':') {
            return Err(CoordError::Invalid(format!(
                "member id {:?} must be non-empty and without ':'",
                cfg.id
            )));
        }
        let link = RedisLink::open(&cfg.redis)?;
        let (tx, _) = watch::channel(Desired::default());
        let agent = Self {
            inner: Arc::new(Inner {
                session: format!("{:016x}", rand::random::<u64>()),
                status: Mutex::new(Status {
                    load: 0.0,
                    capacity: cfg.capacity,
                    report: serde_json::Value::Null,
                    broker_ok: true,
                    draining: false,
                    model: String::new(),
                }),
                conn: Mutex::new(None),
                desired: tx,
                changes: Mutex::new(0),
                changed: Condvar::new(),
                leases_lost: AtomicU64::new(0),
                registered: AtomicBool::new(false),
                renew_failures: AtomicU64::new(0),
                fence: Arc::new(LeaseFence::new()),
                replaced: Mutex::new(None),
                held: Mutex::new(BTreeMap::new()),
                link,
                cfg,
            }),
        };
        let mut c = agent.inner.link.connect(agent.timeout())?;
        agent.claim(&mut c)?;
        agent.poll(&mut c)?;
        let a = agent.clone();
        let thread = std::thread::Builder::new()
            .name(format!("member-{}", agent.inner.cfg.id))
            .spawn(move || a.run(&cancel))
            .map_err(|e| CoordError::Invalid(format!("cannot start the member thread: {e}")))?;
        Ok((agent, thread))
    }

    /// The node's configuration.
    pub fn config(&self) -> &MemberConfig {
        &self.inner.cfg
    }

    /// A receiver of [`Desired`] snapshots.
    pub fn subscribe(&self) -> watch::Receiver<Desired> {
        self.inner.desired.subscribe()
    }

    /// The last snapshot.
    pub fn desired(&self) -> Desired {
        self.inner.desired.borrow().clone()
    }

    /// Sets the load reported with the next renewal.
    pub fn set_load(&self, load: f64) {
        self.inner.status.lock().load = load;
    }

    /// Sets the capacity reported with the next renewal (e.g. after measuring it).
    pub fn set_capacity(&self, capacity: f64) {
        self.inner.status.lock().capacity = capacity;
    }

    /// Sets the free-form report shown by `panoptes status`.
    pub fn set_report(&self, report: serde_json::Value) {
        self.inner.status.lock().report = report;
    }

    /// Sets the model reported with each renewal (`<name>@<version>`, `records::MODEL_FIELD`).
    pub fn set_model(&self, model: &str) {
        self.inner.status.lock().model = model.to_owned();
    }

    /// Sets whether the node reaches its region's Kafka.
    pub fn set_broker_ok(&self, ok: bool) {
        self.inner.status.lock().broker_ok = ok;
    }

    /// Marks the node as draining (it wants to leave): the coordinator moves its items away
    /// and grants it nothing new. Renews at once.
    pub fn set_draining(&self, draining: bool) {
        self.inner.status.lock().draining = draining;
        self.wake();
    }

    /// How many times the node found its lease expired at renewal (it was paused or cut off
    /// longer than the TTL; its items were probably moved).
    pub fn leases_lost(&self) -> u64 {
        self.inner.leases_lost.load(Ordering::Relaxed)
    }

    /// Renewals that failed (Redis unreachable).
    pub fn renew_failures(&self) -> u64 {
        self.inner.renew_failures.load(Ordering::Relaxed)
    }

    /// The lease fence: holds until the last successful renewal's sent time plus the TTL
    /// (less a margin). Share it with whatever must stop acting for the member once the lease
    /// may have expired.
    pub fn fence(&self) -> Arc<LeaseFence> {
        self.inner.fence.clone()
    }

    /// This process's session id (written into its lease hash).
    pub fn session_id(&self) -> &str {
        &self.inner.session
    }

    /// The session of the process that took this member id over, once a renewal found it:
    /// this process no longer holds a lease and must stop.
    pub fn replaced(&self) -> Option<String> {
        self.inner.replaced.lock().clone()
    }

    /// Hands `item` over after finishing and committing its work at `epoch`; `next_seq` for
    /// cameras. `Ok(false)` when the node no longer holds it at that epoch. Blocking.
    pub fn release(
        &self,
        item: &str,
        epoch: u64,
        next_seq: Option<u64>,
    ) -> Result<bool, CoordError> {
        let cfg = &self.inner.cfg;
        let key = keys::assign_of(cfg.kind, &cfg.frames_topic, item)
            .ok_or_else(|| CoordError::Invalid(format!("bad item id {item:?}")))?;
        let released = self
            .with_conn(|c| scripts::release(c, cfg.kind, &key, &cfg.id, epoch, item, next_seq))?;
        tracing::info!(item, epoch, released, "item released");
        self.wake();
        Ok(released)
    }

    /// How many changes of the [`Desired`] snapshot (and [`MemberAgent::poke`]s) there were
    /// so far: pass it to [`MemberAgent::wait_change`].
    pub fn changes(&self) -> u64 {
        *self.inner.changes.lock()
    }

    /// Blocks until the count of changes differs from `seen` or `timeout` passes; returns
    /// the count. For threads, which cannot await the `watch` channel.
    pub fn wait_change(&self, seen: u64, timeout: Duration) -> u64 {
        let mut n = self.inner.changes.lock();
        if *n == seen {
            let _ = self.inner.changed.wait_for(&mut n, timeout);
        }
        *n
    }

    /// Wakes the threads in [`MemberAgent::wait_change`] without a change (no Redis call).
    pub fn poke(&self) {
        *self.inner.changes.lock() += 1;
        self.inner.changed.notify_all();
    }

    /// Makes the agent renew and re-read now.
    pub fn wake(&self) {
        let ch = keys::notify(self.inner.cfg.kind, &self.inner.cfg.id);
        let _ = self.with_conn(|c| {
            redis::cmd("PUBLISH")
                .arg(&ch)
                .arg("wake")
                .query::<i64>(c)
                .map_err(Into::into)
        });
    }

    fn timeout(&self) -> Duration {
        (self.inner.cfg.lease_ttl / 2).clamp(Duration::from_millis(100), Duration::from_secs(2))
    }

    fn with_conn<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, CoordError>,
    ) -> Result<T, CoordError> {
        let mut guard = self.inner.conn.lock();
        if guard.is_none() {
            *guard = Some(self.inner.link.connect(self.timeout())?);
        }
        let r = f(guard.as_mut().expect("opened above"));
        if matches!(r, Err(CoordError::Unavailable(_))) {
            *guard = None;
        }
        r
    }

    fn run(&self, cancel: &CancellationToken) {
        while !cancel.is_cancelled() && self.replaced().is_none() {
            if let Err(e) = self.session(cancel) {
                tracing::warn!(error = %e, "coordination session failed; reconnecting");
                self.inner.desired.send_modify(|d| d.connected = false);
                self.poke();
                std::thread::sleep(self.inner.cfg.poll_interval.min(Duration::from_millis(500)));
            }
        }
        match self.inner.link.connect(self.timeout()) {
            Ok(mut c) => {
                let cfg = &self.inner.cfg;
                self.inner.fence.revoke();
                match scripts::member_leave(&mut c, cfg.kind, &cfg.id, &self.inner.session) {
                    Ok(true) => tracing::info!("membership ended"),
                    Ok(false) => {
                        tracing::info!("membership ended (the id is held by another session)")
                    }
                    Err(e) => tracing::warn!(error = %e, "could not remove the member record"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not remove the member record"),
        }
    }

    /// One connected session: renew and poll on schedule, wake on pub/sub messages.
    fn session(&self, cancel: &CancellationToken) -> Result<(), CoordError> {
        let cfg = &self.inner.cfg;
        let mut c = self.inner.link.connect(self.timeout())?;
        let mut sub_conn = self.inner.link.connect(self.timeout())?;
        let mut sub = sub_conn.as_pubsub();
        sub.subscribe(keys::notify(cfg.kind, &cfg.id))?;
        let renew_every = cfg.lease_ttl / 4;
        let mut last_renew = Instant::now() - renew_every;
        let mut last_poll = Instant::now() - cfg.poll_interval;
        let mut woken = true;
        while !cancel.is_cancelled() {
            if last_renew.elapsed() >= renew_every || woken {
                match self.renew_or_replaced(&mut c) {
                    Ok(true) => {}
                    Ok(false) => return Ok(()),
                    Err(e) => {
                        self.inner.renew_failures.fetch_add(1, Ordering::Relaxed);
                        return Err(e);
                    }
                }
                last_renew = Instant::now();
            }
            if woken || last_poll.elapsed() >= cfg.poll_interval {
                self.poll(&mut c)?;
                last_poll = Instant::now();
            }
            let next = (last_renew + renew_every)
                .min(last_poll + cfg.poll_interval)
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(5))
                .min(Duration::from_millis(250));
            sub.set_read_timeout(Some(next))?;
            woken = match sub.get_message() {
                Ok(_) => true,
                Err(e) if e.is_timeout() => false,
                Err(e) => return Err(e.into()),
            };
        }
        Ok(())
    }

    /// Renews (or registers) the lease; `Some(session)` when another process holds the
    /// member id (nothing was written).
    fn renew(&self, c: &mut Connection) -> Result<Option<String>, CoordError> {
        let cfg = &self.inner.cfg;
        let record = {
            let s = self.inner.status.lock();
            MemberRecord {
                id: cfg.id.clone(),
                kind: cfg.kind,
                region: cfg.region.clone(),
                group: cfg.group.clone(),
                capacity: s.capacity,
                node_class: cfg.node_class.clone(),
                load: s.load,
                http: cfg.http.clone(),
                state: if s.draining { "draining" } else { "active" }.into(),
                broker_ok: s.broker_ok,
                session: self.inner.session.clone(),
                report: s.report.clone(),
                updated_ms: crate::now_ms(),
            }
        };
        let mut fields = record.to_fields();
        let held = crate::records::held_entry(&self.inner.held.lock());
        fields.push((crate::records::HELD_FIELD, held));
        let model = self.inner.status.lock().model.clone();
        fields.push((crate::records::MODEL_FIELD, model));
        let sent_at = Instant::now();
        let renewal = scripts::member_renew(
            c,
            cfg.kind,
            &cfg.id,
            &self.inner.session,
            cfg.lease_ttl.as_millis() as u64,
            &fields,
        )?;
        let existed = match renewal {
            Renewal::Renewed { existed } => existed,
            Renewal::Taken(other) => return Ok(Some(other)),
        };
        if !existed && self.inner.registered.swap(true, Ordering::AcqRel) {
            // The fence stays closed until the next renewal: meanwhile the poll that follows
            // this one tells the driver which items were moved, and it stops them, so nothing
            // is published for an item that runs elsewhere now.
            self.inner.leases_lost.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(member = %cfg.id, "lease had expired: re-registered (assignments were probably moved)");
        } else {
            self.inner.fence.renewed(sent_at, cfg.lease_ttl);
        }
        Ok(None)
    }

    /// A renewal in a running session: `Err` when Redis failed; `Ok(false)` when another
    /// process took this member id over (this one is then marked replaced: fence closed,
    /// grants dropped, so its driver stops everything at once).
    fn renew_or_replaced(&self, c: &mut Connection) -> Result<bool, CoordError> {
        let Some(other) = self.renew(c)? else {
            return Ok(true);
        };
        let cfg = &self.inner.cfg;
        self.inner.fence.revoke();
        tracing::error!(member = %cfg.id, session = %self.inner.session, other_session = %other,
            "another process took this member id over (this one was paused or cut off past its lease): stopping");
        *self.inner.replaced.lock() = Some(other);
        self.inner.desired.send_modify(|d| {
            d.grants.clear();
            d.generation += 1;
        });
        self.poke();
        Ok(false)
    }

    /// Registers at start. A hash holding another session is another process with this id,
    /// or a crashed predecessor whose lease has not expired yet: wait up to two lease TTLs
    /// (at least 1 s) for it to expire, then refuse. An ingest node then releases, without a
    /// next sequence number, the cameras still granted to a predecessor (whose numbers this
    /// process does not know), so the leader grants them again at a new epoch, starting
    /// above its estimate of what the predecessor published.
    fn claim(&self, c: &mut Connection) -> Result<(), CoordError> {
        let cfg = &self.inner.cfg;
        let patience = (cfg.lease_ttl * 2).max(Duration::from_secs(1));
        let started = Instant::now();
        let mut waited = false;
        loop {
            let inherited = self.inherited(c)?;
            let Some(other) = self.renew(c)? else {
                if waited {
                    tracing::info!(member = %cfg.id, waited_ms = started.elapsed().as_millis() as u64,
                        "a predecessor's lease expired: registered");
                }
                return self.release_inherited(c, inherited);
            };
            if started.elapsed() >= patience {
                return Err(CoordError::Invalid(format!(
                    "member id {:?} ({}) is held by another live process (session {other}; this \
                     process's session {}): every node needs its own id",
                    cfg.id, cfg.kind, self.inner.session
                )));
            }
            if !waited {
                tracing::warn!(member = %cfg.id, other_session = %other,
                    "another session holds this member id: waiting for its lease to expire");
                waited = true;
            }
            std::thread::sleep(
                (cfg.lease_ttl / 8).clamp(Duration::from_millis(20), Duration::from_millis(200)),
            );
        }
    }

    /// Ingest nodes: the cameras granted to this member id (at their epochs) before this
    /// process registered, i.e. to a predecessor.
    fn inherited(&self, c: &mut Connection) -> Result<Vec<(String, u64)>, CoordError> {
        let cfg = &self.inner.cfg;
        if cfg.kind != MemberKind::Ingest {
            return Ok(Vec::new());
        }
        let items: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::owned(cfg.kind, &cfg.id))
            .query(c)?;
        let mut out = Vec::new();
        for item in items {
            let Some(key) = keys::assign_of(cfg.kind, &cfg.frames_topic, &item) else {
                continue;
            };
            let rec = scripts::read_assignment(c, cfg.kind, &key, &item)?;
            if rec.owner == cfg.id && rec.epoch > 0 && rec.released != Some(rec.epoch) {
                out.push((item, rec.epoch));
            }
        }
        Ok(out)
    }

    fn release_inherited(
        &self,
        c: &mut Connection,
        inherited: Vec<(String, u64)>,
    ) -> Result<(), CoordError> {
        let cfg = &self.inner.cfg;
        for (item, epoch) in inherited {
            let key = keys::assign_of(cfg.kind, &cfg.frames_topic, &item)
                .ok_or_else(|| CoordError::Invalid(format!("bad item id {item:?}")))?;
            let done = scripts::release(c, cfg.kind, &key, &cfg.id, epoch, &item, None)?;
            tracing::warn!(member = %cfg.id, item, epoch, released = done,
                "released an item granted to a predecessor with this id, to be granted again at a new epoch");
        }
        Ok(())
    }

    fn poll(&self, c: &mut Connection) -> Result<(), CoordError> {
        let cfg = &self.inner.cfg;
        let items: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::owned(cfg.kind, &cfg.id))
            .query(c)?;
        let mut pipe = redis::pipe();
        let mut asked = Vec::new();
        for item in &items {
            if let Some(k) = keys::assign_of(cfg.kind, &cfg.frames_topic, item) {
                pipe.hgetall(k);
                asked.push(item.clone());
            }
        }
        pipe.exists(keys::drain(cfg.kind, &cfg.id));
        pipe.hgetall(keys::REGIONS);
        pipe.hgetall(keys::released(cfg.kind, &cfg.id));
        let mut replies: Vec<redis::Value> = pipe.query(c)?;
        let releases: BTreeMap<String, String> =
            redis::from_redis_value(&replies.pop().unwrap_or(redis::Value::Nil))?;
        let regions_raw: BTreeMap<String, String> =
            redis::from_redis_value(&replies.pop().unwrap_or(redis::Value::Nil))?;
        let drain_requested: bool =
            redis::from_redis_value(&replies.pop().unwrap_or(redis::Value::Nil))?;
        let mut grants = BTreeMap::new();
        for (item, v) in asked.into_iter().zip(replies) {
            let h: BTreeMap<String, String> = redis::from_redis_value(&v)?;
            let record = match AssignRecord::from_fields(&h) {
                Ok(mut r) => {
                    r.apply_release(releases.get(&item).map(String::as_str));
                    r
                }
                Err(e) => {
                    tracing::warn!(item, error = %e, "unreadable assignment record ignored");
                    continue;
                }
            };
            if record.owner == cfg.id && record.released != Some(record.epoch) && record.epoch > 0 {
                grants.insert(item.clone(), Grant { item, record });
            }
        }
        let regions = parse_records::<RegionRecord>(
            regions_raw.into_iter().map(|(k, v)| (k, Some(v))),
            "region",
        );
        let mut cameras = BTreeMap::new();
        if cfg.kind == MemberKind::Ingest && !grants.is_empty() {
            let ids: Vec<&String> = grants.keys().collect();
            let raw: Vec<Option<String>> =
                redis::cmd("HMGET").arg(keys::CAMERAS).arg(&ids).query(c)?;
            cameras = parse_records::<CameraRecord>(ids.into_iter().cloned().zip(raw), "camera");
        }
        {
            let mut held = self.inner.held.lock();
            for (item, g) in &grants {
                let e = held.entry(item.clone()).or_default();
                *e = (*e).max(g.record.epoch);
            }
        }
        let changed = self.inner.desired.send_if_modified(|d| {
            let changed = d.grants != grants
                || d.drain_requested != drain_requested
                || d.regions != regions
                || d.cameras != cameras
                || !d.connected;
            if changed {
                d.grants = grants;
                d.drain_requested = drain_requested;
                d.regions = regions;
                d.cameras = cameras;
                d.connected = true;
                d.generation += 1;
            }
            changed
        });
        if changed {
            self.poke();
        }
        Ok(())
    }
}

/// Parses JSON records by id, leaving out (with a warning) those that do not parse and
/// those missing (`None`).
fn parse_records<T: serde::de::DeserializeOwned>(
    raw: impl IntoIterator<Item = (String, Option<String>)>,
    what: &str,
) -> BTreeMap<String, T> {
    let mut out = BTreeMap::new();
    for (id, json) in raw {
        match json.map(|j| serde_json::from_str::<T>(&j)) {
            Some(Ok(r)) => {
                out.insert(id, r);
            }
            Some(Err(e)) => tracing::warn!(id, error = %e, "unreadable {what} record ignored"),
            None => {}
        }
    }
    out
}
