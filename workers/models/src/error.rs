//! Why generating a model failed, split into retryable and fatal cases.

use std::path::PathBuf;

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
    /// A golden set or variant cannot be made from these arguments (fatal).
    #[error("{message}")]
    Golden {
        /// What is wrong.
        message: String,
    },
}

impl GenerateError {
    /// Whether retrying may succeed (I/O only).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Io { .. })
    }
}
