//! The [`Sequencer`]: restores consumption order within a partition. Pure.
//!
//! Stages finish frames in any order (a dead letter from a decode thread overtakes the frames
//! still in a batch); each frame carries `idx`, its place among the frames of its partition
//! run, and the sequencer releases outcomes only in `idx` order 0, 1, 2, … — so one camera's
//! records (one camera = one partition) leave in capture order.

use std::collections::BTreeMap;

use crate::pipeline::work::Outcome;

/// Releases outcomes in `idx` order (0, 1, 2, … per partition).
#[derive(Debug, Default)]
pub struct Sequencer {
    next: u64,
    waiting: BTreeMap<u64, Outcome>,
}

impl Sequencer {
    /// Accepts one outcome; returns every outcome now releasable, in order.
    pub fn push(&mut self, outcome: Outcome) -> Vec<Outcome> {
        self.waiting.insert(outcome.pos.idx, outcome);
        let mut ready = Vec::new();
        while let Some(o) = self.waiting.remove(&self.next) {
            ready.push(o);
            self.next += 1;
        }
        ready
    }

    /// Outcomes held back waiting for an earlier one.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::work::test_outcome as outcome;

    #[test]
    fn sequencer_restores_order() {
        let mut s = Sequencer::default();
        assert!(s.push(outcome(2)).is_empty());
        assert!(s.push(outcome(1)).is_empty());
        assert_eq!(s.waiting(), 2);
        let ready: Vec<u64> = s.push(outcome(0)).iter().map(|o| o.pos.idx).collect();
        assert_eq!(ready, vec![0, 1, 2]);
        assert_eq!(s.push(outcome(3)).len(), 1);
    }
}
