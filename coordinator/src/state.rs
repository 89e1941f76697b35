//! Reading the coordination state from Redis in a few pipelined round trips: members (with
//! their drain flags and owned items), the camera registry and every assignment record the
//! leader reasons about, with each owner's release applied (members record releases in
//! their own `panoptes:released:<kind>:<id>` hash, never in the assignment record: see
//! `keys::released`). Synchronous: runs on the leader thread. Camera records are read in
//! their stored form: the leader never opens sealed passwords (the stored text and the
//! registry version are kept too, for the leader's copy of the registry, see
//! [`crate::recovery`]), and each member's report of the epochs it held.

use std::collections::{BTreeMap, BTreeSet};

use panoptes_coordinator_client::{
    AssignRecord, CameraRecord, CoordError, MemberKind, MemberRecord, keys, records,
};
use redis::{Connection, Value};

/// A registered member.
#[derive(Debug, Clone)]
pub struct MemberView {
    /// Kind.
    pub kind: MemberKind,
    /// Id.
    pub id: String,
    /// Its record; `None` when the lease expired (dead).
    pub record: Option<MemberRecord>,
    /// Operator drain flag.
    pub drain_flag: bool,
    /// Items in its owned index.
    pub owned: BTreeSet<String>,
    /// Highest epoch it reports having held each item at (`records::HELD_FIELD`).
    pub held: BTreeMap<String, u64>,
}

impl MemberView {
    /// Alive: the lease (record) exists.
    pub fn alive(&self) -> bool {
        self.record.is_some()
    }

    /// Alive, not draining (by itself or the operator).
    pub fn active(&self) -> bool {
        self.record.as_ref().is_some_and(|r| r.state == "active") && !self.drain_flag
    }
}

/// Everything one placement round needs.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Members by kind, then id.
    pub members: BTreeMap<MemberKind, BTreeMap<String, MemberView>>,
    /// Camera registry.
    pub cameras: BTreeMap<String, CameraRecord>,
    /// The registry as stored (id → JSON, unreadable records included).
    pub cameras_stored: BTreeMap<String, String>,
    /// `panoptes:cameras:version` (0: never written, or lost).
    pub cameras_version: u64,
    /// Camera assignments, by camera id (registered cameras and orphans found in indexes).
    pub camera_assign: BTreeMap<String, AssignRecord>,
    /// Partition assignments by item id (`<cluster>:<partition>`), for every registered
    /// camera's partition in every region, plus orphans found in indexes.
    pub partition_assign: BTreeMap<String, AssignRecord>,
}

fn hash(v: Value) -> Result<BTreeMap<String, String>, CoordError> {
    Ok(redis::from_redis_value(&v)?)
}

/// Reads a snapshot in four round trips: member ids and the camera registry; each
/// member's record, drain flag and owned index; the assignment records; their owners'
/// releases.
pub fn read(
    c: &mut Connection,
    frames_topic: &str,
    regions: &[String],
) -> Result<Snapshot, CoordError> {
    let (ids, registry) = read_member_ids_and_cameras(c)?;
    let mut snap = Snapshot {
        members: read_members(c, ids)?,
        cameras: registry.cameras,
        cameras_stored: registry.stored,
        cameras_version: registry.version,
        ..Snapshot::default()
    };
    let (cams, parts) = assignment_items(&snap, regions);
    read_assignments(c, frames_topic, cams, parts, &mut snap)?;
    Ok(snap)
}

type MemberIds = Vec<(MemberKind, Vec<String>)>;

/// The registry as read: parsed records, stored text, version.
struct Registry {
    cameras: BTreeMap<String, CameraRecord>,
    stored: BTreeMap<String, String>,
    version: u64,
}

/// The member ids of each kind and the registry: the readable camera records (unreadable
/// ones are logged and skipped), the stored text and the version.
fn read_member_ids_and_cameras(c: &mut Connection) -> Result<(MemberIds, Registry), CoordError> {
    let kinds = [MemberKind::Ingest, MemberKind::Worker];
    let mut pipe = redis::pipe();
    for k in kinds {
        pipe.smembers(keys::members(k));
    }
    pipe.hgetall(keys::CAMERAS);
    pipe.get(keys::CAMERAS_VERSION);
    let mut first: Vec<Value> = pipe.query(c)?;
    let version: Option<u64> = redis::from_redis_value(&first.pop().unwrap_or(Value::Nil))?;
    let stored = hash(first.pop().unwrap_or(Value::Nil))?;
    let mut cameras = BTreeMap::new();
    for (id, json) in &stored {
        match serde_json::from_str::<CameraRecord>(json) {
            Ok(r) => {
                cameras.insert(id.clone(), r);
            }
            Err(e) => tracing::warn!(camera = %id, error = %e, "unreadable camera record skipped"),
        }
    }
    let ids = kinds
        .into_iter()
        .zip(first)
        .map(|(k, v)| Ok((k, redis::from_redis_value::<Vec<String>>(&v)?)))
        .collect::<Result<_, CoordError>>()?;
    let registry = Registry {
        cameras,
        stored,
        version: version.unwrap_or(0),
    };
    Ok((ids, registry))
}

/// Each member's record (absent once its lease expired), drain flag and owned index.
fn read_members(
    c: &mut Connection,
    ids: MemberIds,
) -> Result<BTreeMap<MemberKind, BTreeMap<String, MemberView>>, CoordError> {
    let mut pipe = redis::pipe();
    for (k, list) in &ids {
        for id in list {
            pipe.hgetall(keys::member(*k, id))
                .exists(keys::drain(*k, id))
                .smembers(keys::owned(*k, id));
        }
    }
    let mut replies = pipe.query::<Vec<Value>>(c)?.into_iter();
    let mut members: BTreeMap<MemberKind, BTreeMap<String, MemberView>> = BTreeMap::new();
    for (k, list) in ids {
        let views = members.entry(k).or_default();
        for id in list {
            let rec = hash(replies.next().unwrap_or(Value::Nil))?;
            let drain: bool = redis::from_redis_value(&replies.next().unwrap_or(Value::Nil))?;
            let owned: BTreeSet<String> =
                redis::from_redis_value(&replies.next().unwrap_or(Value::Nil))?;
            views.insert(
                id.clone(),
                MemberView {
                    kind: k,
                    held: records::parse_held(&rec),
                    record: MemberRecord::from_fields(&rec),
                    drain_flag: drain,
                    owned,
                    id,
                },
            );
        }
    }
    Ok(members)
}

/// The items whose assignment records matter: registered cameras and their partitions in
/// every region, plus everything some member still owns (orphans).
fn assignment_items(snap: &Snapshot, regions: &[String]) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut cams: BTreeSet<String> = snap.cameras.keys().cloned().collect();
    let mut parts: BTreeSet<String> = BTreeSet::new();
    for cam in snap.cameras.values() {
        for r in regions {
            parts.insert(keys::partition_item(r, cam.partition));
        }
    }
    for views in snap.members.values() {
        for v in views.values() {
            match v.kind {
                MemberKind::Ingest => cams.extend(v.owned.iter().cloned()),
                MemberKind::Worker => parts.extend(
                    v.owned
                        .iter()
                        .filter(|i| keys::parse_partition_item(i).is_some())
                        .cloned(),
                ),
            }
        }
    }
    (cams, parts)
}

/// Reads the assignment records of `cams` and `parts` into `snap`.
fn read_assignments(
    c: &mut Connection,
    frames_topic: &str,
    cams: BTreeSet<String>,
    parts: BTreeSet<String>,
    snap: &mut Snapshot,
) -> Result<(), CoordError> {
    let mut pipe = redis::pipe();
    for cam in &cams {
        pipe.hgetall(keys::camera_assign(cam));
    }
    for item in &parts {
        let (cl, p) = keys::parse_partition_item(item).expect("filtered above");
        pipe.hgetall(keys::partition_assign(cl, frames_topic, p));
    }
    let mut replies = pipe.query::<Vec<Value>>(c)?.into_iter();
    for cam in cams {
        let h = hash(replies.next().unwrap_or(Value::Nil))?;
        snap.camera_assign
            .insert(cam, AssignRecord::from_fields(&h)?);
    }
    for item in parts {
        let h = hash(replies.next().unwrap_or(Value::Nil))?;
        snap.partition_assign
            .insert(item, AssignRecord::from_fields(&h)?);
    }
    apply_releases(c, snap)
}

/// Applies each owner's release entry (`HGET panoptes:released:<kind>:<owner> <item>`) to
/// the records read.
fn apply_releases(c: &mut Connection, snap: &mut Snapshot) -> Result<(), CoordError> {
    let mut pipe = redis::pipe();
    let mut n = 0;
    let records = snap
        .camera_assign
        .iter_mut()
        .map(|(i, r)| (MemberKind::Ingest, i, r))
        .chain(
            snap.partition_assign
                .iter_mut()
                .map(|(i, r)| (MemberKind::Worker, i, r)),
        )
        .filter(|(_, _, r)| !r.owner.is_empty())
        .collect::<Vec<_>>();
    for (kind, item, r) in &records {
        pipe.hget(keys::released(*kind, &r.owner), item.as_str());
        n += 1;
    }
    if n == 0 {
        return Ok(());
    }
    let replies: Vec<Option<String>> = pipe.query(c)?;
    for ((_, _, r), entry) in records.into_iter().zip(replies) {
        r.apply_release(entry.as_deref());
    }
    Ok(())
}
