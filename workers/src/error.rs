//! Error types of the worker library, each split into retryable and fatal cases.
//!
//! *Retryable* means the same operation may succeed later without anyone changing anything
//! (an I/O hiccup, a transient device failure); *fatal* means the input itself is wrong (a
//! missing or corrupt model, a manifest that contradicts the model, an undecodable frame) and
//! retrying cannot help: the caller reports it, dead-letters the frame or refuses the model.

use std::path::PathBuf;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The model or manifest file does not exist.
    #[error("model file {path} does not exist")]
    MissingFile {
        /// The path that was looked up.
        path: PathBuf,
    },
    /// Reading a file failed for another reason (permissions, I/O error).
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file being read.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// libtorch could not load the file as TorchScript (corrupt, truncated, not a model).
    #[error("{path} is not a loadable TorchScript model: {message}")]
    Unloadable {
        /// The model file.
        path: PathBuf,
        /// libtorch's error message (first line).
        message: String,
    },
    /// The manifest is not valid JSON for [`crate::model::ModelManifest`].
    #[error("manifest {path} cannot be parsed: {message}")]
    ManifestParse {
        /// The manifest file.
        path: PathBuf,
        /// What serde reported.
        message: String,
    },
    /// The manifest parses but its values are unusable.
    #[error("manifest of model {model} is invalid: {problem}")]
    ManifestInvalid {
        /// Model name from the manifest.
        model: String,
        /// What is wrong.
        problem: String,
    },
    /// The model's output does not have the shape its manifest's contract promises.
    #[error(
        "model {model}: output shape {actual:?} contradicts the manifest's `{contract}` contract (expected {expected})"
    )]
    OutputShape {
        /// Model name from the manifest.
        model: String,
        /// The contract named in the manifest (`post_nms` or `yolo_raw`).
        contract: &'static str,
        /// The expected shape, in words, e.g. `[B, 84, N]`.
        expected: String,
        /// The shape the model produced.
        actual: Vec<i64>,
    },
    /// A batch handed to [`crate::model::LoadedModel::forward`] has the wrong shape.
    #[error("model {model}: input batch shape {actual:?} does not match expected {expected}")]
    InputShape {
        /// Model name from the manifest.
        model: String,
        /// The expected shape, in words.
        expected: String,
        /// The shape received.
        actual: Vec<i64>,
    },
    /// The forward pass itself failed inside libtorch (e.g. out of device memory).
    #[error("model {model}: inference failed: {message}")]
    Inference {
        /// Model name from the manifest.
        model: String,
        /// libtorch's error message (first line).
        message: String,
    },
    /// The configured device cannot be used (no CUDA runtime, no such GPU).
    #[error("device {device} is not usable: {reason}")]
    DeviceUnavailable {
        /// The device as configured, e.g. `cuda:0`.
        device: String,
        /// Why.
        reason: String,
    },
}

impl ModelError {
    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Io { .. } | Self::Inference { .. })
    }

    /// Whether the error is permanent for this input (the opposite of [`Self::is_retryable`]).
    pub fn is_fatal(&self) -> bool {
        !self.is_retryable()
    }
}

/// Why a frame could not be turned into a model input.
#[derive(Debug, thiserror::Error)]
pub enum PreprocessError {
    /// The payload is not a decodable JPEG (fatal: dead-letter the frame).
    #[error("JPEG decode failed: {0}")]
    Decode(String),
    /// The decoded image has a size or layout the worker cannot use (fatal).
    #[error("unusable image: {0}")]
    Image(String),
    /// The batch slot does not exist in the buffer (a caller bug, fatal).
    #[error("batch slot {slot} out of range (capacity {capacity})")]
    Slot {
        /// Requested slot.
        slot: usize,
        /// Buffer capacity in images.
        capacity: usize,
    },
}

impl PreprocessError {
    /// Whether retrying may succeed: never, the same bytes decode the same way.
    pub fn is_retryable(&self) -> bool {
        false
    }
}

/// Shortens a libtorch error (which carries a C++ backtrace) to its first meaningful line.
pub(crate) fn torch_message(err: &tch::TchError) -> String {
    let text = err.to_string();
    let first = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("unknown libtorch error");
    let mut msg = first.to_owned();
    if msg.len() > 300 {
        msg.truncate(300);
        msg.push('…');
    }
    msg
}

/// Why generating a model failed.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    /// Creating the output folder or writing a file failed (may be transient: disk full).
    #[error("cannot write {path}: {source}")]
    Io {
        /// The file or folder being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// libtorch failed while tracing or saving the model (a bug, fatal).
    #[error("tracing or saving {name} failed: {message}")]
    Torch {
        /// The model being generated.
        name: String,
        /// libtorch's error message (first line).
        message: String,
    },
}

impl GenerateError {
    /// Whether retrying may succeed (I/O only).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Io { .. })
    }
}
