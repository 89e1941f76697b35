//! Panoptes load-testing tools.
//!
//! - [`scene`]: synthetic camera scenes with exact ground truth and a frame-index barcode
//!   (pure functions, no GStreamer), shared by the simulator and by checkers.
//! - [`camsim`]: the camera simulator serving many RTSP cameras from one process, with an
//!   HTTP fault-control API (binary `panoptes-camsim`).
//!
//! The load generator, benchmarks and the end-to-end accounting checker will live here too,
//! each in its own module.

pub mod bench;
pub mod camsim;
pub mod checker;
pub mod scene;
