//! Reading the coordination state from Redis for one placement round: members (with their
//! drain flags), the camera registry and every assignment record the leader reasons about,
//! with each owner's release applied (members record releases in their own
//! `panoptes:released:<kind>:<id>` hash, never in the assignment record: see
//! `keys::released`). Synchronous: runs on the leader thread. Camera records are read in
//! their stored form: the leader never opens sealed passwords (the stored text and the
//! registry version are kept too, for the leader's copy of the registry, see
//! [`crate::recovery`]), and each member's report of the epochs it held.
//!
//! # Reading only what changed
//!
//! Assignment records are written by the leader alone (fenced scripts: a deposed leader
//! cannot write, members only read them), so while one leader holds one token the records
//! it read stay as read until it writes them itself. [`StateReader`] therefore keeps the
//! records between rounds and re-reads only
//! - the records of items it has not read yet (a camera just registered),
//! - the records it wrote since (every grant or handover request is reported through
//!   [`StateReader::written`] before it is sent, so a write that failed half-way is re-read),
//! - everything, with the members' owned indexes (orphans), on a *full read*: the first
//!   round of a term (new token), after [`StateReader::invalidate`] (a new Redis connection:
//!   Redis may have restarted or failed over), and at least every [`FULL_READ_EVERY`], which
//!   bounds how long a Redis that silently lost or rolled back writes without losing the
//!   fence can go unnoticed.
//!
//! What members write is read every round: their lease hashes (liveness, load, report,
//! held epochs), drain flags, and their releases (one `HGETALL` per owner instead of one
//! `HGET` per record). A round's commands are then about `4 + 3 × members + writes of the
//! previous round` instead of `4 + 3 × members + 2 × C × (1 + R)` for C cameras in R regions.

pub mod items;
pub mod prune;
mod read;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use panoptes_coordinator_client::{
    AssignRecord, CameraRecord, CoordError, MemberKind, MemberRecord,
};
use redis::Connection;

/// The longest time between two full reads of a term.
pub const FULL_READ_EVERY: Duration = Duration::from_secs(5);

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
    /// Items in its owned index (read on full reads only; empty otherwise).
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
    /// Redis commands sent to read this snapshot.
    pub commands: u64,
    /// Whether this was a full read (every record, owned indexes).
    pub full: bool,
    /// The records read from Redis in this round (the others are as last read).
    pub read_items: Vec<(MemberKind, String)>,
}

impl Snapshot {
    /// The assignment records of `kind`.
    pub fn records(&self, kind: MemberKind) -> &BTreeMap<String, AssignRecord> {
        match kind {
            MemberKind::Ingest => &self.camera_assign,
            MemberKind::Worker => &self.partition_assign,
        }
    }
}

/// The records kept between rounds of one term.
#[derive(Debug)]
struct Cache {
    token: u64,
    full_at: Instant,
    /// Records as stored (releases not applied), by kind and item.
    records: BTreeMap<MemberKind, BTreeMap<String, AssignRecord>>,
    /// Items written since they were read.
    written: BTreeSet<(MemberKind, String)>,
}

/// Reads snapshots, keeping the assignment records between rounds (see the module doc).
#[derive(Debug)]
pub struct StateReader {
    frames_topic: String,
    regions: Vec<String>,
    cache: Option<Cache>,
}

impl StateReader {
    /// A reader of the state of `frames_topic`'s partitions in `regions`.
    pub fn new(frames_topic: &str, regions: Vec<String>) -> Self {
        Self {
            frames_topic: frames_topic.to_string(),
            regions,
            cache: None,
        }
    }

    /// Forgets every record: the next read is a full one.
    pub fn invalidate(&mut self) {
        self.cache = None;
    }

    /// The leader is about to write `item`'s record: it is read again next round.
    pub fn written(&mut self, kind: MemberKind, item: &str) {
        if let Some(cache) = &mut self.cache {
            cache.written.insert((kind, item.to_string()));
        }
    }

    /// Reads a snapshot for the leader holding `token`: a full read or only what changed.
    pub fn read(&mut self, c: &mut Connection, token: u64) -> Result<Snapshot, CoordError> {
        let full = self
            .cache
            .as_ref()
            .is_none_or(|k| k.token != token || k.full_at.elapsed() >= FULL_READ_EVERY);
        let (ids, registry) = read::member_ids_and_cameras(c)?;
        let n_members: usize = ids.iter().map(|(_, l)| l.len()).sum();
        let mut snap = Snapshot {
            members: read::members(c, ids, full)?,
            cameras: registry.cameras,
            cameras_stored: registry.stored,
            cameras_version: registry.version,
            commands: 4 + (if full { 3 } else { 2 }) * n_members as u64,
            full,
            ..Snapshot::default()
        };
        if full {
            self.cache = Some(Cache {
                token,
                full_at: Instant::now(),
                records: BTreeMap::new(),
                written: BTreeSet::new(),
            });
        }
        let cache = self.cache.as_mut().expect("set above");
        let wanted = read::assignment_items(&snap, &self.regions);
        let mut missing: Vec<(MemberKind, String)> = Vec::new();
        for (kind, items) in &wanted {
            let have = cache.records.entry(*kind).or_default();
            missing.extend(
                items
                    .iter()
                    .filter(|i| {
                        !have.contains_key(*i) || cache.written.contains(&(*kind, (*i).clone()))
                    })
                    .map(|i| (*kind, i.clone())),
            );
        }
        snap.commands += missing.len() as u64;
        let fresh = read::records(c, &self.frames_topic, &missing)?;
        for ((kind, item), rec) in missing.iter().zip(fresh) {
            cache
                .records
                .entry(*kind)
                .or_default()
                .insert(item.clone(), rec);
        }
        cache.written.clear();
        // Every wanted item and every record kept (orphans found by an earlier full read).
        for (kind, recs) in &cache.records {
            let into = match kind {
                MemberKind::Ingest => &mut snap.camera_assign,
                MemberKind::Worker => &mut snap.partition_assign,
            };
            into.extend(recs.iter().map(|(i, r)| (i.clone(), r.clone())));
        }
        snap.read_items = missing;
        snap.commands += read::apply_releases(c, &mut snap)?;
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_items_are_marked_only_within_a_term() {
        let mut r = StateReader::new("t", vec!["eu".into()]);
        r.written(MemberKind::Worker, "eu:1");
        assert!(r.cache.is_none(), "nothing to mark before the first read");
        r.cache = Some(Cache {
            token: 3,
            full_at: Instant::now(),
            records: BTreeMap::new(),
            written: BTreeSet::new(),
        });
        r.written(MemberKind::Worker, "eu:1");
        assert!(
            r.cache
                .as_ref()
                .unwrap()
                .written
                .contains(&(MemberKind::Worker, "eu:1".to_string()))
        );
        r.invalidate();
        assert!(r.cache.is_none());
    }
}
