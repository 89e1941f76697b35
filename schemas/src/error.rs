//! The one error type of this crate.

/// Longest prefix of an offending header value kept in [`EnvelopeError::BadHeader`].
///
/// Header values come from the network; copying them whole into errors (and from there into
/// logs and dead letters) would let one bad producer blow up every log line.
pub const MAX_REPORTED_VALUE_CHARS: usize = 64;

/// Why a message or frame envelope was rejected.
///
/// Every variant names the header or field at fault, so a dead letter built from it tells an
/// operator what to fix without re-reading the original record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// A header the frame envelope requires is absent.
    #[error("missing required header `{0}`")]
    MissingHeader(&'static str),

    /// A header is present but its value cannot be used.
    #[error("header `{name}` has unusable value {value:?}: {reason}")]
    BadHeader {
        /// Header name, one of [`crate::headers`].
        name: &'static str,
        /// The offending value, lossily decoded and truncated to
        /// [`MAX_REPORTED_VALUE_CHARS`] characters.
        value: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The message was written under a schema version this build does not understand.
    #[error("unsupported schema version {found}; this build understands version {supported}")]
    UnsupportedVersion {
        /// Version carried by the message.
        found: u32,
        /// Version this build writes and reads ([`crate::SCHEMA_VERSION`]).
        supported: u32,
    },

    /// A field of a decoded message breaks a rule of the schema.
    #[error("invalid `{field}`: {reason}")]
    InvalidField {
        /// Path of the field, e.g. `camera_id` or `detections[1].bbox`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A message breaks a rule that involves no single field.
    #[error("invalid message: {0}")]
    Invalid(String),

    /// The bytes are not JSON of the expected shape.
    #[error("malformed JSON message: {0}")]
    Json(String),
}

impl EnvelopeError {
    /// Builds [`EnvelopeError::BadHeader`], decoding and truncating the raw value.
    pub fn bad_header(name: &'static str, raw: &[u8], reason: impl Into<String>) -> Self {
        let text = String::from_utf8_lossy(raw);
        Self::BadHeader {
            name,
            value: truncate_chars(&text, MAX_REPORTED_VALUE_CHARS),
            reason: reason.into(),
        }
    }

    /// Builds [`EnvelopeError::InvalidField`].
    pub fn invalid_field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::InvalidField {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The header this error is about, if it is about one.
    pub fn header(&self) -> Option<&'static str> {
        match self {
            Self::MissingHeader(name) | Self::BadHeader { name, .. } => Some(name),
            _ => None,
        }
    }

    /// The field this error is about, if it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::InvalidField { field, .. } => Some(field),
            _ => None,
        }
    }

    /// Re-targets a field error at the header that carried the field.
    ///
    /// Validation works on decoded structs and so speaks of fields; when the struct was
    /// decoded from Kafka headers the caller wants the header name and its raw text instead.
    pub(crate) fn into_header_error(self, name: &'static str, raw: &str) -> Self {
        match self {
            Self::InvalidField { reason, .. } => Self::bad_header(name, raw.as_bytes(), reason),
            other => other,
        }
    }
}

impl From<serde_json::Error> for EnvelopeError {
    fn from(err: serde_json::Error) -> Self {
        // Kept as text so the error stays `Clone + PartialEq`, which tests and dead-letter
        // bookkeeping rely on.
        Self::Json(err.to_string())
    }
}

/// Returns at most `max` characters of `s`, on a character boundary.
pub(crate) fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => s[..end].to_owned(),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_header_value_is_truncated_on_char_boundary() {
        let raw = "é".repeat(100);
        let err = EnvelopeError::bad_header("h", raw.as_bytes(), "r");
        let EnvelopeError::BadHeader { value, .. } = &err else {
            panic!("wrong variant: {err:?}");
        };
        assert_eq!(value.chars().count(), MAX_REPORTED_VALUE_CHARS);
    }

    #[test]
    fn messages_name_the_culprit() {
        assert_eq!(
            EnvelopeError::MissingHeader("panoptes-seq").to_string(),
            "missing required header `panoptes-seq`"
        );
        assert_eq!(
            EnvelopeError::UnsupportedVersion {
                found: 7,
                supported: 1
            }
            .to_string(),
            "unsupported schema version 7; this build understands version 1"
        );
        let err = EnvelopeError::bad_header("panoptes-width", b"wide", "not a decimal integer");
        assert_eq!(
            err.to_string(),
            "header `panoptes-width` has unusable value \"wide\": not a decimal integer"
        );
        assert_eq!(err.header(), Some("panoptes-width"));
    }
}
