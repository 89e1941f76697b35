//! The owner-epoch rule: drop frames from a superseded ingest owner (a zombie ingest node).
//!
//! Every frame published in coordinator mode carries `owner_epoch`, the grant epoch under
//! which its ingest node held the camera. Epochs only grow, so per camera a reader keeps the
//! highest owner epoch seen so far, in the order it reads the camera's partition; a frame
//! whose epoch is *lower* than that comes from a node that lost the camera (paused or cut
//! off past its lease) after the new owner had already published: it is superseded. An
//! equal or higher epoch is accepted (and raises the mark). A frame without an owner epoch
//! (an ingest node running from its own camera file) is accepted and leaves the mark alone.
//!
//! The rule is applied on arrival, never retroactively: a zombie's frame that lands before
//! the new owner's first frame is accepted (no reader could know better). It lives here,
//! beside the envelope, because every reader of `panoptes.frames` applies the same rule: the
//! worker in its consumer thread, in offset order (so the verdict does not depend on how the
//! decode pool interleaves frames), and the loadtest checker on the frames topic. Pure
//! logic, no I/O.
//!
//! Memory is bounded: at most [`MAX_TRACKED_CAMERAS`] cameras are tracked; frames of further
//! cameras are accepted untracked (counted by the caller through [`Verdict::Untracked`]).

use std::collections::HashMap;

/// Most cameras whose owner epoch one reader tracks. A camera lives in one partition and a
/// worker consumes a bounded set of partitions, so this is far above any real deployment;
/// it only bounds what a foreign producer inventing camera ids can make the worker keep.
pub const MAX_TRACKED_CAMERAS: usize = 100_000;

/// What the rule says about one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Process the frame: its epoch is the highest seen for its camera (or it has none).
    Accept,
    /// Drop the frame: a newer owner (epoch `highest`) already published this camera.
    Superseded {
        /// The highest owner epoch seen for the camera.
        highest: u64,
    },
    /// Process the frame, but it is not tracked: the table is full.
    Untracked,
}

/// Highest owner epoch seen per camera.
#[derive(Debug, Default)]
pub struct OwnerEpochs {
    highest: HashMap<String, u64>,
}

impl OwnerEpochs {
    /// Applies the rule to a frame of `camera` carrying `epoch` and remembers it.
    pub fn observe(&mut self, camera: &str, epoch: Option<u64>) -> Verdict {
        let Some(epoch) = epoch else {
            return Verdict::Accept;
        };
        if let Some(highest) = self.highest.get_mut(camera) {
            if epoch < *highest {
                return Verdict::Superseded { highest: *highest };
            }
            *highest = epoch;
            return Verdict::Accept;
        }
        if self.highest.len() >= MAX_TRACKED_CAMERAS {
            return Verdict::Untracked;
        }
        self.highest.insert(camera.to_owned(), epoch);
        Verdict::Accept
    }

    /// The highest owner epoch seen for `camera`.
    pub fn highest(&self, camera: &str) -> Option<u64> {
        self.highest.get(camera).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_epoch_after_a_higher_one_is_superseded() {
        let mut r = OwnerEpochs::default();
        assert_eq!(r.observe("cam0", Some(3)), Verdict::Accept);
        assert_eq!(r.observe("cam0", Some(3)), Verdict::Accept);
        assert_eq!(r.observe("cam0", Some(5)), Verdict::Accept);
        assert_eq!(
            r.observe("cam0", Some(3)),
            Verdict::Superseded { highest: 5 }
        );
        // The zombie's frame does not lower the mark; the new owner goes on.
        assert_eq!(r.highest("cam0"), Some(5));
        assert_eq!(r.observe("cam0", Some(5)), Verdict::Accept);
        assert_eq!(r.observe("cam0", Some(6)), Verdict::Accept);
        assert_eq!(
            r.observe("cam0", Some(5)),
            Verdict::Superseded { highest: 6 }
        );
    }

    #[test]
    fn zombie_frames_before_the_new_owner_are_accepted() {
        // Applied on arrival: the old owner's frames read before the new owner's first frame
        // are accepted; only those after it are dropped.
        let mut r = OwnerEpochs::default();
        let arrivals = [2, 2, 2, 3, 2, 3, 2];
        let verdicts: Vec<bool> = arrivals
            .iter()
            .map(|e| r.observe("cam0", Some(*e)) == Verdict::Accept)
            .collect();
        assert_eq!(verdicts, [true, true, true, true, false, true, false]);
    }

    #[test]
    fn cameras_are_independent_and_frames_without_epoch_pass() {
        let mut r = OwnerEpochs::default();
        assert_eq!(r.observe("a", Some(9)), Verdict::Accept);
        assert_eq!(r.observe("b", Some(1)), Verdict::Accept);
        assert_eq!(r.observe("a", None), Verdict::Accept);
        assert_eq!(r.highest("a"), Some(9));
        assert_eq!(r.observe("c", None), Verdict::Accept);
        assert_eq!(r.highest("c"), None);
    }

    #[test]
    fn the_table_is_bounded() {
        let mut r = OwnerEpochs::default();
        for i in 0..MAX_TRACKED_CAMERAS {
            assert_eq!(r.observe(&format!("c{i}"), Some(1)), Verdict::Accept);
        }
        assert_eq!(r.observe("one-more", Some(1)), Verdict::Untracked);
        // Tracked cameras keep their rule.
        assert_eq!(r.observe("c0", Some(2)), Verdict::Accept);
        assert_eq!(r.observe("c0", Some(1)), Verdict::Superseded { highest: 2 });
    }
}
