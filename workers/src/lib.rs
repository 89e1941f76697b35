//! Panoptes worker: frames from Kafka in, detection records out.
//!
//! Library foundation:
//! - [`preprocess`]: JPEG decode and letterboxing into a reusable float32 NCHW batch buffer;
//! - [`model`]: model manifests and TorchScript models loaded through `tch`/libtorch, checked
//!   against their output contract (`post_nms` `[B, N, 6]` or `yolo_raw` `[B, 4 + C, N]`);
//! - [`postprocess`]: decoding both contracts, class-aware NMS, mapping boxes back to the frame;
//! - [`models`]: the project's own test and benchmark models, generated offline;
//! - [`error`]: error types with a retryable/fatal split;
//! - [`bench`]: the pure parts of the worker benchmark (`panoptes-bench-worker`).
//!
//! The worker node ([`node::run`], re-exported as [`run`]):
//! - [`config`]: typed configuration; [`assignment`]: owned partitions and their epoch;
//! - [`consumer`]: the consumer thread (assign, pause/resume, commits, lag);
//! - [`decode`]: the decode pool (envelope checks, staleness, dead letters, JPEG → tensor);
//! - [`batcher`] + [`inference`]: dynamic batching and the one thread owning the model;
//!   [`cuda`]: loading libtorch's CUDA backend when a GPU device is configured;
//! - [`publisher`]: per-partition ordered publishing, at-least-once or exactly-once;
//! - [`lane`]: the pipeline of one Kafka cluster with a partition set changing at run time;
//!   [`coordinated`]: coordinator mode (membership, grants, handovers, drain);
//! - [`metrics`]: the Prometheus registry; [`work`]: the units passed between stages.
//!
//! libtorch comes from the PyTorch 2.11.0 wheel; the crate links `libtorch_cpu` and `libc10`
//! only (see `workers/README.md` and `.cargo/config.toml`).

pub mod assignment;
pub mod batcher;
pub mod bench;
pub mod config;
pub mod consumer;
pub mod coordinated;
pub mod cuda;
pub mod decode;
pub mod error;
pub mod inference;
pub mod lane;
pub mod metrics;
pub mod model;
pub mod models;
pub mod node;
pub mod postprocess;
pub mod preprocess;
pub mod publisher;
pub mod work;

pub use error::{GenerateError, ModelError, PreprocessError};
pub use model::{LoadedModel, ModelManifest, OutputContract};
pub use node::{WorkerError, run};
pub use tch;
