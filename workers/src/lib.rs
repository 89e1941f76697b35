//! Panoptes worker library: everything between a JPEG frame and its detections.
//!
//! - [`preprocess`]: JPEG decode and letterboxing into a reusable float32 NCHW batch buffer;
//! - [`model`]: model manifests and TorchScript models loaded through `tch`/libtorch, checked
//!   against their output contract (`post_nms` `[B, N, 6]` or `yolo_raw` `[B, 4 + C, N]`);
//! - [`postprocess`]: decoding both contracts, class-aware NMS, mapping boxes back to the frame;
//! - [`models`]: the project's own test and benchmark models, generated offline;
//! - [`error`]: error types with a retryable/fatal split.
//!
//! libtorch comes from the PyTorch 2.11.0 wheel; the crate links `libtorch_cpu` and `libc10`
//! only (see `workers/README.md` and `.cargo/config.toml`).

pub mod error;
pub mod model;
pub mod models;
pub mod postprocess;
pub mod preprocess;

pub use error::{GenerateError, ModelError, PreprocessError};
pub use model::{LoadedModel, ModelManifest, OutputContract};
pub use tch;
