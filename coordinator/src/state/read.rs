//! The Redis reads behind [`super::StateReader`], each one pipelined round trip.

use std::collections::{BTreeMap, BTreeSet};

use panoptes_coordinator_client::{
    AssignRecord, CameraRecord, CoordError, MemberKind, MemberRecord, keys, records,
};
use redis::{Connection, Value};

use super::{MemberView, Snapshot};

fn hash(v: Value) -> Result<BTreeMap<String, String>, CoordError> {
    Ok(redis::from_redis_value(&v)?)
}

pub(super) type MemberIds = Vec<(MemberKind, Vec<String>)>;

/// The registry as read: parsed records, stored text, version.
pub(super) struct Registry {
    pub cameras: BTreeMap<String, CameraRecord>,
    pub stored: BTreeMap<String, String>,
    pub version: u64,
}

/// The member ids of each kind and the registry: the readable camera records (unreadable
/// ones are logged and skipped), the stored text and the version. Four commands.
pub(super) fn member_ids_and_cameras(
    c: &mut Connection,
) -> Result<(MemberIds, Registry), CoordError> {
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

/// Each member's record (absent once its lease expired) and drain flag, and with `owned`
/// its owned index: two or three commands per member.
pub(super) fn members(
    c: &mut Connection,
    ids: MemberIds,
    owned: bool,
) -> Result<BTreeMap<MemberKind, BTreeMap<String, MemberView>>, CoordError> {
    let mut pipe = redis::pipe();
    for (k, list) in &ids {
        for id in list {
            pipe.hgetall(keys::member(*k, id))
                .exists(keys::drain(*k, id));
            if owned {
                pipe.smembers(keys::owned(*k, id));
            }
        }
    }
    let mut replies = pipe.query::<Vec<Value>>(c)?.into_iter();
    let mut members: BTreeMap<MemberKind, BTreeMap<String, MemberView>> = BTreeMap::new();
    for (k, list) in ids {
        let views = members.entry(k).or_default();
        for id in list {
            let rec = hash(replies.next().unwrap_or(Value::Nil))?;
            let drain: bool = redis::from_redis_value(&replies.next().unwrap_or(Value::Nil))?;
            let owned: BTreeSet<String> = if owned {
                redis::from_redis_value(&replies.next().unwrap_or(Value::Nil))?
            } else {
                BTreeSet::new()
            };
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

/// The items whose assignment records matter, by kind: registered cameras and their
/// partitions in every region, plus everything some member still owns (orphans; owned
/// indexes are read on full reads).
pub(super) fn assignment_items(
    snap: &Snapshot,
    regions: &[String],
) -> BTreeMap<MemberKind, BTreeSet<String>> {
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
    BTreeMap::from([(MemberKind::Ingest, cams), (MemberKind::Worker, parts)])
}

/// The assignment records of `items`, as stored (releases not applied), in order.
pub(super) fn records(
    c: &mut Connection,
    frames_topic: &str,
    items: &[(MemberKind, String)],
) -> Result<Vec<AssignRecord>, CoordError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (kind, item) in items {
        let key = keys::assign_of(*kind, frames_topic, item).expect("filtered item ids");
        pipe.hgetall(key);
    }
    pipe.query::<Vec<Value>>(c)?
        .into_iter()
        .map(|v| AssignRecord::from_fields(&hash(v)?))
        .collect()
}

/// Applies each owner's releases (`HGETALL panoptes:released:<kind>:<owner>`, one command
/// per owner) to the records of the snapshot; returns the commands sent.
pub(super) fn apply_releases(c: &mut Connection, snap: &mut Snapshot) -> Result<u64, CoordError> {
    let mut owners: BTreeSet<(MemberKind, String)> = BTreeSet::new();
    for kind in [MemberKind::Ingest, MemberKind::Worker] {
        owners.extend(
            snap.records(kind)
                .values()
                .filter(|r| !r.owner.is_empty())
                .map(|r| (kind, r.owner.clone())),
        );
    }
    if owners.is_empty() {
        return Ok(0);
    }
    let mut pipe = redis::pipe();
    for (kind, owner) in &owners {
        pipe.hgetall(keys::released(*kind, owner));
    }
    let replies: Vec<BTreeMap<String, String>> = pipe.query(c)?;
    let sent = replies.len() as u64;
    let mut released: BTreeMap<MemberKind, BTreeMap<String, BTreeMap<String, String>>> =
        BTreeMap::new();
    for ((kind, owner), h) in owners.into_iter().zip(replies) {
        released.entry(kind).or_default().insert(owner, h);
    }
    let recs = snap
        .camera_assign
        .iter_mut()
        .map(|(i, r)| (MemberKind::Ingest, i, r))
        .chain(
            snap.partition_assign
                .iter_mut()
                .map(|(i, r)| (MemberKind::Worker, i, r)),
        );
    for (kind, item, r) in recs {
        if r.owner.is_empty() {
            continue;
        }
        let entry = released
            .get(&kind)
            .and_then(|by_owner| by_owner.get(r.owner.as_str()))
            .and_then(|h| h.get(item.as_str()));
        r.apply_release(entry.map(String::as_str));
    }
    Ok(sent)
}
