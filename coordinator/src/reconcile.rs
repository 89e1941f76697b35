//! One placement round of the leader: read the state ([`crate::state`]), decide
//! ([`crate::placement`]) and write the decisions with fenced scripts, for cameras (→ ingest
//! nodes) first and frames partitions (→ workers) second; then publish the desired replicas of
//! every worker group.
//!
//! Partition items follow the cameras: a camera's partition is an item in the cluster (region
//! Kafka) its frames go to now, and stays an item in every cluster it was routed to before
//! (frames left there must still be processed).
//!
//! After placing, the leader judges running canaries at most once per second
//! ([`crate::canary::leader`]); its failures never fail the round.
//!
//! Work per round: the state is read through [`StateReader`], which keeps the assignment
//! records between rounds of a term and re-reads only those this leader wrote or has not
//! read yet (everything again at least every `state::FULL_READ_EVERY`); the planner indexes
//! candidates once per plan. Dead members are pruned from the member sets once they own
//! nothing (`placement.prune_dead_after`, [`crate::state::prune`]).
//!
//! Time: every timer of the leader (handover timeouts, the rebalance cooldown, sequence
//! estimates, failover durations) runs on this process's monotonic clock
//! ([`Reconciler::clock_ms`]), never on wall clocks, and never compares its clock with a time
//! another machine wrote: a member's renewal is timed by when the leader first saw its
//! `updated_ms` change. A stepped or skewed clock can then neither force nor delay a handover.
//!
//! Redis that lost writes ([`crate::recovery`]): every round notes the epochs, the registry
//! and the members' held epochs in the [`HighWater`] marks, and grants above them; a lost
//! registry is restored from the copy (or the declarative camera file) before placing. A
//! leader elected on an emptied Redis that it did not lead until the loss holds its grants
//! for `recovery.reseed_hold` once members report epochs Redis no longer has, so that every
//! live member has re-registered and reported its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use panoptes_coordinator_client::{AssignRecord, CoordError, MemberKind, keys, scripts};
use redis::Connection;

use crate::canary::leader::CanaryLeader;
use crate::config::CoordinatorConfig;
use crate::cost::CostBook;
use crate::degrade::Degradation;
use crate::metrics::CoordinatorMetrics;
use crate::placement::{Action, Node, Planner};
use crate::recovery::{self, HighWater};
use crate::state::items::{camera_items, partition_items};
use crate::state::{Snapshot, StateReader, prune};

/// Whether grants wait for members to report the epochs an emptied Redis forgot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reseed {
    /// Grants run.
    Off,
    /// Elected on an emptied Redis without knowing it until the loss: until this time (on
    /// [`Reconciler::clock_ms`]), a member reporting an epoch above its record starts a hold.
    Watching { until: u64 },
    /// Grants wait until this time.
    Holding { until: u64 },
}

/// Last reported sequence position of a camera.
#[derive(Debug, Clone, Copy)]
struct SeenSeq {
    next_seq: u64,
    at_ms: u64,
}

/// The leader's memory between rounds.
pub struct Reconciler {
    cfg: Arc<CoordinatorConfig>,
    metrics: CoordinatorMetrics,
    planners: BTreeMap<MemberKind, Planner>,
    seen_seq: BTreeMap<String, SeenSeq>,
    /// Per member: the `updated_ms` it last wrote, and when (on [`Self::clock_ms`]) the
    /// leader first saw that value.
    last_seen_alive: BTreeMap<(MemberKind, String), (u64, u64)>,
    regions_written: bool,
    started: Instant,
    groups_written: BTreeMap<String, String>,
    high: HighWater,
    reseed: Reseed,
    /// This process led until it found that Redis lost its writes (it knows every epoch).
    led_until_loss: bool,
    /// The declarative camera file was applied for the registry loss now seen.
    camera_file_applied: bool,
    /// Redis commands sent in the current round.
    sent: u64,
    /// Reads the state, keeping assignment records between rounds.
    reader: StateReader,
    /// The held epochs each member reported when last noted in the marks.
    held_noted: BTreeMap<(MemberKind, String), BTreeMap<String, u64>>,
    /// Since when (on [`Self::clock_ms`]) each registered member has been seen dead.
    dead_since: BTreeMap<(MemberKind, String), u64>,
    /// Degradation by priority: the caps decided each round ([`crate::degrade`]).
    degradation: Degradation,
    /// Cost and packing per group, computed after degradation each round ([`crate::cost`]).
    cost: CostBook,
    /// Automatic canary verdicts ([`crate::canary::leader`]).
    canaries: CanaryLeader,
}

impl Reconciler {
    /// A reconciler with no history.
    pub fn new(cfg: Arc<CoordinatorConfig>, metrics: CoordinatorMetrics) -> Self {
        let opts = cfg.placement.plan_options();
        let regions: Vec<String> = cfg.regions.iter().map(|r| r.name.clone()).collect();
        Self {
            degradation: Degradation::new(cfg.degrade.clone(), metrics.degrade.clone()),
            cost: CostBook::new(cfg.cost.clone(), metrics.cost.clone()),
            canaries: CanaryLeader::new(cfg.models.canary.clone(), metrics.canary.clone()),
            reader: StateReader::new(&cfg.frames_topic, regions),
            held_noted: BTreeMap::new(),
            dead_since: BTreeMap::new(),
            planners: [MemberKind::Ingest, MemberKind::Worker]
                .into_iter()
                .map(|k| (k, Planner::new(opts.clone())))
                .collect(),
            cfg,
            metrics,
            seen_seq: BTreeMap::new(),
            last_seen_alive: BTreeMap::new(),
            regions_written: false,
            groups_written: BTreeMap::new(),
            started: Instant::now(),
            high: HighWater::default(),
            reseed: Reseed::Off,
            led_until_loss: false,
            camera_file_applied: false,
            sent: 0,
        }
    }

    /// Starts from remembered marks (the state file's).
    pub fn with_high_water(mut self, high: HighWater) -> Self {
        self.high = high;
        self
    }

    /// The marks: the leader loop notes tokens in them and takes the campaign floor.
    pub fn high_water(&mut self) -> &mut HighWater {
        &mut self.high
    }

    /// Writes the marks to `recovery.state_file` if set and they changed; a failure is
    /// logged (the next change writes again).
    pub fn save_marks(&mut self) {
        if let Some(path) = self.cfg.recovery.state_file.clone()
            && let Err(e) = self.high.save(&path)
        {
            tracing::warn!(error = %e, "recovery state not saved");
        }
    }

    /// Called when this leader found that Redis lost its writes (its token missing or
    /// lower): it knows every epoch, so its next election needs no reseed hold.
    pub fn redis_lost_writes(&mut self) {
        self.led_until_loss = true;
        self.metrics.redis_lost_writes.inc();
    }

    /// Milliseconds on this process's monotonic clock.
    fn clock_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Called after an election (`fresh_redis`: the fence did not exist): state written by
    /// a previous leader is re-written; on an emptied Redis that this process did not lead
    /// until the loss, grants may wait for the members' reports (see the module doc).
    pub fn elected(&mut self, fresh_redis: bool) {
        self.regions_written = false;
        self.groups_written.clear();
        self.reader.invalidate();
        self.canaries.reset();
        self.reseed = if fresh_redis && !self.led_until_loss {
            Reseed::Watching {
                until: self.clock_ms() + self.hold_ms(),
            }
        } else {
            Reseed::Off
        };
        self.led_until_loss = false;
    }

    /// The Redis connection was opened anew (Redis may have restarted or failed over): the
    /// next round reads every record again.
    pub fn resync(&mut self) {
        self.reader.invalidate();
    }

    fn hold_ms(&self) -> u64 {
        self.cfg.recovery.reseed_hold.as_millis() as u64
    }

    /// One round. Fails with [`CoordError::Fenced`] when this coordinator was deposed.
    pub fn round(&mut self, c: &mut Connection, token: u64) -> Result<(), CoordError> {
        self.sent = 0;
        let r = self.round_inner(c, token);
        self.metrics.round_redis_commands.inc_by(self.sent);
        r
    }

    fn round_inner(&mut self, c: &mut Connection, token: u64) -> Result<(), CoordError> {
        if !self.regions_written {
            let cmds: Vec<Vec<String>> = self
                .cfg
                .regions
                .iter()
                .map(|r| {
                    let json = serde_json::json!({ "bootstrap_servers": r.bootstrap_servers });
                    vec![
                        "HSET".into(),
                        keys::REGIONS.into(),
                        r.name.clone(),
                        json.to_string(),
                    ]
                })
                .collect();
            self.sent += 1;
            scripts::fenced_batch(c, token, &cmds)?;
            self.regions_written = true;
        }
        let mut snap = self.reader.read(c, token)?;
        self.sent += snap.commands;
        if self.restore_registry(c, token, &snap)? {
            snap = self.reader.read(c, token)?;
            self.sent += snap.commands;
        }
        let now = self.clock_ms();
        self.observe(&snap, now);
        let hold = self.holding(&snap, now);
        self.remember(&snap);
        if hold {
            return Ok(());
        }
        self.place(c, token, &snap, MemberKind::Ingest, now)?;
        let now = self.clock_ms();
        self.place(c, token, &snap, MemberKind::Worker, now)?;
        let (now, reader) = (self.clock_ms(), &mut self.reader);
        let sent = self.degradation.round(c, token, &snap, now, |cam| {
            reader.written(MemberKind::Ingest, cam)
        })?;
        self.sent += sent;
        self.cost.round(&snap, &self.degradation);
        self.groups(c, token, &snap)?;
        let now = self.clock_ms();
        self.prune(c, token, &snap, now)?;
        let now = self.clock_ms();
        self.sent += self.canaries.round(c, token, &snap, now);
        Ok(())
    }

    fn observe(&mut self, snap: &Snapshot, now: u64) {
        for (kind, views) in &snap.members {
            let (mut alive, mut draining, mut dead) = (0, 0, 0);
            for v in views.values() {
                match &v.record {
                    Some(r) => {
                        let seen = self
                            .last_seen_alive
                            .entry((*kind, v.id.clone()))
                            .or_insert((r.updated_ms, now));
                        if seen.0 != r.updated_ms {
                            *seen = (r.updated_ms, now);
                        }
                        if v.active() {
                            alive += 1;
                        } else {
                            draining += 1;
                        }
                        if *kind == MemberKind::Ingest
                            && let Some(cams) = r.report.get("cameras").and_then(|c| c.as_object())
                        {
                            for (id, st) in cams {
                                let owned =
                                    snap.camera_assign.get(id).is_some_and(|a| a.owner == v.id);
                                if let (true, Some(n)) =
                                    (owned, st.get("next_seq").and_then(|n| n.as_u64()))
                                {
                                    self.seen_seq.insert(
                                        id.clone(),
                                        SeenSeq {
                                            next_seq: n,
                                            at_ms: now,
                                        },
                                    );
                                }
                            }
                        }
                    }
                    None => dead += 1,
                }
            }
            let k = kind.as_str();
            self.metrics
                .members
                .with_label_values(&[k, "active"])
                .set(alive);
            self.metrics
                .members
                .with_label_values(&[k, "draining"])
                .set(draining);
            self.metrics
                .members
                .with_label_values(&[k, "dead"])
                .set(dead);
        }
        self.metrics.cameras.set(snap.cameras.len() as i64);
        self.seen_seq.retain(|id, _| snap.cameras.contains_key(id));
    }

    fn nodes(snap: &Snapshot, kind: MemberKind) -> Vec<Node> {
        snap.members
            .get(&kind)
            .into_iter()
            .flat_map(|m| m.values())
            .map(|v| {
                let r = v.record.as_ref();
                Node {
                    id: v.id.clone(),
                    region: r.map(|r| r.region.clone()).unwrap_or_default(),
                    group: match kind {
                        MemberKind::Ingest => None,
                        MemberKind::Worker => Some(r.map(|r| r.group.clone()).unwrap_or_default()),
                    },
                    capacity: r.map_or(0.0, |r| r.capacity),
                    alive: v.alive(),
                    accepting: v.active()
                        && (kind == MemberKind::Worker || r.is_some_and(|r| r.broker_ok)),
                }
            })
            .collect()
    }

    /// Plans the items of `kind` (cameras for ingest nodes, partitions for workers) and
    /// writes the actions: grants through the grant script, moves through [`Self::retarget`].
    fn place(
        &mut self,
        c: &mut Connection,
        token: u64,
        snap: &Snapshot,
        kind: MemberKind,
        now: u64,
    ) -> Result<(), CoordError> {
        let nodes = Self::nodes(snap, kind);
        let (items, records) = match kind {
            MemberKind::Ingest => (camera_items(snap), &snap.camera_assign),
            MemberKind::Worker => (partition_items(snap), &snap.partition_assign),
        };
        let actions = self.planner(kind).plan(&nodes, &items, now);
        for a in actions {
            let (Action::Grant { item, .. } | Action::Retarget { item, .. }) = &a;
            let (assign_key, epoch_key) = self.item_keys(kind, item);
            // Marked before the write: a write that fails half-way is read again too.
            self.reader.written(kind, item);
            match a {
                Action::Grant {
                    item,
                    owner,
                    reason,
                } => {
                    let rec = &records[&item];
                    let extra = if kind == MemberKind::Ingest && !owner.is_empty() {
                        self.camera_grant_fields(&nodes, &item, &owner, rec, snap, now)
                    } else {
                        Vec::new()
                    };
                    let at = scripts::ItemKeys {
                        assign: &assign_key,
                        epoch: &epoch_key,
                    };
                    let floor = self.high.epoch_floor(&epoch_key);
                    let started = std::time::SystemTime::now();
                    self.sent += 1;
                    let epoch =
                        scripts::grant_above(c, token, kind, at, &item, &owner, floor, &extra)?;
                    let span_attrs = [
                        ("panoptes.owner", owner.clone()),
                        ("panoptes.epoch", epoch.to_string()),
                        ("panoptes.reason", reason.to_string()),
                    ];
                    let _log =
                        crate::trace::action("grant", kind, &item, &span_attrs, started).entered();
                    self.high.observe_epoch(&epoch_key, epoch);
                    self.note_grant(kind, &item, rec, &owner, epoch, reason, now);
                }
                Action::Retarget { .. } => {
                    self.retarget(c, token, kind, &assign_key, &a)?;
                }
            }
        }
        Ok(())
    }

    /// The keys of an item's assignment record and of its epoch counter.
    fn item_keys(&self, kind: MemberKind, item: &str) -> (String, String) {
        match kind {
            MemberKind::Ingest => (keys::camera_assign(item), keys::camera_epoch(item)),
            MemberKind::Worker => {
                let (cl, p) = keys::parse_partition_item(item).expect("parsed above");
                let topic = &self.cfg.frames_topic;
                (
                    keys::partition_assign(cl, topic, p),
                    keys::partition_epoch(topic, p),
                )
            }
        }
    }

    /// What a camera's new owner is told with the grant: the region whose Kafka its frames
    /// go to (the owner's), and the sequence number to start from.
    fn camera_grant_fields(
        &self,
        nodes: &[Node],
        cam: &str,
        owner: &str,
        rec: &AssignRecord,
        snap: &Snapshot,
        now: u64,
    ) -> Vec<(&'static str, String)> {
        let region = nodes
            .iter()
            .find(|n| n.id == owner)
            .map(|n| n.region.clone())
            .unwrap_or_default();
        vec![
            ("cluster", region),
            ("start_seq", self.start_seq(cam, rec, snap, now).to_string()),
        ]
    }

    /// Where a camera's next owner starts numbering frames.
    fn start_seq(&self, cam: &str, rec: &AssignRecord, snap: &Snapshot, now: u64) -> u64 {
        if rec.released == Some(rec.epoch)
            && let Some(s) = rec.released_seq
        {
            return s;
        }
        let floor = rec.start_seq.unwrap_or(0);
        match (self.seen_seq.get(cam), snap.cameras.get(cam)) {
            (Some(seen), Some(c)) => {
                let age_s = now.saturating_sub(seen.at_ms) as f64 / 1000.0
                    + self.cfg.placement.seq_margin.as_secs_f64()
                    + self.cfg.leader.ttl.as_secs_f64();
                (seen.next_seq + (f64::from(c.fps) * age_s).ceil() as u64).max(floor)
            }
            _ => floor,
        }
    }

    /// Desired replicas per worker group: load over (mean capacity × target utilisation).
    fn groups(
        &mut self,
        c: &mut Connection,
        token: u64,
        snap: &Snapshot,
    ) -> Result<(), CoordError> {
        let mut load: BTreeMap<String, f64> = BTreeMap::new();
        for cam in snap.cameras.values() {
            *load.entry(cam.group.clone()).or_default() += cam.load();
        }
        let mut caps: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for v in snap
            .members
            .get(&MemberKind::Worker)
            .into_iter()
            .flat_map(|m| m.values())
        {
            if let Some(r) = &v.record {
                let e = caps.entry(r.group.clone()).or_default();
                e.0 += r.capacity;
                e.1 += 1;
                load.entry(r.group.clone()).or_default();
            }
        }
        let mut cmds = Vec::new();
        for (group, l) in &load {
            let (cap_sum, n) = caps.get(group).copied().unwrap_or((0.0, 0));
            let mean = if n > 0 { cap_sum / n as f64 } else { 0.0 };
            let desired = if *l <= 0.0 {
                0
            } else if mean <= 0.0 {
                1
            } else {
                ((l / (mean * self.cfg.placement.target_utilization)).ceil() as i64).max(1)
            };
            self.metrics
                .desired_replicas
                .with_label_values(&[group])
                .set(desired);
            self.metrics.group_load.with_label_values(&[group]).set(*l);
            let json = serde_json::json!({
                "desired_replicas": desired,
                "load": l,
                "capacity": cap_sum,
                "workers": n,
                "degrade": self.degradation.figures(group),
                "cost": self.cost.group(group),
            })
            .to_string();
            if self.groups_written.get(group) != Some(&json) {
                cmds.push(vec![
                    "HSET".into(),
                    keys::GROUPS.into(),
                    group.clone(),
                    json.clone(),
                ]);
                self.groups_written.insert(group.clone(), json);
            }
        }
        self.sent += u64::from(!cmds.is_empty());
        scripts::fenced_batch(c, token, &cmds)?;
        Ok(())
    }

    /// Prunes the members dead for `placement.prune_dead_after` that own nothing any more
    /// (see [`crate::state::prune`]).
    fn prune(
        &mut self,
        c: &mut Connection,
        token: u64,
        snap: &Snapshot,
        now: u64,
    ) -> Result<(), CoordError> {
        let after = self.cfg.placement.prune_dead_after.as_millis() as u64;
        for (kind, id) in prune::due(snap, &mut self.dead_since, now, after) {
            self.sent += 1;
            if prune::prune_member(c, token, kind, &id)? {
                self.metrics
                    .actions
                    .with_label_values(&[kind.as_str(), "prune", "dead"])
                    .inc();
                tracing::info!(%kind, member = %id, "dead member pruned");
            }
            let key = (kind, id);
            self.dead_since.remove(&key);
            self.last_seen_alive.remove(&key);
            self.held_noted.remove(&key);
        }
        Ok(())
    }

    fn planner(&mut self, kind: MemberKind) -> &mut Planner {
        self.planners.get_mut(&kind).expect("both kinds exist")
    }

    #[allow(clippy::too_many_arguments)]
    fn note_grant(
        &mut self,
        kind: MemberKind,
        item: &str,
        old: &AssignRecord,
        owner: &str,
        epoch: u64,
        reason: &'static str,
        now: u64,
    ) {
        self.metrics
            .actions
            .with_label_values(&[kind.as_str(), "grant", reason])
            .inc();
        if reason == "owner_dead"
            && let Some((_, seen)) = self.last_seen_alive.get(&(kind, old.owner.clone()))
        {
            self.metrics
                .failover_seen
                .set(now.saturating_sub(*seen) as f64 / 1000.0);
        }
        tracing::info!(%kind, item, from = %old.owner, to = owner, epoch, reason, "granted");
    }

    /// Carries out a [`Action::Retarget`] on the record at `assign_key` (a grant is not a
    /// move: nothing to do here).
    fn retarget(
        &mut self,
        c: &mut Connection,
        token: u64,
        kind: MemberKind,
        assign_key: &str,
        action: &Action,
    ) -> Result<(), CoordError> {
        let Action::Retarget {
            item,
            owner,
            epoch,
            target,
            reason,
        } = action
        else {
            return Ok(());
        };
        let started = std::time::SystemTime::now();
        self.sent += 1;
        let ok = scripts::retarget(c, token, kind, assign_key, owner, *epoch, target)?;
        if ok {
            let span_attrs = [
                ("panoptes.owner", owner.clone()),
                ("panoptes.target", target.clone()),
                ("panoptes.epoch", epoch.to_string()),
                ("panoptes.reason", reason.to_string()),
            ];
            let _log = crate::trace::action("handover", kind, item, &span_attrs, started).entered();
            self.metrics
                .actions
                .with_label_values(&[kind.as_str(), "handover", reason])
                .inc();
            tracing::info!(%kind, item, from = owner, to = target, epoch, reason, "handover requested");
        }
        Ok(())
    }
}

/// Redis that lost writes (see the module doc).
impl Reconciler {
    /// The epoch counter key of an item of `kind` (`None` for a malformed partition item).
    fn epoch_key(&self, kind: MemberKind, item: &str) -> Option<String> {
        match kind {
            MemberKind::Ingest => Some(keys::camera_epoch(item)),
            MemberKind::Worker => keys::parse_partition_item(item)
                .map(|(_, p)| keys::partition_epoch(&self.cfg.frames_topic, p)),
        }
    }

    /// Notes the snapshot's epochs, registry and the members' held epochs in the marks: the
    /// records read this round (the others were noted when read, or granted by this leader)
    /// and the held reports that changed.
    fn remember(&mut self, snap: &Snapshot) {
        self.high
            .observe_registry(snap.cameras_version, &snap.cameras_stored);
        let mut seen: Vec<(String, u64)> = Vec::new();
        for (kind, item) in &snap.read_items {
            if let (Some(r), Some(key)) =
                (snap.records(*kind).get(item), self.epoch_key(*kind, item))
            {
                seen.push((key, r.epoch));
            }
        }
        for (kind, views) in &snap.members {
            for v in views.values() {
                let id = (*kind, v.id.clone());
                if v.held.is_empty() || self.held_noted.get(&id) == Some(&v.held) {
                    continue;
                }
                for (item, e) in &v.held {
                    if let Some(key) = self.epoch_key(*kind, item) {
                        seen.push((key, *e));
                    }
                }
                self.held_noted.insert(id, v.held.clone());
            }
        }
        for (key, e) in seen {
            self.high.observe_epoch(&key, e);
        }
    }

    /// Whether this round's grants wait (see [`Reseed`]).
    fn holding(&mut self, snap: &Snapshot, now: u64) -> bool {
        match self.reseed {
            Reseed::Off => false,
            Reseed::Watching { until } if now >= until => {
                self.reseed = Reseed::Off;
                false
            }
            Reseed::Watching { .. } => {
                let Some((member, item, epoch)) = forgotten_epoch(snap) else {
                    return false;
                };
                tracing::warn!(
                    member,
                    item,
                    epoch,
                    hold_ms = self.hold_ms(),
                    "a member held an epoch Redis no longer has: Redis lost its state; \
                     grants wait for every member to report"
                );
                self.reseed = Reseed::Holding {
                    until: now + self.hold_ms(),
                };
                self.metrics.reseed_holds.inc();
                true
            }
            Reseed::Holding { until } if now >= until => {
                self.reseed = Reseed::Off;
                false
            }
            Reseed::Holding { .. } => true,
        }
    }

    /// Restores a registry Redis lost: from the copy in the marks at a higher version, else
    /// from the declarative camera file. Returns whether it wrote.
    fn restore_registry(
        &mut self,
        c: &mut Connection,
        token: u64,
        snap: &Snapshot,
    ) -> Result<bool, CoordError> {
        let empty = snap.cameras_version == 0 && snap.cameras_stored.is_empty();
        if !empty {
            self.camera_file_applied = false;
            return Ok(false);
        }
        let copy = recovery::registry_to_restore(
            snap.cameras_version,
            snap.cameras_stored.len(),
            self.high.registry(),
        );
        if let Some(copy) = copy.cloned() {
            let version = copy.version + 1;
            let n = scripts::restore_registry(c, token, version, &copy.cameras)?;
            if let Some(n) = n {
                tracing::warn!(
                    cameras = n,
                    version,
                    "Redis had lost the camera registry: restored from this coordinator's copy"
                );
                self.metrics
                    .registry_restores
                    .with_label_values(&["copy"])
                    .inc();
            }
            return Ok(n.is_some());
        }
        if self.camera_file_applied {
            return Ok(false);
        }
        let Some(path) = self.cfg.recovery.camera_file.clone() else {
            return Ok(false);
        };
        self.camera_file_applied = true;
        match self.apply_camera_file(c, &path) {
            Ok(n) => {
                tracing::warn!(cameras = n, file = %path.display(), "Redis held no camera registry: applied the declarative camera file");
                self.metrics
                    .registry_restores
                    .with_label_values(&["camera_file"])
                    .inc();
                Ok(true)
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "the declarative camera file could not be applied");
                self.metrics
                    .registry_restores
                    .with_label_values(&["failed"])
                    .inc();
                Ok(false)
            }
        }
    }

    /// Applies `path` (a `cameras.yaml`) to an empty registry; returns the cameras added.
    fn apply_camera_file(
        &self,
        c: &mut Connection,
        path: &std::path::Path,
    ) -> Result<usize, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let file: crate::cli::CamerasFile =
            serde_yaml::from_str(&text).map_err(|e| e.to_string())?;
        let specs = file
            .cameras
            .into_iter()
            .map(serde_json::from_value::<crate::registry::CameraSpec>)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("a camera entry is invalid: {e}"))?;
        let highest = specs.iter().filter_map(|s| s.partition).max();
        let partitions =
            crate::growth::restored(c, &self.cfg, highest).map_err(|e| e.to_string())?;
        let limits = crate::registry::Limits {
            frames_partitions: partitions,
            regions: self.cfg.regions.iter().map(|r| r.name.clone()).collect(),
            camera_keys: self.cfg.camera_keys().map_err(|e| e.to_string())?,
        };
        // `if_version = 0`: only into a registry nobody has written meanwhile.
        let sum =
            crate::registry::apply(c, &limits, &specs, true, Some(0)).map_err(|e| e.to_string())?;
        Ok(sum.added.len())
    }
}

/// A member reporting that it held an item at an epoch above the item's record now (Redis
/// forgot it): `(member, item, epoch)`.
fn forgotten_epoch(snap: &Snapshot) -> Option<(&str, &str, u64)> {
    let record_epoch = |kind: MemberKind, item: &str| {
        let records = match kind {
            MemberKind::Ingest => &snap.camera_assign,
            MemberKind::Worker => &snap.partition_assign,
        };
        records.get(item).map_or(0, |r| r.epoch)
    };
    snap.members
        .values()
        .flat_map(|views| views.values())
        .filter(|v| v.alive())
        .flat_map(|v| v.held.iter().map(move |(i, e)| (v, i, *e)))
        .find(|(v, i, e)| *e > record_epoch(v.kind, i))
        .map(|(v, i, e)| (v.id.as_str(), i.as_str(), e))
}
