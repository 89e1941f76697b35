//! The units of work that travel between the worker's stages, and time helpers.
//!
//! consumer → [`FrameJob`] → decode pool → [`Decoded`] → batcher/inference → [`Outcome`] →
//! per-partition publisher. Decode threads also emit [`Outcome`]s directly (dead letters and
//! stale skips). Every frame carries `idx`, its position among the frames consumed from its
//! partition by this process, so the publisher can restore consumption order (= per-camera
//! capture order) whatever order the stages finish in.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use panoptes_schemas::{DeadLetter, DetectionRecord, EnvelopeError, FrameHeaders, StageLatencies};
use tch::Tensor;

use crate::preprocess::Letterbox;

/// Where a frame record came from, and its place in this process's consumption order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Frames partition.
    pub partition: i32,
    /// Offset in that partition.
    pub offset: i64,
    /// Index among the records of this partition consumed by this process (0, 1, 2, …).
    pub idx: u64,
    /// Which run of the partition in this process consumed it ([`crate::publisher::PartitionState::instance`]):
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
}

/// Now as Unix microseconds.
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Milliseconds between two Unix-microsecond stamps, clamped at zero (clocks may step).
pub fn ms_between_us(from_us: i64, to_us: i64) -> f32 {
    ((to_us - from_us).max(0) as f64 / 1000.0) as f32
}

/// Milliseconds elapsed since `t`.
pub fn ms_since(t: Instant) -> f32 {
    t.elapsed().as_secs_f32() * 1000.0
}
