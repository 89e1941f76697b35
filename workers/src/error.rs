//! Error types of the worker library, each split into retryable and fatal cases.
//!
//! *Retryable* means the same operation may succeed later without anyone changing anything
//! (an I/O hiccup, a transient device failure, a broker away); *fatal* means the input itself
//! is wrong (a missing or corrupt model, a manifest that contradicts the model, an
//! undecodable frame) and retrying cannot help: the caller reports it, dead-letters the frame
//! or refuses the model.
//!
//! Model and frame errors ([`ModelError`], [`PreprocessError`]), publishing errors
//! ([`PublishError`]), a stage's fatal failure at run time ([`StageFailure`]: which stage, and
//! why) and the node's own error ([`WorkerError`]) all live here, below every other module of
//! the crate but `config` and `assignment`, so any stage can name them without an import loop.

use std::fmt;
use std::path::PathBuf;

use panoptes_coordinator_client::CoordError;
use rdkafka::error::KafkaError;

use crate::assignment::AssignmentError;
use crate::config::ConfigInvalid;

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
    /// The manifest's values are unusable, or the model's output contradicts its contract
    /// ([`ModelSpecError`]: the rules live with the manifest in `panoptes-schemas`).
    #[error(transparent)]
    Spec(#[from] panoptes_schemas::model::ModelSpecError),
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
/// Public for the model generator (`panoptes-models`), which reports libtorch errors the same way.
pub fn torch_message(err: &tch::TchError) -> String {
    brief(&err.to_string(), "unknown libtorch error")
}

/// A multi-line error in one line of at most 300 characters: its first non-empty line and,
/// when a later line names an exception (`RuntimeError: …`), the last such line. A
/// TorchScript failure's first line says only that the interpreter failed; the exception line
/// says why (`RuntimeError: index out of range in self`). C++ backtrace lines are dropped.
pub fn brief(text: &str, empty: &str) -> String {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or(empty);
    let exception = lines.rfind(|l| {
        l.split_once(": ").is_some_and(|(name, _)| {
            name.ends_with("Error") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
        })
    });
    let mut msg = match exception {
        Some(why) if why != first => format!("{first} … {why}"),
        _ => first.to_owned(),
    };
    if msg.chars().count() > 300 {
        msg = msg.chars().take(300).collect();
        msg.push('…');
    }
    msg
}

/// Why publishing cannot go on (fatal for the partition run; coordinator mode restarts the
/// run after Kafka trouble, see [`PublishError::restartable`]).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Creating a producer or a transaction step failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A record could not be encoded (a bug: records are built valid).
    #[error("record encoding: {0}")]
    Encode(#[from] panoptes_schemas::EnvelopeError),
    /// The assignment could not be checked before a commit: the transaction was aborted
    /// (fail closed) and the worker stops; a restart resumes from the committed offsets.
    #[error("assignment check: {0}")]
    Assignment(#[from] AssignmentError),
}

impl PublishError {
    /// Whether coordinator mode may restart the partition after this error: Kafka trouble,
    /// yes; an assignment that cannot be checked (Redis unreachable) stops the worker, fail
    /// closed (`docs/workers.md`), because a restarted run could not check its commits either.
    pub fn restartable(&self) -> bool {
        matches!(self, Self::Kafka(_))
    }

    /// Whether retrying may succeed (broker-side transient errors).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Kafka(KafkaError::Transaction(e)) => e.is_retriable(),
            Self::Assignment(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// The stage of a lane (or of the node) that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// The inference thread of the lane of `cluster`.
    Inference {
        /// The lane's cluster (region name).
        cluster: String,
    },
    /// The publisher thread of one partition.
    Publisher {
        /// The lane's cluster (region name).
        cluster: String,
        /// The frames partition.
        partition: i32,
    },
    /// Coordinator mode's controller (the thread following the grants).
    Controller,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inference { cluster } => write!(f, "inference ({cluster})"),
            Self::Publisher { cluster, partition } => write!(f, "publisher {cluster}:{partition}"),
            Self::Controller => f.write_str("coordination controller"),
        }
    }
}

/// Why a stage failed.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// The forward pass failed: without a result the frames cannot be accounted.
    #[error(transparent)]
    Inference(#[from] ModelError),
    /// Publishing or committing failed in a way the run cannot recover from.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The stage's thread ended without saying why (it panicked).
    #[error("its thread ended unexpectedly")]
    Ended,
}

/// A fatal failure of one stage at run time: the worker stops (a restart resumes from the
/// committed offsets). Reported through [`crate::failure::FailureReporter`].
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct StageFailure {
    /// Which stage.
    pub stage: Stage,
    /// Why.
    pub error: StageError,
}

/// Why the worker could not start or had to stop. All fatal to the process;
/// [`WorkerError::is_retryable`] tells whether restarting it unchanged may help.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigInvalid),
    /// The model could not be loaded or checked.
    #[error("cannot load the model")]
    Model(#[from] ModelError),
    /// A Kafka client could not be created or the frames topic is unknown.
    #[error("Kafka client failed")]
    Kafka(#[from] KafkaError),
    /// Publishing failed in a way the worker cannot recover from in-process.
    #[error("publishing failed")]
    Publish(#[from] PublishError),
    /// The assignment source refused or could not answer at start.
    #[error("assignment: {0}")]
    Assignment(#[from] AssignmentError),
    /// The coordinator's Redis could not be reached at start, or refused the membership.
    #[error("coordination: {0}")]
    Coordination(#[from] CoordError),
    /// Metrics registration failed (a bug).
    #[error("metrics registration failed")]
    Metrics(#[from] prometheus::Error),
    /// A thread or the HTTP port could not be started.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A start-up task on the blocking pool panicked or was cancelled.
    #[error("start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    /// The consumer thread did not confirm a partition change in time.
    #[error("the consumer thread does not answer")]
    ConsumerUnresponsive,
    /// The consumer has no group metadata (needed for transactions).
    #[error("consumer has no group metadata")]
    NoGroupMetadata,
    /// The inference thread ended before it was handed its work.
    #[error("inference thread ended")]
    InferenceEnded,
    /// The start's model version could not be taken from the repository (or no version is
    /// configured and the group has no rollout record).
    #[error("model repository: {0}")]
    StartModel(String),
    /// A stage failed at run time.
    #[error("{0}")]
    Stage(#[from] StageFailure),
}

impl WorkerError {
    /// Whether restarting the worker unchanged may succeed (something outside it was away).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Kafka(_) | Self::Coordination(_) | Self::Io(_) => true,
            Self::Assignment(e) => e.is_retryable(),
            Self::Publish(e) => e.is_retryable(),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn briefs_keep_the_first_and_last_lines() {
        let ts = "The following operation failed in the TorchScript interpreter.\nTraceback of TorchScript:\n  x = y\n\nRuntimeError: index out of range in self\nException raised from f at a.cpp:1\nframe #0: c10::Error::Error(x) + 0x9 (0x1 in libc10.so)\n";
        assert_eq!(
            brief(ts, "-"),
            "The following operation failed in the TorchScript interpreter. … RuntimeError: index out of range in self"
        );
        assert_eq!(brief("  one line  ", "-"), "one line");
        assert_eq!(brief("first\nframe #1: a + 0x1\n", "-"), "first");
        assert_eq!(brief("\n\n", "empty"), "empty");
        assert_eq!(brief(&"x".repeat(400), "-").chars().count(), 301);
    }
}
