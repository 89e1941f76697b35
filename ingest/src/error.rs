//! Why a camera is not streaming: the failure kinds of one camera, shared by the pipeline
//! that detects them ([`crate::pipeline`]) and the camera loop that counts them and backs
//! off ([`crate::camera`]).

use std::time::Duration;

/// Why a camera is not streaming.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum CameraError {
    /// The camera rejected our credentials (RTSP 401).
    #[error("authentication failed (check the camera's user and password)")]
    AuthFailed,
    /// The server answered but has no such stream (RTSP 404).
    #[error("stream not found on the camera (RTSP 404)")]
    NotFound,
    /// Could not connect or lost the connection.
    #[error("camera unreachable: {0}")]
    Unreachable(String),
    /// The stream has no video we can decode.
    #[error("unsupported stream: {0}")]
    Unsupported(String),
    /// No frame within the connect timeout.
    #[error("no frame within {0:?} of connecting")]
    ConnectTimeout(Duration),
    /// The watchdog fired: no frame for too long while streaming.
    #[error("no frame for {0:?}")]
    NoData(Duration),
    /// The camera ended the stream.
    #[error("the camera ended the stream")]
    StreamEnded,
    /// Anything else the pipeline reported.
    #[error("pipeline error: {0}")]
    Pipeline(String),
}

impl CameraError {
    /// Metric label (one of [`crate::metrics::ERROR_KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            CameraError::AuthFailed => "auth_failed",
            CameraError::NotFound => "not_found",
            CameraError::Unreachable(_) => "unreachable",
            CameraError::Unsupported(_) => "unsupported",
            CameraError::ConnectTimeout(_) => "connect_timeout",
            CameraError::NoData(_) => "no_data",
            CameraError::StreamEnded => "stream_ended",
            CameraError::Pipeline(_) => "pipeline",
        }
    }

    /// Transient failures are retried from the initial backoff upward; failures that need an
    /// operator (bad password, unsupported codec) are retried at the longest backoff only.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, CameraError::AuthFailed | CameraError::Unsupported(_))
    }
}
