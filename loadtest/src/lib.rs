//! `panoptes-loadtest` (tool crate): the whole system on one machine, measured and attacked.
//!
//! Nothing here ships in a product image. Its sibling tool crates hold the pieces other crates
//! test against: `panoptes-scene` (scenes, ground truth, camera configuration),
//! `panoptes-checker` (the accounting checker) and `panoptes-camsim` (the RTSP simulator).
//!
//! - [`bench`]: every benchmark (ingest, worker, failover), each reporting ratios against a
//!   baseline measured in the same run, on one shared argument and report scaffold;
//! - [`stack`]: `panoptes_testkit_stack::stack` (a whole deployment as real processes, owned by the
//!   one test harness in `testkit/`, `testkit/stack`) re-exported, plus the topic watchers loadtest adds to it;
//! - [`timeline`]: a per-second recorder of a running stack (throughput, latency, CPU and
//!   memory per process, lag, fault markers) and [`charts`], its PNG charts;
//! - [`run`]: `panoptes-loadtest run`, a load run with a report ([`runreport`]);
//! - [`fleet`]: the coordinator with a large simulated fleet (binary `panoptes-bench-fleet`);
//! - [`demo`], [`chaos`], [`watch`]: the demo, the chaos scenarios, live topic watchers;
//!   [`slo`]: the error budget a chaos run burned against the fleet's objectives.

pub mod bench;
pub mod chaos;
pub mod charts;
pub mod demo;
pub mod fleet;
pub mod run;
pub mod runreport;
pub mod slo;
pub mod stack;
pub mod timeline;
pub mod watch;
