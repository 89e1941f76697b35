//! Identifiers carried in every message: camera ids and W3C `traceparent` trace context.

use crate::error::{EnvelopeError, truncate_chars};

/// Longest accepted camera id, in characters (all ASCII, so also bytes).
pub const MAX_CAMERA_ID_LEN: usize = 64;

/// JSON Schema `pattern` equivalent to [`validate_camera_id`].
pub const CAMERA_ID_PATTERN: &str = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$";

/// JSON Schema `pattern` of a version-00 `traceparent`, the only version Panoptes writes.
pub const TRACEPARENT_PATTERN: &str = "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$";

/// Length of a version-00 `traceparent`: `2 + 1 + 32 + 1 + 16 + 1 + 2`.
const TRACEPARENT_LEN: usize = 55;

/// Checks a camera id: 1 to 64 characters of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
///
/// The id is the Kafka record key (so it picks the partition), a Redis key component and a
/// metrics label; the restricted alphabet keeps it safe in all three, and the rule on the
/// first character keeps ids from looking like hidden files or command-line flags.
pub fn validate_camera_id(id: &str) -> Result<(), EnvelopeError> {
    let reason = if id.is_empty() {
        Some("must not be empty".to_owned())
    } else if id.starts_with(['.', '-']) {
        Some("must not start with '.' or '-'".to_owned())
    } else if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        Some(format!(
            "contains {c:?}; only A-Z, a-z, 0-9, '.', '_' and '-' are allowed"
        ))
    } else if id.len() > MAX_CAMERA_ID_LEN {
        // All ASCII by now, so bytes are characters.
        Some(format!(
            "is {} characters long, at most {MAX_CAMERA_ID_LEN} allowed",
            id.len()
        ))
    } else {
        None
    };
    match reason {
        None => Ok(()),
        Some(reason) => Err(EnvelopeError::invalid_field(
            "camera_id",
            format!("{:?} {reason}", truncate_chars(id, MAX_CAMERA_ID_LEN)),
        )),
    }
}

/// Formats a version-00 `traceparent` from its parts.
pub fn format_traceparent(trace_id: &[u8; 16], span_id: &[u8; 8], flags: u8) -> String {
    format!(
        "00-{}-{}-{flags:02x}",
        hex::encode(trace_id),
        hex::encode(span_id)
    )
}

/// A fresh `traceparent` with a random trace id and span id, flags `01` (sampled).
///
/// Ingest nodes start one trace per frame; the sampling decision itself is left to the
/// tracing backend, so every frame is marked as sampled.
pub fn new_traceparent() -> String {
    format_traceparent(&random_nonzero(), &random_nonzero(), 0x01)
}

/// A `traceparent` for a child span of `parent`: same trace id and flags, new span id.
///
/// Workers use this for the detection record, so the detection joins the frame's trace.
pub fn child_traceparent(parent: &str) -> Result<String, EnvelopeError> {
    let (trace_id, _, flags) = parse_traceparent(parent)?;
    Ok(format_traceparent(&trace_id, &random_nonzero(), flags))
}

/// Parses a W3C `traceparent` into (trace id, parent span id, flags).
///
/// Follows the W3C Trace Context rules: two-digit lowercase-hex version other than `ff`,
/// lowercase-hex ids that are not all zero. Version `00` must be exactly 55 characters;
/// a higher version may append further `-`-separated fields, which are ignored, so that
/// this code keeps working when a newer tracer sits upstream.
pub fn parse_traceparent(s: &str) -> Result<([u8; 16], [u8; 8], u8), EnvelopeError> {
    let bad = |reason: String| EnvelopeError::invalid_field("traceparent", reason);
    if !s.is_ascii() {
        return Err(bad("contains non-ASCII characters".to_owned()));
    }
    if s.len() < TRACEPARENT_LEN {
        return Err(bad(format!(
            "is {} characters long, expected {TRACEPARENT_LEN} (\"00-<32 hex>-<16 hex>-<2 hex>\")",
            s.len()
        )));
    }
    let version = lower_hex::<1>(&s[0..2])
        .ok_or_else(|| bad("version is not 2 lowercase hex digits".to_owned()))?[0];
    if version == 0xff {
        return Err(bad("version ff is forbidden".to_owned()));
    }
    if s.len() > TRACEPARENT_LEN && (version == 0 || s.as_bytes()[TRACEPARENT_LEN] != b'-') {
        return Err(bad(format!(
            "is {} characters long, expected {TRACEPARENT_LEN} for version {version:02x}",
            s.len()
        )));
    }
    let bytes = s.as_bytes();
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return Err(bad(
            "fields must be separated by '-' at offsets 2, 35 and 52".to_owned(),
        ));
    }
    let trace_id = lower_hex::<16>(&s[3..35])
        .ok_or_else(|| bad("trace id is not 32 lowercase hex digits".to_owned()))?;
    let span_id = lower_hex::<8>(&s[36..52])
        .ok_or_else(|| bad("parent span id is not 16 lowercase hex digits".to_owned()))?;
    let flags = lower_hex::<1>(&s[53..55])
        .ok_or_else(|| bad("flags are not 2 lowercase hex digits".to_owned()))?[0];
    if trace_id == [0; 16] {
        return Err(bad("trace id is all zeros".to_owned()));
    }
    if span_id == [0; 8] {
        return Err(bad("parent span id is all zeros".to_owned()));
    }
    Ok((trace_id, span_id, flags))
}

/// Decodes exactly `2 * N` lowercase hex digits.
///
/// `hex::decode` also accepts uppercase, which W3C Trace Context forbids, so the alphabet
/// is checked first.
fn lower_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

/// Random bytes that are not all zero (an all-zero trace or span id is invalid).
fn random_nonzero<const N: usize>() -> [u8; N] {
    loop {
        let bytes = random_bytes::<N>();
        if bytes != [0; N] {
            return bytes;
        }
    }
}

#[cfg(feature = "rand")]
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::Rng::fill(&mut rand::rng(), &mut out[..]);
    out
}

/// Fallback without the `rand` feature: std's `RandomState` is keyed from OS randomness,
/// and hashing a process-wide counter plus the clock under fresh keys gives ids that are
/// unique and unpredictable, which is all trace context needs.
#[cfg(not(feature = "rand"))]
fn random_bytes<const N: usize>() -> [u8; N] {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);

    let mut out = [0u8; N];
    for chunk in out.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        hasher.write_u128(nanos);
        let word = hasher.finish().to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn camera_ids() {
        for ok in ["a", "cam-01", "lobby.east_2", "_x", "9", &"x".repeat(64)] {
            assert!(validate_camera_id(ok).is_ok(), "{ok:?} should be valid");
        }
        for bad in [
            "",
            ".hidden",
            "-flag",
            "has space",
            "slash/x",
            "ümlaut",
            &"x".repeat(65),
        ] {
            let err = validate_camera_id(bad).expect_err(bad);
            assert_eq!(err.field(), Some("camera_id"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn new_traceparents_parse_and_differ() {
        let a = new_traceparent();
        let b = new_traceparent();
        assert_ne!(a, b);
        assert_eq!(a.len(), TRACEPARENT_LEN);
        let (_, _, flags) = parse_traceparent(&a).unwrap();
        assert_eq!(flags, 1);
        assert!(a.starts_with("00-") && a.ends_with("-01"));
    }

    #[test]
    fn child_keeps_trace_id() {
        let parent = new_traceparent();
        let child = child_traceparent(&parent).unwrap();
        assert_eq!(parent[..35], child[..35]);
        assert_ne!(parent[36..52], child[36..52]);
        assert_eq!(parent[52..], child[52..]);
    }

    #[test]
    fn future_versions_may_append_fields() {
        let base = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(parse_traceparent(base).is_ok());
        assert!(parse_traceparent(&format!("{base}-extra")).is_ok());
        assert!(parse_traceparent(&format!("{base}extra")).is_err());
        let v0 = base.replacen("cc", "00", 1);
        assert!(parse_traceparent(&format!("{v0}-extra")).is_err());
    }

    #[test]
    fn format_round_trips() {
        let s = format_traceparent(&[0xab; 16], &[0x01; 8], 0);
        assert_eq!(s, format!("00-{}-{}-00", "ab".repeat(16), "01".repeat(8)));
        assert_eq!(parse_traceparent(&s).unwrap(), ([0xab; 16], [0x01; 8], 0));
    }
}
