//! Dead letters: frames that could not be processed, on [`crate::topics::FRAMES_DLQ`].

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{EnvelopeError, truncate_chars};
use crate::ids::{CAMERA_ID_PATTERN, validate_camera_id};
use crate::{SCHEMA_VERSION, check_name, check_position, check_version, headers};

/// Longest accepted [`DeadLetter::detail`], in characters.
///
/// Dead letters are read by people; a bounded detail keeps a flood of them cheap to store.
pub const MAX_DETAIL_CHARS: usize = 1024;

/// Why a frame went to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// The payload could not be decoded as the image its envelope announces.
    Undecodable,
    /// The envelope headers are missing, malformed or of an unsupported version.
    BadHeaders,
    /// The payload exceeds what the worker accepts.
    TooLarge,
    /// The decoded image's size disagrees with the envelope, or a dimension is out of range.
    BadDimensions,
}

impl DeadLetterReason {
    /// The wire spelling, e.g. `"bad_headers"` (handy as a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Undecodable => "undecodable",
            Self::BadHeaders => "bad_headers",
            Self::TooLarge => "too_large",
            Self::BadDimensions => "bad_dimensions",
        }
    }

    /// The reason to file a frame under when its envelope failed to decode with `err`.
    ///
    /// Out-of-range dimension headers count as [`DeadLetterReason::BadDimensions`], so that
    /// one counter covers every size problem whether caught in headers or after decoding.
    pub fn for_envelope_error(err: &EnvelopeError) -> Self {
        match err.header() {
            Some(
                headers::WIDTH | headers::HEIGHT | headers::SOURCE_WIDTH | headers::SOURCE_HEIGHT,
            ) if matches!(err, EnvelopeError::BadHeader { .. }) => Self::BadDimensions,
            _ => Self::BadHeaders,
        }
    }
}

/// A frame that could not be processed, on `panoptes.frames.dlq` (JSON, key = camera id when
/// known). The original payload is NOT copied: it is referenced by topic, partition and
/// offset, so the dead-letter topic stays small and the frame is fetched only if needed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadLetter {
    /// Layout version; always `SCHEMA_VERSION` (currently 1) when written by this build.
    #[schemars(extend("const" = SCHEMA_VERSION))]
    pub schema_version: u32,
    /// Camera of the frame, when its key or headers gave a valid camera id. A malformed id is
    /// left out here and quoted in `detail` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(CAMERA_ID_PATTERN))]
    pub camera_id: Option<String>,
    /// `seq` of the frame, when its headers gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Topic the frame was read from, normally `panoptes.frames`.
    pub source_topic: String,
    /// Partition of the frame record.
    #[schemars(range(min = 0))]
    pub partition: i32,
    /// Offset of the frame record in that partition.
    #[schemars(range(min = 0))]
    pub offset: i64,
    /// Category of the failure.
    pub reason: DeadLetterReason,
    /// Human-readable explanation (typically the error message), at most
    /// [`MAX_DETAIL_CHARS`] characters.
    #[schemars(length(max = MAX_DETAIL_CHARS))]
    pub detail: String,
    /// Worker node that gave up on the frame.
    pub worker_id: String,
    /// Unix epoch microseconds when the dead letter was written.
    pub time_us: i64,
}

impl DeadLetter {
    /// Cuts a detail text down to [`MAX_DETAIL_CHARS`] characters, on a character boundary.
    pub fn truncate_detail(detail: &str) -> String {
        truncate_chars(detail, MAX_DETAIL_CHARS)
    }

    /// Checks the rules the type system cannot: version, camera id (when present), names,
    /// partition/offset non-negative, detail length.
    ///
    /// The frame's own problems are the reason for the dead letter and are not checked here.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        check_version(self.schema_version)?;
        if let Some(camera_id) = &self.camera_id {
            validate_camera_id(camera_id)?;
        }
        check_name("source_topic", &self.source_topic)?;
        check_position(self.partition, self.offset)?;
        let detail_chars = self.detail.chars().count();
        if detail_chars > MAX_DETAIL_CHARS {
            return Err(EnvelopeError::invalid_field(
                "detail",
                format!(
                    "is {detail_chars} characters long, at most {MAX_DETAIL_CHARS} allowed \
                     (use DeadLetter::truncate_detail)"
                ),
            ));
        }
        check_name("worker_id", &self.worker_id)?;
        Ok(())
    }

    crate::json_codec!("a dead letter");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_for_envelope_errors() {
        let dim = EnvelopeError::bad_header(headers::WIDTH, b"0", "out of range");
        assert_eq!(
            DeadLetterReason::for_envelope_error(&dim),
            DeadLetterReason::BadDimensions
        );
        let missing = EnvelopeError::MissingHeader(headers::WIDTH);
        assert_eq!(
            DeadLetterReason::for_envelope_error(&missing),
            DeadLetterReason::BadHeaders
        );
        let version = EnvelopeError::UnsupportedVersion {
            found: 2,
            supported: 1,
        };
        assert_eq!(
            DeadLetterReason::for_envelope_error(&version),
            DeadLetterReason::BadHeaders
        );
    }

    #[test]
    fn detail_is_truncated_to_limit() {
        let long = "x".repeat(MAX_DETAIL_CHARS + 10);
        assert_eq!(DeadLetter::truncate_detail(&long).len(), MAX_DETAIL_CHARS);
    }

    #[test]
    fn reason_spellings_match_serde() {
        for reason in [
            DeadLetterReason::Undecodable,
            DeadLetterReason::BadHeaders,
            DeadLetterReason::TooLarge,
            DeadLetterReason::BadDimensions,
        ] {
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                serde_json::Value::from(reason.as_str())
            );
        }
    }
}
