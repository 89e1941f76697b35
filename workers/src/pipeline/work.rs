//! The units of work that travel between the worker's stages, the context every stage
//! builds records from, and time helpers.
//!
//! consumer → [`FrameJob`] → decode pool → [`Decoded`] → batcher/inference → [`Outcome`] →
//! per-partition publisher. Decode threads also emit [`Outcome`]s directly (dead letters and
//! stale skips). Every frame carries `idx`, its position among the frames consumed from its
//! partition by this process, so the publisher can restore consumption order (= per-camera
//! capture order) whatever order the stages finish in. [`RecordContext`] turns a frame into
//! its detection record or dead letter, with the epoch its partition runs at.

use std::sync::Arc;
use std::time::Instant;

use panoptes_schemas::{
    DeadLetter, DeadLetterReason, DetectionRecord, EnvelopeError, FrameHeaders, FrameStatus,
    ModelRef, SCHEMA_VERSION, StageLatencies,
};
use tch::Tensor;

use crate::pipeline::partition::PartitionEpochs;
use crate::pipeline::trace::FrameTrace;
use crate::preprocess::Letterbox;
use crate::swap::ModelStamp;

/// Where a frame record came from, and its place in this process's consumption order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Frames partition.
    pub partition: i32,
    /// Offset in that partition.
    pub offset: i64,
    /// Index among the records of this partition consumed by this process (0, 1, 2, …).
    pub idx: u64,
    /// Which run of the partition in this process consumed it ([`crate::pipeline::partition::PartitionState::instance`]):
    /// a partition stopped and started again (new epoch) restarts `idx` at 0, and its
    /// publisher drops outcomes of earlier runs still travelling through the stages.
    pub instance: u64,
}

/// A frame record as consumed, before any processing.
#[derive(Debug)]
pub struct FrameJob {
    /// Where it came from.
    pub pos: Position,
    /// The record key.
    pub key: Option<Vec<u8>>,
    /// The envelope, or why it could not be read.
    pub headers: Result<FrameHeaders, EnvelopeError>,
    /// The payload (the image).
    pub payload: Vec<u8>,
    /// The record's broker/producer timestamp (Unix ms), if any.
    pub timestamp_ms: Option<i64>,
    /// Set when the owner-epoch rule ([`panoptes_schemas::OwnerEpochs`], applied by the
    /// consumer in offset order) found the frame from a superseded ingest owner: the highest
    /// owner epoch seen for its camera. Such a frame is not inferred.
    pub superseded_by: Option<u64>,
    /// Its trace state (empty unless tracing is on), [`crate::pipeline::trace`].
    pub trace: FrameTrace,
}

/// A frame decoded and letterboxed, waiting for a batch.
#[derive(Debug)]
pub struct Decoded {
    /// Where it came from.
    pub pos: Position,
    /// Its envelope.
    pub headers: FrameHeaders,
    /// `[1, 3, H, W]` model input.
    pub input: Tensor,
    /// How the frame was placed into the input.
    pub letterbox: Letterbox,
    /// Latencies so far (queue, decode).
    pub latency: StageLatencies,
    /// When decoding finished (start of the batch wait).
    pub ready: Instant,
    /// Its trace state.
    pub trace: FrameTrace,
    /// The model that infers it (and is named in its record), stamped when a decode thread
    /// took it ([`crate::swap::ModelGate`]); `input` is letterboxed for this model.
    pub model: Arc<ModelStamp>,
}

/// What becomes of one frame record: a detection record or a dead letter.
#[derive(Debug)]
pub enum Output {
    /// A detection record (any status); `published_time_us` and `end_to_end_ms` are filled
    /// in by the publisher.
    Record(Box<DetectionRecord>),
    /// A dead letter.
    DeadLetter(Box<DeadLetter>),
}

/// One frame's result, to the publisher of its partition.
#[derive(Debug)]
pub struct Outcome {
    /// Where the frame came from.
    pub pos: Position,
    /// The result.
    pub output: Output,
    /// The frame's trace state (empty unless tracing is on).
    pub trace: FrameTrace,
}

/// What every stage needs to build records.
#[derive(Debug, Clone)]
pub struct RecordContext {
    /// This worker.
    pub worker_id: String,
    /// Frames topic (for dead letters).
    pub frames_topic: String,
    /// The model loaded at start (records name their frame's [`ModelStamp`] instead, which
    /// changes on a hot swap: [`crate::swap`]).
    pub model: ModelRef,
    /// Epoch written into records (of partitions not in `partition_epochs`).
    pub epoch: u64,
    /// Per-partition epochs (from the assignment source, updated as partitions come and
    /// go); override `epoch`.
    pub partition_epochs: PartitionEpochs,
}

impl RecordContext {
    /// A record for `headers` with no detections and the given status.
    pub fn record(
        &self,
        pos: Position,
        headers: &FrameHeaders,
        status: FrameStatus,
        latency: StageLatencies,
    ) -> DetectionRecord {
        DetectionRecord {
            schema_version: SCHEMA_VERSION,
            camera_id: headers.camera_id.clone(),
            seq: headers.seq,
            capture_time_us: headers.capture_time_us,
            frame_width: headers.width,
            frame_height: headers.height,
            model: self.model.clone(),
            status,
            detections: Vec::new(),
            latency,
            epoch: self
                .partition_epochs
                .read()
                .get(&pos.partition)
                .copied()
                .unwrap_or(self.epoch),
            worker_id: self.worker_id.clone(),
            partition: pos.partition,
            offset: pos.offset,
            published_time_us: 0,
            traceparent: panoptes_schemas::child_traceparent(&headers.traceparent).ok(),
        }
    }

    /// A dead letter for the frame at `pos`.
    pub fn dead_letter(
        &self,
        pos: Position,
        headers: Option<&FrameHeaders>,
        reason: DeadLetterReason,
        detail: &str,
    ) -> DeadLetter {
        DeadLetter {
            schema_version: SCHEMA_VERSION,
            camera_id: headers.map(|h| h.camera_id.clone()),
            seq: headers.map(|h| h.seq),
            source_topic: self.frames_topic.clone(),
            partition: pos.partition,
            offset: pos.offset,
            reason,
            detail: DeadLetter::truncate_detail(detail),
            worker_id: self.worker_id.clone(),
            time_us: now_us(),
        }
    }
}

/// Now as Unix microseconds on the cluster clock (`panoptes_coordinator_client::clock`), the
/// time base of `capture_time_us`: ages and latencies then hold across machines whose wall
/// clocks disagree. Without Redis (static assignment) it is the wall clock.
pub fn now_us() -> i64 {
    panoptes_coordinator_client::clock::now_us()
}

/// Milliseconds between two Unix-microsecond stamps, clamped at zero (clocks may step).
pub fn ms_between_us(from_us: i64, to_us: i64) -> f32 {
    ((to_us - from_us).max(0) as f64 / 1000.0) as f32
}

/// Milliseconds elapsed since `t`.
pub fn ms_since(t: Instant) -> f32 {
    t.elapsed().as_secs_f32() * 1000.0
}

/// A dead-letter outcome of partition 0 at `idx` (offset `2 × idx`), for the stages' tests.
#[cfg(test)]
pub(crate) fn test_outcome(idx: u64) -> Outcome {
    let pos = Position {
        partition: 0,
        offset: idx as i64 * 2,
        idx,
        instance: 0,
    };
    Outcome {
        pos,
        output: Output::DeadLetter(Box::new(DeadLetter {
            schema_version: SCHEMA_VERSION,
            camera_id: None,
            seq: None,
            source_topic: "t".into(),
            partition: 0,
            offset: pos.offset,
            reason: DeadLetterReason::Undecodable,
            detail: String::new(),
            worker_id: "w".into(),
            time_us: 0,
        })),
        trace: FrameTrace::default(),
    }
}
