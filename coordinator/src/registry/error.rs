//! Why a registry operation failed, one variant per HTTP status the API answers with.

use panoptes_coordinator_client::CoordError;
use panoptes_runtime::redact::redact_text;

/// Why a registry operation failed; each maps to one HTTP status.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistryError {
    /// The request body is not what the API accepts (not JSON, wrong shape): 400.
    #[error("{0}")]
    BadRequest(String),
    /// The camera (or member) does not exist: 404.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the registry's state (taken partition, stale version,
    /// existing id): 409.
    #[error("{0}")]
    Conflict(String),
    /// A camera needs a partition and every partition of the frames topic is taken: 409,
    /// unless the coordinator may grow the topic to `need` (`crate::growth`).
    #[error(
        "no free partition for camera {camera}: all {have} partitions of the frames topic are taken (one camera per partition)"
    )]
    NoFreePartition {
        /// The first camera left without one.
        camera: String,
        /// Partitions the topic has.
        have: i32,
        /// Partitions the write needs.
        need: i32,
    },
    /// A field value is invalid (bad URL, unknown region, fps out of range, ...): 422.
    #[error("{0}")]
    Invalid(String),
    /// Redis is unreachable: 503.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Anything else (unparseable stored record, Redis refusing a command): 500.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<redis::RedisError> for RegistryError {
    fn from(e: redis::RedisError) -> Self {
        let msg = redact_text(&e.to_string());
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            Self::Unavailable(msg)
        } else {
            Self::Internal(msg)
        }
    }
}

impl From<CoordError> for RegistryError {
    fn from(e: CoordError) -> Self {
        match e {
            CoordError::Unavailable(m) => Self::Unavailable(redact_text(&m)),
            other => Self::Internal(redact_text(&other.to_string())),
        }
    }
}
