//! Wire formats shared by every Panoptes process.
//!
//! This crate is the single source of truth for what travels between components:
//!
//! - Kafka topic names ([`topics`]) and the frame envelope, i.e. the Kafka headers of a
//!   frame record ([`headers`], [`FrameHeaders`]);
//! - detection output records ([`DetectionRecord`]) and dead letters ([`DeadLetter`]),
//!   both JSON;
//! - control-plane messages between the coordinator and nodes ([`ControlMessage`], JSON);
//! - the owner-epoch rule every reader of frames applies ([`OwnerEpochs`]);
//! - model manifests, validation results and rollout records ([`model`]);
//! - identifier rules (camera ids, W3C `traceparent`) and the one error type,
//!   [`EnvelopeError`];
//! - JSON Schema documents generated from these types ([`all_schemas`]). They are checked
//!   in under `schemas/json/` for consumers outside Rust, and a test fails when they drift
//!   from the types.
//!
//! Every message carries `schema_version`; readers reject versions other than
//! [`SCHEMA_VERSION`] with [`EnvelopeError::UnsupportedVersion`] instead of guessing.
//! The crate does no I/O and depends on no Kafka or Redis client, so every binary can link it.

mod control;
mod deadletter;
mod detection;
mod error;
mod frame;
mod generate;
mod ids;
pub mod model;
mod owner;

pub use control::ControlMessage;
pub use deadletter::{DeadLetter, DeadLetterReason, MAX_DETAIL_CHARS};
pub use detection::{
    BBOX_NORM_TOLERANCE, Detection, DetectionRecord, FrameStatus, ModelRef, StageLatencies,
};
pub use error::{EnvelopeError, MAX_REPORTED_VALUE_CHARS};
pub use frame::{CaptureClock, FrameEncoding, FrameHeaders};
pub use generate::{all_schemas, render_schema, schema_id};
pub use ids::{
    CAMERA_ID_PATTERN, MAX_CAMERA_ID_LEN, TRACEPARENT_PATTERN, child_traceparent,
    format_traceparent, new_traceparent, parse_traceparent, validate_camera_id,
};
pub use owner::{MAX_TRACKED_CAMERAS, OwnerEpochs, Verdict as OwnerVerdict};

/// Version of every message layout in this crate. Bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Largest accepted image width or height in pixels.
///
/// Well above 8K video (7680×4320); anything larger is a corrupted header, and the bound
/// keeps `width * height * 3` far from overflow.
pub const MAX_DIMENSION: u32 = 16384;

/// Kafka topic names.
pub mod topics {
    /// Encoded frames from ingest nodes. Key = camera id, payload = image, envelope in headers.
    pub const FRAMES: &str = "panoptes.frames";
    /// Detection records from workers (JSON, key = camera id).
    pub const DETECTIONS: &str = "panoptes.detections";
    /// Detection records of a shadow model under evaluation; same format as [`DETECTIONS`].
    pub const DETECTIONS_SHADOW: &str = "panoptes.detections.shadow";
    /// Dead letters for frames that could not be processed (JSON, see [`crate::DeadLetter`]).
    pub const FRAMES_DLQ: &str = "panoptes.frames.dlq";
}

/// Kafka header names of the frame envelope (values are UTF-8 text: decimal integers,
/// lowercase words).
pub mod headers {
    /// [`crate::FrameHeaders::schema_version`].
    pub const SCHEMA_VERSION: &str = "panoptes-schema-version";
    /// [`crate::FrameHeaders::camera_id`].
    pub const CAMERA_ID: &str = "panoptes-camera-id";
    /// [`crate::FrameHeaders::seq`].
    pub const SEQ: &str = "panoptes-seq";
    /// [`crate::FrameHeaders::capture_time_us`].
    pub const CAPTURE_TIME_US: &str = "panoptes-capture-time-us";
    /// [`crate::FrameHeaders::pts_ns`]; absent when unknown.
    pub const PTS_NS: &str = "panoptes-pts-ns";
    /// [`crate::FrameHeaders::width`].
    pub const WIDTH: &str = "panoptes-width";
    /// [`crate::FrameHeaders::height`].
    pub const HEIGHT: &str = "panoptes-height";
    /// [`crate::FrameHeaders::source_width`].
    pub const SOURCE_WIDTH: &str = "panoptes-source-width";
    /// [`crate::FrameHeaders::source_height`].
    pub const SOURCE_HEIGHT: &str = "panoptes-source-height";
    /// [`crate::FrameHeaders::encoding`]: `jpeg` or `rgb24`.
    pub const ENCODING: &str = "panoptes-encoding";
    /// [`crate::FrameHeaders::traceparent`]; the standard W3C name, so generic Kafka
    /// tracing instrumentation picks it up too.
    pub const TRACEPARENT: &str = "traceparent";
    /// [`crate::FrameHeaders::owner_epoch`]: the grant epoch of the publishing ingest node;
    /// absent without a coordinator.
    pub const OWNER_EPOCH: &str = "panoptes-owner-epoch";
    /// [`crate::FrameHeaders::capture_clock`]: `arrival` or `camera`; absent means `arrival`.
    pub const CAPTURE_CLOCK: &str = "panoptes-capture-clock";

    /// Every header the envelope reads, in the order of [`crate::FrameHeaders`]' fields.
    pub const ALL: [&str; 13] = [
        SCHEMA_VERSION,
        CAMERA_ID,
        SEQ,
        CAPTURE_TIME_US,
        PTS_NS,
        WIDTH,
        HEIGHT,
        SOURCE_WIDTH,
        SOURCE_HEIGHT,
        ENCODING,
        TRACEPARENT,
        OWNER_EPOCH,
        CAPTURE_CLOCK,
    ];
}

/// Rejects any version but [`SCHEMA_VERSION`].
pub(crate) fn check_version(found: u32) -> Result<(), EnvelopeError> {
    if found == SCHEMA_VERSION {
        Ok(())
    } else {
        Err(EnvelopeError::UnsupportedVersion {
            found,
            supported: SCHEMA_VERSION,
        })
    }
}

/// Checks that a free-form identifier (node id, worker id, region, topic) is usable.
///
/// These ids are not as constrained as camera ids, but an empty or huge one is always a bug,
/// and control characters would corrupt logs and Redis keys.
pub(crate) fn check_name(field: &str, value: &str) -> Result<(), EnvelopeError> {
    const MAX_NAME_CHARS: usize = 255;
    let reason = if value.is_empty() {
        "must not be empty".to_owned()
    } else if value.chars().count() > MAX_NAME_CHARS {
        format!("is longer than {MAX_NAME_CHARS} characters")
    } else if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        format!("{value:?} contains whitespace or control characters")
    } else {
        return Ok(());
    };
    Err(EnvelopeError::invalid_field(field, reason))
}

/// Checks a Kafka partition number and offset (both non-negative on a real record).
pub(crate) fn check_position(partition: i32, offset: i64) -> Result<(), EnvelopeError> {
    if partition < 0 {
        return Err(EnvelopeError::invalid_field(
            "partition",
            format!("{partition} is negative"),
        ));
    }
    if offset < 0 {
        return Err(EnvelopeError::invalid_field(
            "offset",
            format!("{offset} is negative"),
        ));
    }
    Ok(())
}

/// Decodes a JSON message, reporting a foreign schema version as such.
///
/// A newer producer may add fields, which `deny_unknown_fields` turns into a confusing
/// "unknown field" error. So when decoding fails, the version is probed on its own and
/// [`EnvelopeError::UnsupportedVersion`] wins if it differs. The happy path parses once.
pub(crate) fn decode_json<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Result<T, EnvelopeError> {
    #[derive(serde::Deserialize)]
    struct VersionProbe {
        schema_version: Option<u32>,
    }
    serde_json::from_slice(bytes).map_err(|err| {
        match serde_json::from_slice::<VersionProbe>(bytes) {
            Ok(VersionProbe {
                schema_version: Some(found),
            }) if found != SCHEMA_VERSION => EnvelopeError::UnsupportedVersion {
                found,
                supported: SCHEMA_VERSION,
            },
            _ => err.into(),
        }
    })
}

/// `to_json` and `from_json` of a message type with a `validate` method: validate, then
/// encode; decode ([`decode_json`]), then validate. `$what` names one message in the docs.
macro_rules! json_codec {
    ($what:literal) => {
        /// Validates, then encodes as JSON for publishing.
        pub fn to_json(&self) -> Result<Vec<u8>, crate::EnvelopeError> {
            self.validate()?;
            Ok(serde_json::to_vec(self)?)
        }

        #[doc = concat!("Decodes ", $what, " from JSON and validates it.")]
        pub fn from_json(bytes: &[u8]) -> Result<Self, crate::EnvelopeError> {
            let decoded: Self = crate::decode_json(bytes)?;
            decoded.validate()?;
            Ok(decoded)
        }
    };
}
pub(crate) use json_codec;
