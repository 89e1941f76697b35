//! Partition runs given up at their epoch (coordinator mode).
//!
//! A run that failed — its publisher ended with a Kafka error, or the lane's watchdog found
//! a librdkafka transaction call wedged past its timeout — may have left records of an
//! open transaction on the detections topic that nobody can abort any more (the wedged
//! thread holds the producer). Kafka hides them once the partition's transactional id is
//! initialised again; a broker that shows them (the development broker) would let readers
//! see them next to the records of the restarted run. Restarting at the **same** epoch
//! would make those two sets indistinguishable: same-epoch duplicates no reader can
//! explain. So the run is given up at its epoch instead:
//!
//! - the item is released through the member agent at that epoch (the same release a
//!   handover ends with), so the leader grants it again at a higher epoch — to another worker
//!   when one can take it, else back here;
//! - until the coordinator's next grant is seen, a grant of the item at that epoch or below
//!   is never started here again ([`GivenUp::blocks`]), even while the agent's snapshot
//!   still shows it;
//! - a release Redis does not take is tried again every [`RELEASE_RETRY`]; one refused
//!   because the record no longer names this worker at that epoch (the item moved anyway) is
//!   done;
//! - an entry is forgotten once released and the snapshot no longer grants the item at that
//!   epoch or below ([`GivenUp::forget_settled`]).
//!
//! The release is a blocking Redis call: it runs on the driver's thread, as every runner
//! call does.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use panoptes_coordinator_client::{CoordError, Grant, MemberAgent};
use parking_lot::Mutex;

/// How long a release Redis did not take waits before it is tried again.
pub const RELEASE_RETRY: Duration = Duration::from_secs(1);

/// Releases `item` at `epoch`: `Ok(false)` when the record no longer names this node there.
type Release = Box<dyn Fn(&str, u64) -> Result<bool, CoordError> + Send + Sync>;

/// One given-up run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// The epoch it ran at: nothing of this item starts here at this epoch or below.
    epoch: u64,
    /// The release went through (or was refused: the item had moved already).
    released: bool,
    /// When the release is tried (again).
    due: Instant,
}

/// The runs given up at their epoch, by item (see the module documentation).
pub struct GivenUp {
    release: Release,
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl GivenUp {
    /// Releases through `agent` (no next sequence number: partitions have none).
    pub fn new(agent: MemberAgent) -> Self {
        Self::with_release(Box::new(move |item, epoch| {
            agent.release(item, epoch, None)
        }))
    }

    fn with_release(release: Release) -> Self {
        Self {
            release,
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    /// Gives `item` up at `epoch` (its run was just aborted); the release is made by the next
    /// [`GivenUp::release_due`]. A later epoch replaces an earlier entry.
    pub fn give_up(&self, item: &str, epoch: u64) {
        let mut entries = self.entries.lock();
        if entries.get(item).is_some_and(|e| e.epoch >= epoch) {
            return;
        }
        tracing::warn!(
            item,
            epoch,
            "partition run given up: releasing it to be granted again at a higher epoch"
        );
        entries.insert(
            item.to_string(),
            Entry {
                epoch,
                released: false,
                due: Instant::now(),
            },
        );
    }

    /// Makes the releases that are due; a failed one is tried again after
    /// [`RELEASE_RETRY`].
    pub fn release_due(&self) {
        let now = Instant::now();
        let due: Vec<(String, u64)> = self
            .entries
            .lock()
            .iter()
            .filter(|(_, e)| !e.released && e.due <= now)
            .map(|(item, e)| (item.clone(), e.epoch))
            .collect();
        for (item, epoch) in due {
            let outcome = (self.release)(&item, epoch);
            let mut entries = self.entries.lock();
            let Some(e) = entries.get_mut(&item).filter(|e| e.epoch == epoch) else {
                continue;
            };
            match outcome {
                Ok(true) => {
                    tracing::info!(item, epoch, "given-up partition released");
                    e.released = true;
                }
                Ok(false) => {
                    tracing::info!(
                        item,
                        epoch,
                        "given-up partition already moved: nothing to release"
                    );
                    e.released = true;
                }
                Err(err) => {
                    tracing::warn!(item, epoch, error = %err, "release of a given-up partition failed: retrying");
                    e.due = now + RELEASE_RETRY;
                }
            }
        }
    }

    /// Whether a grant of `item` at `epoch` must not start here (given up at that epoch or
    /// a later one).
    pub fn blocks(&self, item: &str, epoch: u64) -> bool {
        self.entries
            .lock()
            .get(item)
            .is_some_and(|e| epoch <= e.epoch)
    }

    /// Forgets the released entries the coordinator's snapshot (`grants`) has moved past: the
    /// item is no longer granted here, or granted at a higher epoch.
    pub fn forget_settled(&self, grants: &BTreeMap<String, Grant>) {
        self.entries.lock().retain(|item, e| {
            !e.released || grants.get(item).is_some_and(|g| g.epoch() <= e.epoch)
        });
    }

    /// Items given up and not forgotten yet, with their epoch.
    #[cfg(test)]
    fn items(&self) -> BTreeMap<String, u64> {
        self.entries
            .lock()
            .iter()
            .map(|(k, e)| (k.clone(), e.epoch))
            .collect()
    }
}

#[cfg(test)]
mod tests;
