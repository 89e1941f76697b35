//! Benchmarks: each Panoptes stage against the best tool doing the same work, in the same run.
//!
//! The machines these run on are shared and noisy, so a benchmark never judges an absolute
//! timing. It measures the Panoptes component and a bare baseline alternately, several
//! rounds, on the same inputs, and reports the *ratio* of their costs (see the design brief,
//! "Performance is measured as ratios on one machine").
//!
//! - [`scaffold`]: what all of them share: common flags (`--out`, `--quick`, `--check`), the
//!   run's facts, statistics, Markdown tables, the JSON + Markdown report pair;
//! - [`sys`]: CPU time of one process from `/proc`, machine facts, timestamps;
//! - [`ingest`]: the ingest node against a bare `gst-launch-1.0` pipeline doing the same
//!   decode, sample, scale and JPEG encode (binary `panoptes-bench-ingest`);
//! - [`worker`]: the worker against a tight libtorch forward loop, then end-to-end latency
//!   (binary `panoptes-bench-worker`);
//! - [`idle`]: CPU per thread of idle nodes: no thread may spin (binary `panoptes-bench-idle`);
//! - [`overload`]: a worker group at twice its measured capacity, with and without priority
//!   degradation (binary `panoptes-bench-overload`);
//! - [`drift`]: the cost of the worker's drift statistics next to a JPEG decode, and steady
//!   scenes raising no drift for 10 minutes (binary `panoptes-bench-drift`);
//! - [`shadow`]: the primary's end-to-end latency with a shadow rollout on and off, in
//!   alternating phases, then during blue-green swaps (binary `panoptes-bench-shadow`);
//! - [`failover`]: time from a worker's kill -9 to its partitions' next committed
//!   detections, over many trials (binary `panoptes-bench-failover`).
//!
//! Each benchmark module holds the pure parts (parameters, counting, statistics, reports);
//! the ingest and worker benchmarks' `run` submodules start the processes and are what their
//! binaries call; the failover benchmark drives a `testkit` stack, and its binary's `main`
//! only parses arguments around [`failover::run`].

pub mod drift;
pub mod failover;
pub mod idle;
pub mod ingest;
pub mod overload;
pub mod scaffold;
pub mod shadow;
pub mod trace_overhead;
pub mod worker;
/// Readers of `/proc` and machine facts; live in `panoptes-testkit` (also used by the timeline).
pub use panoptes_testkit::sys;
