//! Benchmarks: each Panoptes stage against the best tool doing the same work, in the same run.
//!
//! The machines these run on are shared and noisy, so a benchmark never judges an absolute
//! timing. It measures the Panoptes component and a bare baseline alternately, several
//! rounds, on the same inputs, and reports the *ratio* of their costs (see the design brief,
//! "Performance is measured as ratios on one machine").
//!
//! - [`sys`]: CPU time of one process from `/proc`, machine facts, timestamps.
//! - [`ingest`]: the ingest node against a bare `gst-launch-1.0` pipeline doing the same
//!   decode, sample, scale and JPEG encode (binary `panoptes-bench-ingest`).
//!
//! - [`failover`]: time from a worker's kill -9 to its partitions' next committed
//!   detections, over many trials (binary `panoptes-bench-failover`).
//!
//! This module holds the pure parts (parameters, pipelines, counting, statistics, reports);
//! the binaries start the processes.

pub mod failover;
pub mod ingest;
/// Shared with the worker benchmark; lives in `panoptes-testkit`.
pub use panoptes_testkit::sys;
