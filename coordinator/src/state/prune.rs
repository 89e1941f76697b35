//! Pruning dead members. A member whose lease expired stays in its kind's member set
//! (`panoptes:members:<kind>`) until the leader prunes it, so `panoptes status` shows it as
//! dead for a while and its items are moved first; without pruning, every member that ever
//! lived would be read by every round forever. A dead member is pruned once it has been seen
//! dead for `placement.prune_dead_after` and no assignment record names it any more; the
//! script checks again, atomically and fenced, that its lease hash does not exist and its
//! owned index is empty, and removes it from the member set with its releases hash. A member
//! that comes back registers again (every renewal adds it to the set).

use std::collections::BTreeMap;

use panoptes_coordinator_client::{CoordError, MemberKind, keys};
use redis::{Connection, Value};

use super::Snapshot;

/// `KEYS`: fence, lease hash, member set, owned index, releases hash; `ARGV`: token, id.
const PRUNE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('FENCED stale leader token')
end
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('SCARD', KEYS[4]) > 0 then
  return 0
end
redis.call('SREM', KEYS[3], ARGV[2])
redis.call('DEL', KEYS[5])
return 1
";

/// Notes since when each member has been dead (on the leader's clock, `now`) and returns
/// those dead for at least `after_ms` that no record of the snapshot names as owner.
pub fn due(
    snap: &Snapshot,
    dead_since: &mut BTreeMap<(MemberKind, String), u64>,
    now: u64,
    after_ms: u64,
) -> Vec<(MemberKind, String)> {
    let mut registered = BTreeMap::new();
    for (kind, views) in &snap.members {
        for v in views.values() {
            registered.insert((*kind, v.id.clone()), v.alive() || !v.owned.is_empty());
        }
    }
    dead_since.retain(|k, _| registered.get(k) == Some(&false));
    for (k, busy) in &registered {
        if !busy {
            dead_since.entry(k.clone()).or_insert(now);
        }
    }
    let mut owners: BTreeMap<MemberKind, std::collections::BTreeSet<&str>> = BTreeMap::new();
    for kind in [MemberKind::Ingest, MemberKind::Worker] {
        owners.insert(
            kind,
            snap.records(kind)
                .values()
                .map(|r| r.owner.as_str())
                .filter(|o| !o.is_empty())
                .collect(),
        );
    }
    dead_since
        .iter()
        .filter(|(_, since)| now.saturating_sub(**since) >= after_ms)
        .filter(|((kind, id), _)| !owners[kind].contains(id.as_str()))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Removes dead member `id` of `kind` from its member set if its lease hash is gone and
/// it owns nothing (fenced). Returns whether it was removed.
pub fn prune_member(
    c: &mut Connection,
    token: u64,
    kind: MemberKind,
    id: &str,
) -> Result<bool, CoordError> {
    let v: Value = redis::cmd("EVAL")
        .arg(PRUNE)
        .arg(5)
        .arg(keys::FENCE)
        .arg(keys::member(kind, id))
        .arg(keys::members(kind))
        .arg(keys::owned(kind, id))
        .arg(keys::released(kind, id))
        .arg(token)
        .arg(id)
        .query(c)?;
    Ok(v == Value::Int(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::MemberView;
    use panoptes_coordinator_client::AssignRecord;

    fn view(id: &str, alive: bool) -> MemberView {
        let mut fields = BTreeMap::new();
        if alive {
            for (k, v) in [
                ("id", id),
                ("kind", "worker"),
                ("region", "eu"),
                ("state", "active"),
            ] {
                fields.insert(k.to_string(), v.to_string());
            }
        }
        MemberView {
            kind: MemberKind::Worker,
            id: id.into(),
            record: panoptes_coordinator_client::MemberRecord::from_fields(&fields),
            drain_flag: false,
            owned: Default::default(),
            held: Default::default(),
        }
    }

    #[test]
    fn dead_members_are_due_after_the_delay_once_nothing_names_them() {
        let mut snap = Snapshot::default();
        let views = snap.members.entry(MemberKind::Worker).or_default();
        for (id, alive) in [("w1", true), ("w2", false), ("w3", false)] {
            views.insert(id.into(), view(id, alive));
        }
        snap.partition_assign.insert(
            "eu:0".into(),
            AssignRecord {
                owner: "w3".into(),
                epoch: 4,
                ..AssignRecord::default()
            },
        );
        let mut since = BTreeMap::new();
        assert!(
            due(&snap, &mut since, 1000, 500).is_empty(),
            "just seen dead"
        );
        assert_eq!(
            due(&snap, &mut since, 1500, 500),
            vec![(MemberKind::Worker, "w2".to_string())],
            "w3 still owns eu:0; w1 lives"
        );
        snap.partition_assign.clear();
        assert_eq!(due(&snap, &mut since, 1500, 500).len(), 2);
        snap.members.clear();
        assert!(due(&snap, &mut since, 2000, 500).is_empty());
        assert!(since.is_empty(), "forgotten once gone from the set");
    }
}
