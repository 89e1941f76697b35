//! Which partitions this worker owns, and under which assignment epoch.
//!
//! Today the assignment is static (from the configuration); the coordinator will supply it at
//! run time. Everything that needs it goes through the [`Assignment`] trait, so swapping the
//! source does not touch the pipeline. The epoch is written into every detection record and,
//! in exactly-once mode, checked before every transaction commit: a superseded epoch aborts
//! the transaction and releases the partition (guarantee 3 of the design brief).

use std::collections::BTreeMap;

use parking_lot::RwLock;

/// The source of truth for partition ownership.
pub trait Assignment: Send + Sync {
    /// The epoch under which this worker holds `partition` now, or `None` when it does not
    /// hold it (any more).
    fn epoch(&self, partition: i32) -> Option<u64>;

    /// Whether records produced under `epoch` may still be committed for `partition`.
    fn is_current(&self, partition: i32, epoch: u64) -> bool {
        self.epoch(partition) == Some(epoch)
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
