//! Publishing, the last stage: one publisher thread per running partition, releasing its
//! frames' results in consumption order, at-least-once or exactly-once.
//!
//! Decode threads and the inference thread finish frames in any order; the
//! [`router::Router`] hands each [`Outcome`](crate::pipeline::work::Outcome) to its
//! partition's thread over a bounded channel, whose [`sequencer::Sequencer`] releases them in
//! `idx` order, so a camera's records (one camera = one partition) leave in capture order.
//! The thread then publishes them one of two ways, chosen by `delivery`:
//!
//! - [`at_least_once`]: one idempotent producer per lane; offsets are committed by the
//!   consumer thread after the acknowledged prefix (duplicates possible after a crash, loss
//!   never);
//! - [`exactly_once`]: a transactional producer per partition; records and the input offset
//!   commit together, after the assignment epoch is checked (fail closed).
//!
//! [`record`] holds what both share (producer settings, encoding, sending through a full
//! queue). Why publishing fails is [`crate::error::PublishError`].

pub mod at_least_once;
pub mod exactly_once;
pub mod record;
pub mod router;
pub mod sequencer;

pub use at_least_once::{AloProducer, alo_producer, run_alo};
pub use exactly_once::{EosPartition, transactional_id};
pub use router::Router;
pub use sequencer::Sequencer;
