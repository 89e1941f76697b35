//! Which partitions this worker owns, and under which assignment epoch.
//!
//! Sources, chosen by `[assignment] source`: [`StaticAssignment`] (partitions and epoch
//! from the configuration) and [`RedisAssignment`] (the coordinator's records in Redis; key
//! schema in `docs/coordination-keys.md`), which also serves the commit checks of
//! `source = "coordinator"` (partitions granted at run time, see [`crate::coordinated`]). Everything that needs it goes through the
//! [`Assignment`] trait, so swapping the source does not touch the pipeline. The epoch is
//! written into every detection record and, in exactly-once mode, checked before every
//! transaction commit: a superseded epoch aborts the transaction and releases the partition
//! (guarantee 3 of the design brief); a source that cannot answer fails closed (abort, never
//! commit blindly).

use std::collections::BTreeMap;
use std::time::Duration;

use panoptes_coordinator_client::RedisLink;
use panoptes_runtime::config::RedisClientConfig;
use parking_lot::{Mutex, RwLock};

/// Why the assignment could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AssignmentError {
    /// The source did not answer (Redis down, timeout): retryable.
    #[error("assignment source unavailable: {0}")]
    Unavailable(String),
    /// The source is misconfigured (e.g. an unparsable URL): fatal.
    #[error("assignment source: {0}")]
    Invalid(String),
    /// The source answered, but this worker does not own the partition, or the record is
    /// malformed: fatal at start.
    #[error("partition {partition}: {detail}")]
    NotOwned {
        /// The frames partition.
        partition: i32,
        /// What the source said.
        detail: String,
    },
}

impl AssignmentError {
    /// Whether retrying may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// The source of truth for partition ownership.
pub trait Assignment: Send + Sync {
    /// The epoch under which this worker holds `partition` now, or `None` when it does not
    /// hold it (any more) or the source cannot tell (fail closed).
    fn epoch(&self, partition: i32) -> Option<u64>;

    /// Whether records produced under `epoch` may still be committed for `partition`.
    fn is_current(&self, partition: i32, epoch: u64) -> bool {
        self.epoch(partition) == Some(epoch)
    }

    /// Like [`Assignment::is_current`], but tells "superseded" (`Ok(false)`) from "the source
    /// did not answer" (`Err`). The exactly-once publisher calls this before every commit.
    fn check(&self, partition: i32, epoch: u64) -> Result<bool, AssignmentError> {
        Ok(self.is_current(partition, epoch))
    }
}

/// Redis key of a partition's assignment record (a hash with fields `owner` and `epoch`):
/// `panoptes:assign:<cluster>:<frames topic>:<partition>`.
pub fn redis_key(cluster: &str, frames_topic: &str, partition: i32) -> String {
    panoptes_coordinator_client::keys::partition_assign(cluster, frames_topic, partition)
}

/// The assignment as the coordinator records it in Redis: hash
/// `panoptes:assign:<cluster>:<frames topic>:<partition>` with `owner` (worker id) and
/// `epoch`. `cluster` is the region whose Kafka holds the partition (the worker's own region
/// with `source = "redis"`; the granted item's cluster with `source = "coordinator"`).
///
/// The worker only reads these keys. At start it takes the epoch of each partition it is
/// configured to own ([`RedisAssignment::connect`]); before each commit it checks that the
/// record still names it at that epoch. One synchronous connection, shared behind a mutex and
/// used only from publisher threads (never from tokio threads); every call is bounded by
/// `check_timeout`, and a broken connection is re-opened on the next call.
pub struct RedisAssignment {
    link: RedisLink,
    conn: Mutex<Option<redis::Connection>>,
    timeout: Duration,
    worker_id: String,
    cluster: String,
    frames_topic: String,
}

impl std::fmt::Debug for RedisAssignment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisAssignment")
            .field("worker_id", &self.worker_id)
            .field("cluster", &self.cluster)
            .field("frames_topic", &self.frames_topic)
            .finish_non_exhaustive()
    }
}

impl RedisAssignment {
    /// Opens the source and takes the epoch of every partition in `partitions`; each must
    /// be recorded as owned by `worker_id`.
    pub fn connect(
        redis: impl Into<RedisClientConfig>,
        timeout: Duration,
        worker_id: &str,
        cluster: &str,
        frames_topic: &str,
        partitions: &[i32],
    ) -> Result<(Self, BTreeMap<i32, u64>), AssignmentError> {
        let me = Self::open(redis, timeout, worker_id, cluster, frames_topic)?;
        let mut epochs = BTreeMap::new();
        for &p in partitions {
            match me.read(p)? {
                (Some(owner), Some(epoch)) if owner == worker_id && epoch > 0 => {
                    epochs.insert(p, epoch);
                }
                (owner, epoch) => {
                    return Err(AssignmentError::NotOwned {
                        partition: p,
                        detail: format!(
                            "{} says owner {owner:?} epoch {epoch:?}, not {worker_id:?}",
                            redis_key(cluster, frames_topic, p)
                        ),
                    });
                }
            }
        }
        Ok((me, epochs))
    }

    /// Opens the source for `cluster`'s partitions without reading anything yet (the first
    /// check connects). `redis` is the node's Redis settings (TLS, ACL user), or a bare URL.
    pub fn open(
        redis: impl Into<RedisClientConfig>,
        timeout: Duration,
        worker_id: &str,
        cluster: &str,
        frames_topic: &str,
    ) -> Result<Self, AssignmentError> {
        let link =
            RedisLink::open(&redis.into()).map_err(|e| AssignmentError::Invalid(e.to_string()))?;
        Ok(Self {
            link,
            conn: Mutex::new(None),
            timeout,
            worker_id: worker_id.to_string(),
            cluster: cluster.to_string(),
            frames_topic: frames_topic.to_string(),
        })
    }

    /// `(owner, epoch)` of a partition's record (`None` for a missing field).
    fn read(&self, partition: i32) -> Result<(Option<String>, Option<u64>), AssignmentError> {
        let mut guard = self.conn.lock();
        if guard.is_none() {
            let c = self
                .link
                .connect(self.timeout)
                .map_err(|e| AssignmentError::Unavailable(e.to_string()))?;
            *guard = Some(c);
        }
        let conn = guard.as_mut().expect("connection opened above");
        let result = redis::cmd("HMGET")
            .arg(redis_key(&self.cluster, &self.frames_topic, partition))
            .arg("owner")
            .arg("epoch")
            .query::<(Option<String>, Option<String>)>(conn);
        match result {
            Ok((owner, epoch)) => Ok((owner, epoch.and_then(|e| e.trim().parse().ok()))),
            Err(e) => {
                // Re-open on the next call: a timed-out reply may still arrive on this one.
                *guard = None;
                Err(AssignmentError::Unavailable(e.to_string()))
            }
        }
    }
}

impl Assignment for RedisAssignment {
    fn epoch(&self, partition: i32) -> Option<u64> {
        match self.read(partition) {
            Ok((Some(owner), epoch)) if owner == self.worker_id => epoch,
            _ => None,
        }
    }

    fn check(&self, partition: i32, epoch: u64) -> Result<bool, AssignmentError> {
        let (owner, current) = self.read(partition)?;
        Ok(owner.as_deref() == Some(self.worker_id.as_str()) && current == Some(epoch))
    }
}

/// A static assignment: fixed partitions (or every partition) under one epoch, which a test
/// or a future coordinator client can change with [`StaticAssignment::set`].
#[derive(Debug, Default)]
pub struct StaticAssignment {
    default_epoch: u64,
    overrides: RwLock<BTreeMap<i32, Option<u64>>>,
}

impl StaticAssignment {
    /// Every partition this worker was configured with, under `epoch`.
    pub fn new(epoch: u64) -> Self {
        Self {
            default_epoch: epoch,
            overrides: RwLock::new(BTreeMap::new()),
        }
    }

    /// Changes one partition's epoch (`None`: the partition was taken away).
    pub fn set(&self, partition: i32, epoch: Option<u64>) {
        self.overrides.write().insert(partition, epoch);
    }
}

impl Assignment for StaticAssignment {
    fn epoch(&self, partition: i32) -> Option<u64> {
        match self.overrides.read().get(&partition) {
            Some(e) => *e,
            None => Some(self.default_epoch),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superseded_epochs_are_not_current() {
        let a = StaticAssignment::new(3);
        assert!(a.is_current(0, 3));
        a.set(0, Some(4));
        assert!(!a.is_current(0, 3));
        assert!(a.is_current(1, 3));
        a.set(1, None);
        assert!(!a.is_current(1, 3));
    }
}
