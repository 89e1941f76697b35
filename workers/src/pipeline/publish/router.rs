//! The [`Router`]: hands each finished frame's [`Outcome`] to the publisher thread of its
//! partition, over a bounded channel per partition.
//!
//! Decode threads (dead letters, stale skips) and the inference thread (detection records)
//! both send here. A full channel blocks the sender, which is how a slow publisher pushes
//! back up to the consumer's pause.

use std::collections::BTreeMap;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use crate::drift::DriftTap;
use crate::pipeline::work::{Outcome, Output};

/// Hands outcomes to the thread of their partition. Cheap to clone; partitions come and go
/// at run time ([`Router::add`], [`Router::remove`]).
#[derive(Clone, Debug, Default)]
pub struct Router {
    senders: Arc<parking_lot::RwLock<BTreeMap<i32, Sender<Outcome>>>>,
    capacity: usize,
    /// Detection records feed drift on their way; a removed partition's cameras are forgotten.
    drift: DriftTap,
}

impl Router {
    /// Creates the channels (each bounded by `capacity`) for `partitions`.
    pub fn new(partitions: &[i32], capacity: usize) -> (Self, BTreeMap<i32, Receiver<Outcome>>) {
        let router = Self {
            senders: Arc::default(),
            capacity,
            drift: DriftTap::default(),
        };
        let receivers = partitions.iter().map(|&p| (p, router.add(p))).collect();
        (router, receivers)
    }

    /// This router with `drift` fed from every record sent ([`crate::drift`]).
    pub fn with_drift(mut self, drift: DriftTap) -> Self {
        self.drift = drift;
        self
    }

    /// The drift tap (decode threads hand it image statistics).
    pub fn drift(&self) -> &DriftTap {
        &self.drift
    }

    /// Opens (or replaces) `partition`'s channel and returns its receiving end.
    pub fn add(&self, partition: i32) -> Receiver<Outcome> {
        let (tx, rx) = crossbeam_channel::bounded(self.capacity.max(1));
        self.senders.write().insert(partition, tx);
        rx
    }

    /// Closes `partition`'s channel: its publisher sees the end once it has taken what was
    /// sent before; later outcomes for it are dropped.
    pub fn remove(&self, partition: i32) {
        self.senders.write().remove(&partition);
        self.drift.forget_partition(partition);
    }

    /// Sends an outcome to its partition's publisher (dropped if that partition was released).
    pub fn send(&self, outcome: Outcome) {
        // Clone the sender out: a full channel blocks this thread, never the map.
        let tx = self.senders.read().get(&outcome.pos.partition).cloned();
        if let (Some(_), Output::Record(r)) = (&tx, &outcome.output) {
            self.drift.record(r);
        }
        if let Some(tx) = tx {
            let _ = tx.send(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::work::test_outcome as outcome;

    #[test]
    fn router_partitions_come_and_go() {
        let (router, mut rx) = Router::new(&[0], 4);
        router.send(outcome(0));
        assert_eq!(rx.remove(&0).unwrap().try_iter().count(), 1);
        let rx0 = router.add(0);
        router.send(outcome(1));
        router.remove(0);
        // What was sent before the removal is still delivered, then the channel ends.
        assert_eq!(rx0.iter().count(), 1);
        router.send(outcome(2));
        assert!(rx0.try_recv().is_err());
    }
}
