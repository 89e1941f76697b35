//! The frame envelope: metadata of one record on [`crate::topics::FRAMES`], carried in
//! Kafka headers next to the encoded image payload.
//!
//! Headers rather than a JSON wrapper, so the payload stays the bare image: workers hand it
//! to the decoder without copying, and tools such as `kcat` can dump a frame to a `.jpg`.

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::EnvelopeError;
use crate::ids::{CAMERA_ID_PATTERN, TRACEPARENT_PATTERN, parse_traceparent, validate_camera_id};
use crate::{MAX_DIMENSION, SCHEMA_VERSION, check_version, headers};

/// How the payload of a frame record is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FrameEncoding {
    /// A baseline JPEG image (the default: small enough for Kafka at analytic resolutions).
    Jpeg,
    /// Packed 8-bit RGB, `width * height * 3` bytes, rows top to bottom, no padding.
    Rgb24,
}

impl FrameEncoding {
    /// The wire spelling: `"jpeg"` or `"rgb24"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jpeg => "jpeg",
            Self::Rgb24 => "rgb24",
        }
    }
}

impl fmt::Display for FrameEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FrameEncoding {
    type Err = EnvelopeError;

    /// Parses the exact wire spelling; case variants are rejected like any other typo, since
    /// every producer is Panoptes code that writes [`FrameEncoding::as_str`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jpeg" => Ok(Self::Jpeg),
            "rgb24" => Ok(Self::Rgb24),
            other => Err(EnvelopeError::invalid_field(
                "encoding",
                format!("unknown encoding {other:?}; expected \"jpeg\" or \"rgb24\""),
            )),
        }
    }
}

/// Which clock `capture_time_us` was read from (header `panoptes-capture-clock`).
///
/// Absent on the wire means [`CaptureClock::Arrival`]: that is what every producer before
/// this header wrote, so old records keep their meaning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CaptureClock {
    /// The ingest node's clock when the decoded frame reached it (the cluster clock in
    /// coordinator mode): includes network, jitter-buffer and decode delay.
    #[default]
    Arrival,
    /// The camera's own capture time: its NTP clock, mapped from the frame's RTP timestamp
    /// through the camera's RTCP sender reports. Ingest uses it only while the camera's
    /// clock agrees with the node's within a tolerance (see `docs/ingest.md`).
    Camera,
}

impl CaptureClock {
    /// The wire spelling: `"arrival"` or `"camera"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Arrival => "arrival",
            Self::Camera => "camera",
        }
    }
}

impl FromStr for CaptureClock {
    type Err = EnvelopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "arrival" => Ok(Self::Arrival),
            "camera" => Ok(Self::Camera),
            other => Err(EnvelopeError::invalid_field(
                "capture_clock",
                format!("unknown capture clock {other:?}; expected \"arrival\" or \"camera\""),
            )),
        }
    }
}

/// Metadata of one frame record on `panoptes.frames`: key = camera id, payload = encoded
/// image, these fields in headers (see [`crate::headers`] for their names).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameHeaders {
    /// Version of the envelope layout; always `SCHEMA_VERSION` (currently 1) when written by this build.
    #[schemars(extend("const" = SCHEMA_VERSION))]
    pub schema_version: u32,
    /// Camera that produced the frame; equal to the record key.
    #[schemars(pattern(CAMERA_ID_PATTERN))]
    pub camera_id: String,
    /// Per camera, starts at 0 and grows by 1 per published frame, so gaps reveal loss.
    pub seq: u64,
    /// Unix epoch microseconds of the frame's capture. With `capture_clock` = `arrival`: when
    /// the ingest node received the decoded frame, on the cluster clock (the Redis server's
    /// clock as the node estimates it; its wall clock without Redis). With `camera`: the
    /// camera's own capture time, which ingest uses only within a tolerance of that clock.
    pub capture_time_us: i64,
    /// Presentation time of the frame in the camera stream, in nanoseconds, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pts_ns: Option<u64>,
    /// Width of the payload image in pixels.
    #[schemars(range(min = 1, max = MAX_DIMENSION))]
    pub width: u32,
    /// Height of the payload image in pixels.
    #[schemars(range(min = 1, max = MAX_DIMENSION))]
    pub height: u32,
    /// Width of the camera stream before scaling, in pixels.
    #[schemars(range(min = 1, max = MAX_DIMENSION))]
    pub source_width: u32,
    /// Height of the camera stream before scaling, in pixels.
    #[schemars(range(min = 1, max = MAX_DIMENSION))]
    pub source_height: u32,
    /// Encoding of the payload.
    pub encoding: FrameEncoding,
    /// W3C trace context, `"00-<32 hex>-<16 hex>-<2 hex>"`, started by the ingest node.
    #[schemars(pattern(TRACEPARENT_PATTERN))]
    pub traceparent: String,
    /// Grant epoch under which the publishing ingest node owned the camera (coordinator
    /// mode). Readers keep the highest owner epoch seen per camera and drop a frame with a
    /// lower one: it comes from a superseded owner (a zombie ingest node). Absent from an
    /// ingest node that runs its cameras from its own file, without a coordinator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub owner_epoch: Option<u64>,
    /// Which clock `capture_time_us` comes from; absent (older producers) reads as
    /// [`CaptureClock::Arrival`].
    #[serde(default)]
    pub capture_clock: CaptureClock,
}

impl FrameHeaders {
    /// The Kafka headers of this envelope: one pair per field, named by [`crate::headers`],
    /// values as UTF-8 text. `pts_ns` is left out when unknown, `owner_epoch` when the
    /// frame has no coordinator-given owner.
    pub fn to_kafka_headers(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::with_capacity(headers::ALL.len());
        out.push((headers::SCHEMA_VERSION, self.schema_version.to_string()));
        out.push((headers::CAMERA_ID, self.camera_id.clone()));
        out.push((headers::SEQ, self.seq.to_string()));
        out.push((headers::CAPTURE_TIME_US, self.capture_time_us.to_string()));
        if let Some(pts) = self.pts_ns {
            out.push((headers::PTS_NS, pts.to_string()));
        }
        out.push((headers::WIDTH, self.width.to_string()));
        out.push((headers::HEIGHT, self.height.to_string()));
        out.push((headers::SOURCE_WIDTH, self.source_width.to_string()));
        out.push((headers::SOURCE_HEIGHT, self.source_height.to_string()));
        out.push((headers::ENCODING, self.encoding.as_str().to_owned()));
        out.push((headers::TRACEPARENT, self.traceparent.clone()));
        if let Some(epoch) = self.owner_epoch {
            out.push((headers::OWNER_EPOCH, epoch.to_string()));
        }
        out.push((
            headers::CAPTURE_CLOCK,
            self.capture_clock.as_str().to_owned(),
        ));
        out
    }

    /// Decodes and validates the envelope from a record's Kafka headers.
    ///
    /// Unknown headers are ignored (other tooling may add its own). A required header that
    /// is missing gives [`EnvelopeError::MissingHeader`]; one that is present without a
    /// value, more than once, not UTF-8, not parsable or out of range gives
    /// [`EnvelopeError::BadHeader`] naming it. The version header is checked first, so a
    /// newer producer yields [`EnvelopeError::UnsupportedVersion`] rather than complaints
    /// about headers whose meaning may have changed.
    pub fn from_kafka_headers<'a, I>(headers: I) -> Result<Self, EnvelopeError>
    where
        I: IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    {
        let mut slots = HeaderSlots::default();
        for (name, value) in headers {
            slots.put(name, value)?;
        }

        let schema_version: u32 = slots.required(headers::SCHEMA_VERSION, parse_decimal)?;
        check_version(schema_version)?;

        let camera_id = slots.required(headers::CAMERA_ID, |s| {
            validate_camera_id(s).map(|()| s.to_owned())
        })?;
        let seq = slots.required(headers::SEQ, parse_decimal)?;
        let capture_time_us = slots.required(headers::CAPTURE_TIME_US, parse_decimal)?;
        let pts_ns = slots.optional(headers::PTS_NS, parse_decimal)?;
        let width = slots.required(headers::WIDTH, |s| parse_dimension("width", s))?;
        let height = slots.required(headers::HEIGHT, |s| parse_dimension("height", s))?;
        let source_width = slots.required(headers::SOURCE_WIDTH, |s| {
            parse_dimension("source_width", s)
        })?;
        let source_height = slots.required(headers::SOURCE_HEIGHT, |s| {
            parse_dimension("source_height", s)
        })?;
        let encoding = slots.required(headers::ENCODING, FrameEncoding::from_str)?;
        let traceparent = slots.required(headers::TRACEPARENT, |s| {
            parse_traceparent(s).map(|_| s.to_owned())
        })?;
        let owner_epoch = slots.optional(headers::OWNER_EPOCH, parse_owner_epoch)?;
        let capture_clock = slots
            .optional(headers::CAPTURE_CLOCK, CaptureClock::from_str)?
            .unwrap_or_default();

        Ok(Self {
            schema_version,
            camera_id,
            seq,
            capture_time_us,
            pts_ns,
            width,
            height,
            source_width,
            source_height,
            encoding,
            traceparent,
            owner_epoch,
            capture_clock,
        })
    }

    /// Checks the rules the type system cannot: version is [`SCHEMA_VERSION`], camera id is
    /// valid, all four dimensions are in `1..=MAX_DIMENSION`, traceparent is well-formed.
    ///
    /// Producers call this before publishing; [`FrameHeaders::from_kafka_headers`] applies
    /// the same rules while decoding.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        check_version(self.schema_version)?;
        validate_camera_id(&self.camera_id)?;
        check_dimension("width", self.width)?;
        check_dimension("height", self.height)?;
        check_dimension("source_width", self.source_width)?;
        check_dimension("source_height", self.source_height)?;
        parse_traceparent(&self.traceparent)?;
        if self.owner_epoch == Some(0) {
            return Err(EnvelopeError::invalid_field(
                "owner_epoch",
                "0 is not a grant epoch (epochs start at 1)",
            ));
        }
        Ok(())
    }

    /// Checks that a record's key is this envelope's camera id.
    ///
    /// The key picks the partition and so carries the per-camera ordering guarantee; a record
    /// whose key disagrees with its headers was produced by a broken or foreign producer.
    pub fn check_record_key(&self, key: Option<&[u8]>) -> Result<(), EnvelopeError> {
        match key {
            Some(key) if key == self.camera_id.as_bytes() => Ok(()),
            Some(key) => Err(EnvelopeError::Invalid(format!(
                "record key {:?} differs from camera id header {:?}",
                crate::error::truncate_chars(&String::from_utf8_lossy(key), 64),
                self.camera_id
            ))),
            None => Err(EnvelopeError::Invalid(format!(
                "record has no key; expected camera id {:?}",
                self.camera_id
            ))),
        }
    }

    /// Size in bytes an [`FrameEncoding::Rgb24`] payload of this frame must have.
    pub fn rgb24_len(&self) -> usize {
        // Both factors are at most MAX_DIMENSION after validation, so this cannot overflow
        // even on 32-bit targets (16384 * 16384 * 3 < 2^30).
        self.width as usize * self.height as usize * 3
    }
}

/// Checks one image dimension against `1..=MAX_DIMENSION`.
pub(crate) fn check_dimension(field: &str, value: u32) -> Result<(), EnvelopeError> {
    if (1..=MAX_DIMENSION).contains(&value) {
        Ok(())
    } else {
        Err(EnvelopeError::invalid_field(
            field,
            format!("{value} is outside 1..={MAX_DIMENSION}"),
        ))
    }
}

fn parse_dimension(field: &str, s: &str) -> Result<u32, EnvelopeError> {
    let value = parse_decimal(s)?;
    check_dimension(field, value)?;
    Ok(value)
}

/// Parses an owner epoch: a decimal integer of at least 1 (grant epochs start at 1).
fn parse_owner_epoch(s: &str) -> Result<u64, EnvelopeError> {
    match parse_decimal(s)? {
        0 => Err(EnvelopeError::invalid_field(
            "",
            "0 is not a grant epoch (epochs start at 1)",
        )),
        epoch => Ok(epoch),
    }
}

/// Parses a plain decimal integer: ASCII digits with an optional leading `-`.
///
/// Stricter than `str::parse`, which also takes a leading `+`: header values are written by
/// `to_string`, so anything else means a foreign or corrupted producer.
fn parse_decimal<T: FromStr>(s: &str) -> Result<T, EnvelopeError> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EnvelopeError::invalid_field("", "not a decimal integer"));
    }
    s.parse()
        .map_err(|_| EnvelopeError::invalid_field("", "decimal integer out of range"))
}

/// The raw values of the known headers of one record, at most one each.
#[derive(Default)]
struct HeaderSlots<'a> {
    values: [Option<&'a [u8]>; headers::ALL.len()],
}

impl<'a> HeaderSlots<'a> {
    fn put(&mut self, name: &str, value: Option<&'a [u8]>) -> Result<(), EnvelopeError> {
        let Some(index) = headers::ALL.iter().position(|known| *known == name) else {
            return Ok(());
        };
        let name = headers::ALL[index];
        let Some(value) = value else {
            return Err(EnvelopeError::bad_header(name, b"", "header has no value"));
        };
        if let Some(previous) = self.values[index] {
            // Two values for one field would make the envelope ambiguous; W3C also requires
            // treating a repeated traceparent as invalid.
            return Err(EnvelopeError::bad_header(
                name,
                previous,
                "header appears more than once",
            ));
        }
        self.values[index] = Some(value);
        Ok(())
    }

    fn optional<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, EnvelopeError>,
    ) -> Result<Option<T>, EnvelopeError> {
        let index = headers::ALL
            .iter()
            .position(|known| *known == name)
            .expect("header slot names come from headers::ALL");
        let Some(raw) = self.values[index] else {
            return Ok(None);
        };
        let text = std::str::from_utf8(raw)
            .map_err(|_| EnvelopeError::bad_header(name, raw, "value is not UTF-8"))?;
        parse(text)
            .map(Some)
            .map_err(|err| err.into_header_error(name, text))
    }

    fn required<T>(
        &self,
        name: &'static str,
        parse: impl FnOnce(&str) -> Result<T, EnvelopeError>,
    ) -> Result<T, EnvelopeError> {
        self.optional(name, parse)?
            .ok_or(EnvelopeError::MissingHeader(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_parsing_is_strict() {
        assert_eq!(parse_decimal::<u64>("0").unwrap(), 0);
        assert_eq!(parse_decimal::<i64>("-5").unwrap(), -5);
        for bad in ["", "+1", " 1", "1 ", "0x10", "1.0", "-"] {
            assert!(parse_decimal::<i64>(bad).is_err(), "{bad:?}");
        }
        assert!(parse_decimal::<u32>("-1").is_err());
        assert!(parse_decimal::<u32>("4294967296").is_err());
    }

    #[test]
    fn encoding_spellings() {
        for enc in [FrameEncoding::Jpeg, FrameEncoding::Rgb24] {
            assert_eq!(enc.as_str().parse::<FrameEncoding>().unwrap(), enc);
            assert_eq!(
                serde_json::to_value(enc).unwrap(),
                serde_json::Value::from(enc.as_str())
            );
        }
        assert!("JPEG".parse::<FrameEncoding>().is_err());
    }

    #[test]
    fn capture_clock_spellings_and_default() {
        for c in [CaptureClock::Arrival, CaptureClock::Camera] {
            assert_eq!(c.as_str().parse::<CaptureClock>().unwrap(), c);
        }
        assert!("Camera".parse::<CaptureClock>().is_err());
        assert_eq!(CaptureClock::default(), CaptureClock::Arrival);
    }

    #[test]
    fn owner_epoch_is_optional_and_positive() {
        assert_eq!(parse_owner_epoch("7").unwrap(), 7);
        for bad in ["0", "-1", "x", ""] {
            assert!(parse_owner_epoch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn header_names_are_distinct_and_all_written() {
        for (i, a) in headers::ALL.iter().enumerate() {
            assert!(!headers::ALL[i + 1..].contains(a), "{a} listed twice");
        }
        let h = FrameHeaders {
            schema_version: SCHEMA_VERSION,
            camera_id: "cam0".into(),
            seq: 1,
            capture_time_us: 2,
            pts_ns: Some(3),
            width: 4,
            height: 5,
            source_width: 6,
            source_height: 7,
            encoding: FrameEncoding::Jpeg,
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            owner_epoch: Some(8),
            capture_clock: CaptureClock::Camera,
        };
        let written: Vec<&str> = h.to_kafka_headers().iter().map(|(n, _)| *n).collect();
        assert_eq!(written, headers::ALL);
    }
}
