//! The frame's route through a worker, stage by stage, each stage a module here in the order
//! a frame meets it, with the bounded queue between each:
//!
//! ```text
//! Kafka frames partition
//!   │ consume   one consumer thread per lane: manual assignment, ≤ partition_queue frames
//!   │           in flight per partition (paused at the bound, resumed at half)
//!   ▼ FrameJob  ── bounded channel (jobs_bound) ──
//!   │ decode    decode pool (decode_threads): envelope checks, staleness, dead letters,
//!   │           JPEG/RGB → letterboxed [1, 3, H, W] tensor
//!   ▼ Decoded   ── bounded channel (2 × max_batch) ──
//!   │ batch     dynamic batching: max_batch frames or the oldest frame's max_wait
//!   │ infer     the lane's one inference thread: forward pass, output decoding, NMS, boxes
//!   │           mapped back to frame pixels
//!   ▼ Outcome   ── router: one bounded channel per partition (partition_queue + 8) ──
//!   │ publish   one publisher thread per partition: sequencer (consumption order), then
//!   │           at-least-once or exactly-once
//!   ▼
//! Kafka detections / dead-letter topics
//! ```
//!
//! Decode threads send dead letters and stale skips straight to the router, so every frame
//! ends as exactly one [`work::Outcome`]. A full queue blocks its producer, back up to the
//! consumer's pause: memory stays bounded and overload shows up as Kafka lag.
//!
//! Beside the stages: [`work`] (the units passed between them and the record context),
//! [`partition`] (the state one partition run shares across stages). The model itself
//! (loading, pre- and postprocessing) lives in [`crate::model`], [`crate::preprocess`] and
//! [`crate::postprocess`]; [`crate::lane`] assembles one instance of this pipeline.

pub mod batch;
pub mod consume;
pub mod decode;
pub mod infer;
pub mod partition;
pub mod publish;
pub mod trace;
pub mod work;
