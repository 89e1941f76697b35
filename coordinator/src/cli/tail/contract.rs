//! The readers' contract for `panoptes.detections` (design guarantee 3), as pure logic: what a
//! downstream reader must do, beside reading with `isolation.level=read_committed`, so that a
//! zombie worker's output and a frame processed twice are never shown.
//!
//! 1. **Epoch rule.** Per *frames-topic partition* (the record's `partition` field) the reader
//!    keeps the highest `epoch` among the records it has read so far, in read order. A record
//!    with a lower epoch comes from a worker that had lost the partition (a zombie): it is
//!    [`Verdict::Superseded`] and goes no further. An equal or higher epoch is accepted and
//!    raises the mark. The rule is applied on arrival, never retroactively (a zombie's record
//!    read before the new owner's first one is accepted: no reader could know better), which
//!    is exactly the rule of the loadtest checker (`loadtest/checker/src/accounting.rs`).
//! 2. **Dedup on `(camera_id, seq)`.** An accepted record whose camera and seq were already
//!    accepted is a [`Verdict::Duplicate`]: the same frame processed again after a takeover
//!    (on a broker that shows aborted transactions, or in at-least-once mode).
//!
//! Memory is bounded: per camera the last [`DEDUP_WINDOW`] accepted seqs are remembered (a
//! takeover reprocesses at most the frames since the last commit, far fewer), and at most
//! [`MAX_CAMERAS`] cameras are tracked; records of further cameras pass
//! ([`Verdict::Untracked`], counted by the caller). A seq older than every remembered one of
//! a full window is accepted: a camera re-registered under the same id starts its seqs again.
//!
//! [`Filter`] then decides what is printed (camera, class, score, status); it never feeds back
//! into the contract, so filtering cannot hide a duplicate's first copy from the rule.

use std::collections::{BTreeSet, HashMap};

use panoptes_schemas::{DetectionRecord, FrameStatus};

/// Seqs remembered per camera for dedup (about 100 s of a 5 fps camera).
pub const DEDUP_WINDOW: usize = 512;
/// Most cameras whose seqs are remembered; bounds what a foreign producer can make us keep.
pub const MAX_CAMERAS: usize = 10_000;
/// Most frames partitions whose epoch mark is kept (a partition id is an `i32` from the wire).
pub const MAX_PARTITIONS: usize = 100_000;

/// What the contract says about one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Show it.
    Accept,
    /// A zombie's record: its frames partition has reached epoch `highest` already.
    Superseded {
        /// The highest epoch read for the record's frames partition.
        highest: u64,
    },
    /// The frame `(camera_id, seq)` was accepted before.
    Duplicate,
    /// Accepted, but not remembered for dedup: the camera table is full.
    Untracked,
}

/// The epoch marks and dedup windows of one reader.
#[derive(Debug, Default)]
pub struct Contract {
    marks: HashMap<i32, u64>,
    seen: HashMap<String, BTreeSet<u64>>,
}

impl Contract {
    /// Applies the contract to `record` (in read order) and remembers it.
    pub fn observe(&mut self, record: &DetectionRecord) -> Verdict {
        let tracked = self.marks.len() < MAX_PARTITIONS;
        match self.marks.get_mut(&record.partition) {
            Some(mark) if record.epoch < *mark => {
                return Verdict::Superseded { highest: *mark };
            }
            Some(mark) => *mark = record.epoch,
            None if tracked => {
                self.marks.insert(record.partition, record.epoch);
            }
            None => {}
        }
        let room = self.seen.len() < MAX_CAMERAS;
        let window = match self.seen.get_mut(&record.camera_id) {
            Some(w) => w,
            None if !room => return Verdict::Untracked,
            None => self.seen.entry(record.camera_id.clone()).or_default(),
        };
        if !window.insert(record.seq) {
            return Verdict::Duplicate;
        }
        if window.len() > DEDUP_WINDOW {
            window.pop_first();
        }
        Verdict::Accept
    }
}

/// Which detections and records are printed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Camera ids to show (all when empty).
    pub cameras: Vec<String>,
    /// Classes to show, by label or class id (all when empty).
    pub classes: Vec<String>,
    /// Lowest score shown.
    pub min_score: f32,
    /// Also show records with no matching detection (and records not inferred: stale, shed).
    pub with_empty: bool,
}

impl Filter {
    /// The record as it is to be shown (its detections narrowed to the matching ones), or
    /// `None` when it is not shown at all.
    pub fn apply(&self, record: &DetectionRecord) -> Option<DetectionRecord> {
        if !self.cameras.is_empty() && !self.cameras.contains(&record.camera_id) {
            return None;
        }
        if record.status != FrameStatus::Ok && !self.with_empty {
            return None;
        }
        let mut shown = record.clone();
        shown.detections.retain(|d| {
            d.score >= self.min_score
                && (self.classes.is_empty()
                    || self.classes.iter().any(|c| {
                        *c == d.label || c.parse::<u32>().is_ok_and(|id| id == d.class_id)
                    }))
        });
        (self.with_empty || !shown.detections.is_empty()).then_some(shown)
    }
}

/// What a reader did with the records it read, for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records read.
    pub read: u64,
    /// Records printed.
    pub shown: u64,
    /// Dropped by the epoch rule.
    pub superseded: u64,
    /// Dropped as duplicates of an accepted `(camera, seq)`.
    pub duplicates: u64,
    /// Accepted but not shown (filters).
    pub filtered: u64,
    /// Not a valid detection record (not JSON, wrong shape, failed validation).
    pub malformed: u64,
    /// Accepted without dedup (camera table full).
    pub untracked: u64,
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read {} records: shown {}, filtered out {}, dropped {} superseded (epoch rule) and {} duplicates, {} malformed",
            self.read, self.shown, self.filtered, self.superseded, self.duplicates, self.malformed
        )?;
        if self.untracked > 0 {
            write!(
                f,
                ", {} not deduplicated (too many cameras)",
                self.untracked
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use panoptes_schemas::{Detection, ModelRef, StageLatencies};

    fn rec(camera: &str, partition: i32, epoch: u64, seq: u64) -> DetectionRecord {
        DetectionRecord {
            schema_version: panoptes_schemas::SCHEMA_VERSION,
            camera_id: camera.into(),
            seq,
            capture_time_us: 1,
            frame_width: 640,
            frame_height: 360,
            model: ModelRef {
                name: "m".into(),
                version: "1".into(),
            },
            status: FrameStatus::Ok,
            detections: vec![
                Detection::from_pixels(0, "person", 0.9, [1.0, 1.0, 10.0, 10.0], 640, 360),
                Detection::from_pixels(2, "car", 0.4, [1.0, 1.0, 10.0, 10.0], 640, 360),
            ],
            latency: StageLatencies::default(),
            epoch,
            worker_id: "w".into(),
            partition,
            offset: seq as i64,
            published_time_us: 2,
            traceparent: None,
        }
    }

    #[test]
    fn zombie_records_after_the_new_epoch_are_dropped() {
        let mut c = Contract::default();
        assert_eq!(c.observe(&rec("a", 0, 3, 1)), Verdict::Accept);
        // Read before the new owner's first record: accepted (on arrival, not retroactive).
        assert_eq!(c.observe(&rec("a", 0, 3, 2)), Verdict::Accept);
        assert_eq!(c.observe(&rec("a", 0, 4, 3)), Verdict::Accept);
        assert_eq!(
            c.observe(&rec("a", 0, 3, 4)),
            Verdict::Superseded { highest: 4 }
        );
        // Marks are per frames partition, not per camera or worker.
        assert_eq!(c.observe(&rec("b", 1, 1, 1)), Verdict::Accept);
        assert_eq!(c.observe(&rec("a", 0, 5, 4)), Verdict::Accept);
    }

    #[test]
    fn a_frame_is_shown_once_whatever_the_epoch() {
        let mut c = Contract::default();
        assert_eq!(c.observe(&rec("a", 0, 3, 7)), Verdict::Accept);
        // Reprocessed by the new owner after a takeover.
        assert_eq!(c.observe(&rec("a", 0, 4, 7)), Verdict::Duplicate);
        assert_eq!(c.observe(&rec("a", 0, 4, 7)), Verdict::Duplicate);
        assert_eq!(c.observe(&rec("b", 0, 4, 7)), Verdict::Accept);
    }

    #[test]
    fn memory_is_bounded() {
        let mut c = Contract::default();
        for seq in 0..(DEDUP_WINDOW as u64 + 10) {
            assert_eq!(c.observe(&rec("a", 0, 1, seq)), Verdict::Accept);
        }
        assert_eq!(c.seen["a"].len(), DEDUP_WINDOW);
        // Still inside the window: a duplicate.
        assert_eq!(c.observe(&rec("a", 0, 1, 20)), Verdict::Duplicate);
        // Older than the window: a restarted camera's seq, accepted.
        assert_eq!(c.observe(&rec("a", 0, 1, 2)), Verdict::Accept);
        let mut c = Contract::default();
        for i in 0..MAX_CAMERAS {
            c.observe(&rec(&format!("c{i}"), 0, 1, 1));
        }
        assert_eq!(c.observe(&rec("one-more", 0, 1, 1)), Verdict::Untracked);
        assert_eq!(c.observe(&rec("c0", 0, 1, 1)), Verdict::Duplicate);
    }

    #[test]
    fn filters_narrow_what_is_shown() {
        let r = rec("a", 0, 1, 1);
        let all = Filter::default();
        assert_eq!(all.apply(&r).unwrap().detections.len(), 2);
        let f = Filter {
            classes: vec!["car".into()],
            ..Filter::default()
        };
        assert_eq!(f.apply(&r).unwrap().detections[0].label, "car");
        let f = Filter {
            classes: vec!["0".into()],
            min_score: 0.5,
            ..Filter::default()
        };
        assert_eq!(f.apply(&r).unwrap().detections[0].label, "person");
        let f = Filter {
            classes: vec!["car".into()],
            min_score: 0.5,
            ..Filter::default()
        };
        assert!(f.apply(&r).is_none());
        assert!(
            Filter {
                with_empty: true,
                ..f
            }
            .apply(&r)
            .is_some_and(|s| s.detections.is_empty())
        );
        let f = Filter {
            cameras: vec!["b".into()],
            ..Filter::default()
        };
        assert!(f.apply(&r).is_none());
        let mut stale = r.clone();
        stale.status = FrameStatus::SkippedStale;
        stale.detections.clear();
        assert!(all.apply(&stale).is_none());
        assert!(
            Filter {
                with_empty: true,
                ..Filter::default()
            }
            .apply(&stale)
            .is_some()
        );
    }
}
