//! `panoptes-checker` (tool crate): the end-to-end accounting checker. It proves the
//! guarantees of the design brief from the topics themselves.
//!
//! - Guarantee 1 (order per camera): detection records of a camera that go back in `seq`
//!   are counted as `reordered`.
//! - Guarantee 2 (nothing lost silently): every frame seen on `panoptes.frames` must end as
//!   one accepted detection record (any status; skips are counted by reason) or a dead
//!   letter; the rest is `lost`, extra records are `duplicated`.
//! - Guarantee 3 (no duplicates from zombies): records whose assignment epoch was superseded
//!   are discarded and counted as `superseded`; see [`accounting`] for the exact rule.
//!
//! Modules: [`accounting`] (pure, any interleaving of the three topics), [`accuracy`]
//! (optional precision/recall against the synthetic scenes' ground truth), [`reader`] (the
//! live rdkafka reader on its own thread), [`report`] (the JSON-serialisable result with a
//! Markdown rendering). The binary `panoptes-check` wraps them for operators.
//!
//! A tool crate: used by load runs, chaos scenarios, benchmarks and tests, never shipped in a
//! product image. Ground truth comes from `panoptes-scene`; no GStreamer is linked.

pub mod accounting;
pub mod accuracy;
pub mod reader;
pub mod report;

pub use accounting::{Accounting, Verdict};
pub use accuracy::{MATCH_IOU, MatchCounts, ScoredBox};
pub use reader::{CheckError, Checker, Progress, ReaderConfig, StopToken};
pub use report::{AccuracyReport, CameraReport, Report};
