//! Pure accounting of one run: frames in, detection records and dead letters out.
//!
//! Feed [`Accounting`] the records of `panoptes.frames`, `panoptes.detections` and
//! `panoptes.frames.dlq` in any interleaving of the three topics (each topic's partitions in
//! their own order, as a consumer delivers them); [`Accounting::report`] then tells, per
//! camera and in total, what happened to every frame. No I/O here.
//!
//! # Rules
//!
//! - **Epoch rule** (the one the `panoptes` consumer tooling applies too): for every
//!   *frames-topic partition* — the `partition` field of a detection record — the checker
//!   keeps the highest `epoch` among the detection records it has read so far, in the order
//!   it reads them. A record whose epoch is *lower* than that is **superseded**: it came from
//!   a worker that had lost the partition (a zombie) and is discarded before any other rule
//!   sees it. A record with a higher epoch raises the mark; an equal epoch is accepted.
//!   The rule is applied on arrival and never retroactively: a zombie record read *before*
//!   the first record of the new epoch is accepted (no reader could know better), and shows
//!   up as a duplicate if the new owner processes the same frame again. Records for one
//!   frames partition normally sit in one detections partition (key = camera id, and one
//!   camera lives in one frames partition), so "read order" is topic order; if they are
//!   spread over several detections partitions, the interleaving is the consumer's.
//! - **Accepted** records are counted per `(camera, seq)`: the first is the frame's record,
//!   later ones are **duplicated**. A duplicate with a higher epoch than the frame's first
//!   accepted record is also counted under **duplicated across epochs**, by the worker that
//!   wrote the first record: the frame was processed again after a takeover. In exactly-once
//!   mode on Kafka the first record belongs to an aborted transaction and is never shown to a
//!   `read_committed` reader; the development broker shows aborted transactions, so there
//!   these duplicates are expected for records of a killed or paused worker, and only
//!   those (tests check exactly that). The first record of a frame whose seq is lower than a
//!   seq already accepted for that camera is **reordered** (duplicates are not also counted
//!   as reordered).
//! - A frame seen on the frames topic is accounted by its first accepted record of any
//!   status (`ok`, or `skipped_stale` / `shed_overload`, counted under **skipped**) or by a
//!   dead letter (matched by camera and seq, or else by partition and offset). A frame with
//!   neither is **lost**.
//! - Accepted records for frames never seen on the frames topic are **unknown frames**
//!   (reported separately: retention may have dropped them before the checker read them).
//! - **Owner-epoch rule** (frames topic): per camera, the checker keeps the highest
//!   `owner_epoch` among the frames it has read, in partition order; a frame with a lower one
//!   is a superseded ingest owner's (a zombie ingest node's), counted under
//!   **owner-superseded frames**. Workers account for such a frame with a `superseded_owner`
//!   record (counted under skipped; it is exempt from the reorder rule: it is older than the
//!   new owner's frames by nature); one of them inferred (`ok`) is counted under
//!   **owner-superseded inferred**.
//! - Missing seq numbers between the lowest and highest seq a camera has on the frames topic
//!   are **gaps**: dropped before Kafka (or by retention), not lost by the workers.
//! - **Accuracy** (optional) scores the first accepted `ok` record of every frame whose
//!   barcode is readable; see [`super::accuracy`].
//!
//! Memory is a small fixed-size entry per frame (plus a frame's detections only while its
//! record has arrived before the frame itself); payloads are never kept.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use panoptes_schemas::{
    DeadLetter, DeadLetterReason, DetectionRecord, FrameHeaders, FrameStatus, OwnerEpochs,
    OwnerVerdict,
};

use super::accuracy::{
    MatchCounts, ScoredBox, frame_index_of_payload, match_detections, scaled_ground_truth,
};
use super::report::{AccuracyReport, CameraReport, MAX_EXAMPLES, Report};
use panoptes_scene::SceneSpec;
use panoptes_scene::camera::CameraConfig;

/// What the accounting did with one detection record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The first accepted record of its frame.
    Accepted,
    /// Accepted, and the first of its frame, but out of seq order for its camera.
    Reordered,
    /// Accepted, but not the first for its frame.
    Duplicate,
    /// Discarded: its epoch was superseded.
    Superseded,
}

/// What the accounting knows about a frame's picture.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Truth {
    /// Accuracy off, scene unknown: nothing to score against.
    None,
    /// The barcode could not be read.
    Unreadable,
    /// The headers' source size differs from the scene spec.
    Mismatched,
    /// Frame index read from the barcode, with the payload size to scale ground truth to.
    Known { index: u64, width: u32, height: u32 },
}

/// Where and what a frame was on the frames topic.
#[derive(Debug, Clone, Copy)]
struct Seen {
    partition: i32,
    offset: i64,
    truth: Truth,
    /// The owner-epoch rule called it a superseded ingest owner's frame.
    superseded_owner: bool,
}

#[derive(Debug, Default)]
struct FrameState {
    seen: Option<Seen>,
    accepted: u32,
    /// Epoch and worker (index into `Accounting::workers`) of the first accepted record.
    first: Option<(u64, u32)>,
    /// Status of the first accepted record.
    first_status: Option<FrameStatus>,
    dead_letters: u32,
    /// Detections of the first accepted `ok` record, kept until the frame is seen.
    pending: Option<Vec<ScoredBox>>,
}

#[derive(Debug, Default)]
struct CameraState {
    frames: HashMap<u64, FrameState>,
    max_accepted_seq: Option<u64>,
    detections_accepted: u64,
    duplicated: u64,
    duplicated_across_epochs: BTreeMap<String, u64>,
    reordered: u64,
    superseded: u64,
    skipped: BTreeMap<String, u64>,
    dead_lettered: BTreeMap<String, u64>,
    evaluated: u64,
    unreadable: u64,
    mismatched: u64,
    counts: MatchCounts,
}

/// A camera's scene, for accuracy.
#[derive(Debug, Clone, Copy)]
struct Scene {
    spec: SceneSpec,
    fps: u32,
}

/// The accounting state of one run (see the module docs for the rules).
#[derive(Debug)]
pub struct Accounting {
    accuracy: bool,
    scenes: HashMap<String, Scene>,
    cameras: BTreeMap<String, CameraState>,
    /// Highest epoch read so far, per frames-topic partition.
    epochs: HashMap<i32, u64>,
    /// Highest ingest owner epoch read so far on the frames topic, per camera.
    owners: OwnerEpochs,
    /// Worker ids seen, interned (frame states keep an index).
    workers: Vec<String>,
    /// Malformed frame records, by position.
    malformed_frames: HashSet<(i32, i64)>,
    /// Dead letters naming no camera and seq: matched by position at report time.
    positional_dead_letters: Vec<(i32, i64, DeadLetterReason)>,
    malformed_records: u64,
    decoded: u64,
    decode_time: Duration,
}

impl Accounting {
    /// Empty accounting. With `accuracy`, frames of the cameras in `cameras` (the simulator's
    /// camera specs) are decoded and their detections scored against ground truth.
    pub fn new(accuracy: bool, cameras: &[CameraConfig]) -> Self {
        let scenes = cameras
            .iter()
            .map(|c| {
                let scene = Scene {
                    spec: c.scene(),
                    fps: c.fps,
                };
                (c.id.clone(), scene)
            })
            .collect();
        Self {
            accuracy,
            scenes,
            cameras: BTreeMap::new(),
            epochs: HashMap::new(),
            owners: OwnerEpochs::default(),
            workers: Vec::new(),
            malformed_frames: HashSet::new(),
            positional_dead_letters: Vec::new(),
            malformed_records: 0,
            decoded: 0,
            decode_time: Duration::ZERO,
        }
    }

    /// Records a frame read from the frames topic at `partition`/`offset`.
    ///
    /// A key that disagrees with the headers' camera id makes the record malformed (the key
    /// picks the partition, so such a record breaks per-camera ordering). With accuracy on
    /// and the camera's scene known, the payload is decoded here and dropped.
    pub fn observe_frame(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        headers: &FrameHeaders,
        payload: &[u8],
    ) {
        if headers.check_record_key(key).is_err() {
            self.observe_malformed_frame(partition, offset);
            return;
        }
        let truth = self.truth_of(headers, payload);
        let superseded_owner = matches!(
            self.owners.observe(&headers.camera_id, headers.owner_epoch),
            OwnerVerdict::Superseded { .. }
        );
        let scene = self.scenes.get(&headers.camera_id).copied();
        let cam = self.cameras.entry(headers.camera_id.clone()).or_default();
        let state = cam.frames.entry(headers.seq).or_default();
        if state.seen.is_some() {
            // The same frame twice on the frames topic (a producer retry): counted once.
            return;
        }
        state.seen = Some(Seen {
            partition,
            offset,
            truth,
            superseded_owner,
        });
        match truth {
            Truth::Unreadable => cam.unreadable += 1,
            Truth::Mismatched => cam.mismatched += 1,
            Truth::None | Truth::Known { .. } => {}
        }
        if let (Some(boxes), Truth::Known { .. }, Some(scene)) =
            (state.pending.take(), truth, scene)
        {
            let counts = score(&scene, &headers.camera_id, truth, &boxes);
            cam.evaluated += 1;
            cam.counts += counts;
        }
    }

    /// Records a frame record whose envelope could not be decoded.
    pub fn observe_malformed_frame(&mut self, partition: i32, offset: i64) {
        self.malformed_frames.insert((partition, offset));
    }

    /// Records a detection record read from the detections topic at
    /// `partition`/`offset` (that position is informational; the record's own `partition`
    /// and `offset` name the frame) and says what was made of it.
    pub fn observe_detection(
        &mut self,
        _partition: i32,
        _offset: i64,
        record: &DetectionRecord,
    ) -> Verdict {
        let worker = match self.workers.iter().position(|w| *w == record.worker_id) {
            Some(i) => i as u32,
            None => {
                self.workers.push(record.worker_id.clone());
                (self.workers.len() - 1) as u32
            }
        };
        let cam = self.cameras.entry(record.camera_id.clone()).or_default();
        let mark = self.epochs.entry(record.partition).or_insert(record.epoch);
        if record.epoch < *mark {
            cam.superseded += 1;
            return Verdict::Superseded;
        }
        *mark = record.epoch;

        cam.detections_accepted += 1;
        let state = cam.frames.entry(record.seq).or_default();
        state.accepted += 1;
        if state.accepted > 1 {
            cam.duplicated += 1;
            if let Some((epoch, first_worker)) = state.first
                && record.epoch > epoch
            {
                *cam.duplicated_across_epochs
                    .entry(self.workers[first_worker as usize].clone())
                    .or_default() += 1;
            }
            return Verdict::Duplicate;
        }
        state.first = Some((record.epoch, worker));
        state.first_status = Some(record.status);
        if record.status == FrameStatus::SupersededOwner {
            // A zombie ingest node's frame, older than what the camera's new owner publishes:
            // accounted for, but it neither moves nor breaks the camera's order.
            *cam.skipped
                .entry(record.status.as_str().to_owned())
                .or_default() += 1;
            return Verdict::Accepted;
        }
        let verdict = match cam.max_accepted_seq {
            Some(max) if record.seq < max => {
                cam.reordered += 1;
                Verdict::Reordered
            }
            _ => {
                cam.max_accepted_seq = Some(record.seq);
                Verdict::Accepted
            }
        };
        if record.status != FrameStatus::Ok {
            *cam.skipped
                .entry(record.status.as_str().to_owned())
                .or_default() += 1;
            return verdict;
        }
        let Some(scene) = self
            .accuracy
            .then(|| self.scenes.get(&record.camera_id))
            .flatten()
        else {
            return verdict;
        };
        let boxes: Vec<ScoredBox> = record.detections.iter().map(ScoredBox::from).collect();
        match state.seen.map(|s| s.truth) {
            None => state.pending = Some(boxes),
            Some(truth @ Truth::Known { .. }) => {
                cam.evaluated += 1;
                cam.counts += score(scene, &record.camera_id, truth, &boxes);
            }
            Some(_) => {}
        }
        verdict
    }

    /// Records a dead letter.
    pub fn observe_dead_letter(&mut self, letter: &DeadLetter) {
        match (&letter.camera_id, letter.seq) {
            (Some(camera), Some(seq)) => {
                let cam = self.cameras.entry(camera.clone()).or_default();
                *cam.dead_lettered
                    .entry(letter.reason.as_str().to_owned())
                    .or_default() += 1;
                cam.frames.entry(seq).or_default().dead_letters += 1;
            }
            _ => {
                self.positional_dead_letters
                    .push((letter.partition, letter.offset, letter.reason))
            }
        }
    }

    /// Counts a detection or dead-letter record that could not be decoded.
    pub fn observe_malformed_record(&mut self) {
        self.malformed_records += 1;
    }

    /// The accounting so far (cheap enough to call during a run, O(frames)).
    pub fn report(&self) -> Report {
        // Resolve dead letters that only name a position.
        let mut positions: HashMap<(i32, i64), (&str, u64)> = HashMap::new();
        for (id, cam) in &self.cameras {
            for (seq, f) in &cam.frames {
                if let Some(s) = f.seen {
                    positions.insert((s.partition, s.offset), (id.as_str(), *seq));
                }
            }
        }
        let mut by_position: HashSet<(&str, u64)> = HashSet::new();
        let mut extra_letters: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
        let mut unmatched_letters: BTreeMap<String, u64> = BTreeMap::new();
        let mut malformed_dead_lettered: HashSet<(i32, i64)> = HashSet::new();
        for &(partition, offset, reason) in &self.positional_dead_letters {
            let reason = reason.as_str().to_owned();
            if let Some(&(id, seq)) = positions.get(&(partition, offset)) {
                by_position.insert((id, seq));
                *extra_letters
                    .entry(id.to_owned())
                    .or_default()
                    .entry(reason)
                    .or_default() += 1;
            } else {
                if self.malformed_frames.contains(&(partition, offset)) {
                    malformed_dead_lettered.insert((partition, offset));
                }
                *unmatched_letters.entry(reason).or_default() += 1;
            }
        }

        let mut report = Report {
            malformed_frames: self.malformed_frames.len() as u64,
            malformed_lost: (self.malformed_frames.len() - malformed_dead_lettered.len()) as u64,
            malformed_records: self.malformed_records,
            accuracy_enabled: self.accuracy,
            decoded_frames: self.decoded,
            decode_seconds: self.decode_time.as_secs_f64(),
            ..Report::default()
        };
        for (id, cam) in &self.cameras {
            let mut r = CameraReport {
                detections_accepted: cam.detections_accepted,
                duplicated: cam.duplicated,
                duplicated_across_epochs: cam.duplicated_across_epochs.clone(),
                reordered: cam.reordered,
                superseded: cam.superseded,
                skipped: cam.skipped.clone(),
                dead_lettered: cam.dead_lettered.clone(),
                ..CameraReport::default()
            };
            if let Some(extra) = extra_letters.get(id) {
                for (reason, n) in extra {
                    *r.dead_lettered.entry(reason.clone()).or_default() += n;
                }
            }
            let (mut lo, mut hi) = (u64::MAX, 0u64);
            let mut lost = Vec::new();
            for (&seq, f) in &cam.frames {
                if let Some(seen) = f.seen {
                    r.frames += 1;
                    if seen.superseded_owner {
                        r.owner_superseded_frames += 1;
                        if f.first_status == Some(FrameStatus::Ok) {
                            r.owner_superseded_inferred += 1;
                        }
                    }
                    lo = lo.min(seq);
                    hi = hi.max(seq);
                    let dead = f.dead_letters > 0 || by_position.contains(&(id.as_str(), seq));
                    if f.accepted == 0 && !dead {
                        lost.push(seq);
                    }
                } else if f.accepted > 0 {
                    r.unknown_frames += 1;
                }
            }
            if r.frames > 0 {
                r.gaps = hi - lo + 1 - r.frames;
            }
            lost.sort_unstable();
            r.lost = lost.len() as u64;
            r.lost_examples = lost.into_iter().take(MAX_EXAMPLES).collect();
            if self.accuracy && self.scenes.contains_key(id) {
                r.accuracy = Some(AccuracyReport::from_counts(
                    cam.evaluated,
                    cam.unreadable,
                    cam.mismatched,
                    cam.counts,
                ));
            }
            report.total.add(&r);
            report.cameras.insert(id.clone(), r);
        }
        for (reason, n) in unmatched_letters {
            *report.total.dead_lettered.entry(reason).or_default() += n;
        }
        if self.accuracy && report.total.accuracy.is_none() {
            report.total.accuracy = Some(AccuracyReport::default());
        }
        report
    }

    /// Decodes the payload when accuracy wants it.
    fn truth_of(&mut self, headers: &FrameHeaders, payload: &[u8]) -> Truth {
        let Some(scene) = self
            .accuracy
            .then(|| self.scenes.get(&headers.camera_id))
            .flatten()
        else {
            return Truth::None;
        };
        if (headers.source_width, headers.source_height) != (scene.spec.width, scene.spec.height) {
            return Truth::Mismatched;
        }
        let started = Instant::now();
        let index = frame_index_of_payload(headers, payload, scene.fps);
        self.decode_time += started.elapsed();
        self.decoded += 1;
        match index {
            Some(index) => Truth::Known {
                index,
                width: headers.width,
                height: headers.height,
            },
            None => Truth::Unreadable,
        }
    }
}

fn score(scene: &Scene, camera_id: &str, truth: Truth, boxes: &[ScoredBox]) -> MatchCounts {
    let Truth::Known {
        index,
        width,
        height,
    } = truth
    else {
        return MatchCounts::default();
    };
    let gt = scaled_ground_truth(&scene.spec, camera_id, index, width, height);
    match_detections(&gt, boxes)
}

#[cfg(test)]
mod tests;
