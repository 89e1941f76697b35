//! Panoptes load-testing tools.
//!
//! - [`scene`]: synthetic camera scenes with exact ground truth and a frame-index barcode
//!   (pure functions, no GStreamer), shared by the simulator and by checkers.
//! - [`camsim`]: the camera simulator serving many RTSP cameras from one process, with an
//!   HTTP fault-control API (binary `panoptes-camsim`).
//!
//! - [`checker`]: the end-to-end accounting checker (binary `panoptes-check`);
//! - [`bench`]: benchmarks that report ratios against a baseline measured in the same run;
//! - [`stack`]: a whole deployment (Redis, brokers, simulator, coordinators, ingest nodes,
//!   workers) as real processes, for cluster tests, benchmarks and load runs;
//! - [`timeline`]: a per-second recorder of a running stack (throughput, latency, CPU and
//!   memory per process, lag, fault markers) and [`charts`], its PNG charts;
//! - [`run`]: `panoptes-loadtest run`, a load run with a report ([`runreport`]).

pub mod bench;
pub mod camsim;
pub mod chaos;
pub mod charts;
pub mod checker;
pub mod demo;
pub mod run;
pub mod runreport;
pub mod scene;
pub mod stack;
pub mod timeline;
pub mod watch;
