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
//!   workers) as real processes, for cluster tests, benchmarks and load runs.

pub mod bench;
pub mod chaos;
pub mod demo;
pub mod run;
pub mod camsim;
pub mod checker;
pub mod scene;
pub mod stack;
pub mod watch;
