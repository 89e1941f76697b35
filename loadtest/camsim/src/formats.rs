//! Format cameras: a moving test pattern (`videotestsrc`) in an explicit source format, for
//! testing that ingest turns every stream GStreamer can decode into JPEG.
//!
//! Unlike the scene cameras (appsrc fed by [`crate::feeder`], I420 8-bit, even sizes, ground
//! truth), a format camera is a plain gst-launch pipeline with explicit caps: bit depth, chroma
//! subsampling, interlacing, odd sizes, and the codec/payloader (H.264 and H.265 profiles
//! through x264enc/x265enc, MJPEG over RTP, uncompressed RFC 4175 video). It has no fault
//! control and no ground truth. Spec syntax (`--format-camera`):
//! `id=hi10,format=h264-high10,width=320,height=240,fps=10` (only `id` and `format` required).
//!
//! A format camera can change while it streams, as real cameras do when reconfigured
//! ([`FormatChange`], `POST /formats/{id}` on the control API): a new size or frame rate is
//! applied in the running sessions (the source's caps change, the encoder restarts with new
//! parameter sets, the RTP session stays), while a new format (e.g. H.264 → H.265) changes the
//! SDP, so the camera ends its sessions and clients reconnect to the new stream.

use std::fmt;
use std::str::FromStr;

use panoptes_scene::camera::ConfigError;

/// The source formats a format camera can stream (see [`SourceFormat::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceFormat {
    /// H.264 High, 8-bit 4:2:0 (what most cameras send).
    H264,
    /// H.264 High 10: 10-bit 4:2:0.
    H264High10,
    /// H.264 High 4:2:2, 8-bit.
    H264High422,
    /// H.264 High 4:2:2, 10-bit.
    H264High422Ten,
    /// H.264 High 4:4:4 Predictive, 8-bit (allows odd sizes).
    H264High444,
    /// H.264 8-bit 4:2:0, interlaced (field-coded, top field first).
    H264Interlaced,
    /// H.265 Main, 8-bit 4:2:0.
    H265,
    /// H.265 Main 10: 10-bit 4:2:0.
    H265Main10,
    /// H.265 Main 12: 12-bit 4:2:0.
    H265Main12,
    /// H.265 Main 4:4:4, 8-bit.
    H265Main444,
    /// H.265 Main 4:2:2 10.
    H265Main422Ten,
    /// Motion JPEG over RTP (RFC 2435), 4:2:0.
    Mjpeg,
    /// Uncompressed 4:2:2 video over RTP (RFC 4175, UYVY): no decoder at all.
    RawUyvy,
}

impl SourceFormat {
    /// Every format, in the order of the command-line names.
    pub const ALL: [SourceFormat; 13] = [
        Self::H264,
        Self::H264High10,
        Self::H264High422,
        Self::H264High422Ten,
        Self::H264High444,
        Self::H264Interlaced,
        Self::H265,
        Self::H265Main10,
        Self::H265Main12,
        Self::H265Main444,
        Self::H265Main422Ten,
        Self::Mjpeg,
        Self::RawUyvy,
    ];

    /// Command-line name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::H264 => "h264",
            Self::H264High10 => "h264-high10",
            Self::H264High422 => "h264-high422",
            Self::H264High422Ten => "h264-high422-10",
            Self::H264High444 => "h264-high444",
            Self::H264Interlaced => "h264-interlaced",
            Self::H265 => "h265",
            Self::H265Main10 => "h265-main10",
            Self::H265Main12 => "h265-main12",
            Self::H265Main444 => "h265-main444",
            Self::H265Main422Ten => "h265-main422-10",
            Self::Mjpeg => "mjpeg",
            Self::RawUyvy => "raw-uyvy",
        }
    }

    /// Raw format the encoder is fed (GStreamer name).
    pub fn raw_format(self) -> &'static str {
        match self {
            Self::H264 | Self::H264Interlaced | Self::H265 | Self::Mjpeg => "I420",
            Self::H264High10 | Self::H265Main10 => "I420_10LE",
            Self::H264High422 => "Y42B",
            Self::H264High422Ten | Self::H265Main422Ten => "I422_10LE",
            Self::H264High444 | Self::H265Main444 => "Y444",
            Self::H265Main12 => "I420_12LE",
            Self::RawUyvy => "UYVY",
        }
    }

    /// Whether odd widths and heights can be encoded (no chroma subsampling, or JPEG/raw,
    /// which pad internally).
    pub fn allows_odd_sizes(self) -> bool {
        matches!(self, Self::H264High444 | Self::H265Main444 | Self::Mjpeg)
    }

    /// GStreamer elements the format needs.
    pub fn elements(self) -> &'static [&'static str] {
        match self {
            Self::H264
            | Self::H264High10
            | Self::H264High422
            | Self::H264High422Ten
            | Self::H264High444 => &["videotestsrc", "videoconvert", "x264enc", "rtph264pay"],
            Self::H264Interlaced => &["videotestsrc", "interlace", "x264enc", "rtph264pay"],
            Self::H265
            | Self::H265Main10
            | Self::H265Main12
            | Self::H265Main444
            | Self::H265Main422Ten => &["videotestsrc", "videoconvert", "x265enc", "rtph265pay"],
            Self::Mjpeg => &["videotestsrc", "jpegenc", "rtpjpegpay"],
            Self::RawUyvy => &["videotestsrc", "rtpvrawpay"],
        }
    }
}

impl fmt::Display for SourceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceFormat {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|f| f.as_str()).collect();
                ConfigError(format!(
                    "unknown format {s:?} (expected one of {})",
                    names.join(", ")
                ))
            })
    }
}

/// One format camera, served at `rtsp://host:port/<id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatCamera {
    /// Mount name.
    pub id: String,
    /// What it streams.
    pub format: SourceFormat,
    /// Frame width (odd allowed where [`SourceFormat::allows_odd_sizes`]), default 320.
    pub width: u32,
    /// Frame height, default 240.
    pub height: u32,
    /// Frames per second, default 10.
    pub fps: u32,
}

impl FormatCamera {
    /// A 320×240 10 fps camera.
    pub fn new(id: impl Into<String>, format: SourceFormat) -> Self {
        Self {
            id: id.into(),
            format,
            width: 320,
            height: 240,
            fps: 10,
        }
    }

    /// Checks id, size (even unless the format allows odd) and frame rate.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(format!("format camera {}: {m}", self.id)));
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return bad("id must be non-empty [A-Za-z0-9._-]".into());
        }
        if !(16..=4096).contains(&self.width) || !(16..=2160).contains(&self.height) {
            return bad("size out of range 16..4096x2160".into());
        }
        let odd = !self.width.is_multiple_of(2) || !self.height.is_multiple_of(2);
        if odd && !self.format.allows_odd_sizes() {
            return bad(format!("{} needs even width and height", self.format));
        }
        if self.format == SourceFormat::Mjpeg && (self.width > 2040 || self.height > 2040) {
            return bad("MJPEG over RTP is limited to 2040x2040".into());
        }
        if !(1..=60).contains(&self.fps) {
            return bad("fps must be 1..=60".into());
        }
        Ok(())
    }

    /// The caps of the test source (the capsfilter named `shape` in [`Self::launch_line`]):
    /// 8-bit pictures of the camera's size and rate (UYVY for raw video; two pictures per
    /// frame, the fields, for interlaced H.264).
    pub fn source_caps(&self) -> String {
        let (format, rate) = match self.format {
            SourceFormat::RawUyvy => ("UYVY", self.fps),
            SourceFormat::H264Interlaced => ("I420", 2 * self.fps),
            _ => ("I420", self.fps),
        };
        format!(
            "video/x-raw,format={format},width={},height={},framerate={rate}/1",
            self.width, self.height
        )
    }

    /// This camera after `change`, validated.
    pub fn changed(&self, change: &FormatChange) -> Result<Self, ConfigError> {
        let next = Self {
            id: self.id.clone(),
            format: change.format.unwrap_or(self.format),
            width: change.width.unwrap_or(self.width),
            height: change.height.unwrap_or(self.height),
            fps: change.fps.unwrap_or(self.fps),
        };
        next.validate()?;
        Ok(next)
    }

    /// gst-launch description of the media (payloader `pay0`).
    pub fn launch_line(&self) -> String {
        let fps = self.fps;
        let format = self.format.raw_format();
        let src = format!(
            "videotestsrc is-live=true pattern=ball ! capsfilter name=shape caps=\"{}\"",
            self.source_caps()
        );
        let x264 =
            format!("x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} threads=1");
        let x265 = format!(
            "x265enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} \
             option-string=\"pools=1:frame-threads=1:lookahead-slices=0\""
        );
        // The encoder's input format only: size and rate follow the source's caps, so that a
        // change of `shape` renegotiates the running stream.
        let body = match self.format {
            SourceFormat::H264Interlaced => format!(
                // Two progressive pictures become the two fields of one interlaced frame.
                "{src} ! interlace field-pattern=1:1 top-field-first=true \
                 ! {x264} interlaced=true ! rtph264pay name=pay0 pt=96 config-interval=-1"
            ),
            SourceFormat::Mjpeg => {
                format!("{src} ! jpegenc quality=85 ! rtpjpegpay name=pay0 pt=26")
            }
            SourceFormat::RawUyvy => format!("{src} ! rtpvrawpay name=pay0 pt=96"),
            f if f.elements().contains(&"x264enc") => format!(
                "{src} ! videoconvert ! video/x-raw,format={format} ! {x264} \
                 ! rtph264pay name=pay0 pt=96 config-interval=-1"
            ),
            _ => format!(
                "{src} ! videoconvert ! video/x-raw,format={format} ! {x265} \
                 ! rtph265pay name=pay0 pt=96 config-interval=-1"
            ),
        };
        format!("( {body} )")
    }
}

/// A change to a running format camera: the fields given replace the camera's.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FormatChange {
    /// New source format (a codec change restarts the camera's sessions).
    #[serde(default, with = "format_name")]
    pub format: Option<SourceFormat>,
    /// New width.
    pub width: Option<u32>,
    /// New height.
    pub height: Option<u32>,
    /// New frame rate.
    pub fps: Option<u32>,
}

/// `format` as its command-line name in JSON.
mod format_name {
    use super::SourceFormat;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(f: &Option<SourceFormat>, s: S) -> Result<S::Ok, S::Error> {
        match f {
            Some(f) => s.serialize_some(f.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SourceFormat>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|name| name.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// What `POST /formats/{id}` answers: the camera as served now.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FormatStatus {
    /// Mount name.
    pub id: String,
    /// Source format name.
    pub format: String,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Frame rate.
    pub fps: u32,
    /// Clients disconnected by the change (a format change ends every session).
    pub ended_sessions: usize,
}

impl FormatStatus {
    /// `cam` after a change that ended `ended_sessions` sessions.
    pub fn of(cam: &FormatCamera, ended_sessions: usize) -> Self {
        Self {
            id: cam.id.clone(),
            format: cam.format.as_str().to_owned(),
            width: cam.width,
            height: cam.height,
            fps: cam.fps,
            ended_sessions,
        }
    }
}

impl FromStr for FormatCamera {
    type Err = ConfigError;

    /// Parses `id=hi10,format=h264-high10,width=320,height=240,fps=10`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (mut id, mut format) = (None, None);
        let (mut width, mut height, mut fps) = (320, 240, 10);
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| ConfigError(format!("expected key=value, got {part:?}")))?;
            let num = |v: &str| {
                v.parse::<u32>()
                    .map_err(|_| ConfigError(format!("{key}: not a number: {v:?}")))
            };
            match key {
                "id" => id = Some(value.to_owned()),
                "format" => format = Some(value.parse()?),
                "width" => width = num(value)?,
                "height" => height = num(value)?,
                "fps" => fps = num(value)?,
                other => return Err(ConfigError(format!("unknown format camera key {other:?}"))),
            }
        }
        let cam = FormatCamera {
            id: id.ok_or_else(|| ConfigError("format camera needs id=".into()))?,
            format: format.ok_or_else(|| ConfigError("format camera needs format=".into()))?,
            width,
            height,
            fps,
        };
        cam.validate()?;
        Ok(cam)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let c: FormatCamera = "id=a,format=h264-high444,width=641,height=361,fps=5"
            .parse()
            .unwrap();
        assert_eq!(
            (c.format, c.width, c.height, c.fps),
            (SourceFormat::H264High444, 641, 361, 5)
        );
        assert!(c.launch_line().contains("format=Y444"));
        assert!(c.launch_line().contains(
            "name=shape caps=\"video/x-raw,format=I420,width=641,height=361,framerate=5/1\""
        ));
        let change: FormatChange =
            serde_json::from_str(r#"{"format": "h265", "width": 320}"#).unwrap();
        // H.265 4:2:0 needs an even height: 641x361 cannot become it.
        assert!(c.changed(&change).is_err());
        let base: FormatCamera = "id=b,format=h264,width=640,height=360".parse().unwrap();
        let next = base.changed(&change).unwrap();
        assert_eq!(
            (next.format, next.width, next.height, next.fps),
            (SourceFormat::H265, 320, 360, 10)
        );
        assert!(
            base.changed(&FormatChange {
                width: Some(3),
                ..FormatChange::default()
            })
            .is_err()
        );
        assert!(serde_json::from_str::<FormatChange>(r#"{"format": "vp9"}"#).is_err());
        assert!(
            "id=a,format=h264,width=641"
                .parse::<FormatCamera>()
                .is_err()
        );
        assert!("id=a,format=vp9".parse::<FormatCamera>().is_err());
        assert!("format=h264".parse::<FormatCamera>().is_err());
        for f in SourceFormat::ALL {
            assert_eq!(f.as_str().parse::<SourceFormat>().unwrap(), f);
            let line = FormatCamera::new("x", f).launch_line();
            assert!(line.contains("name=pay0"), "{line}");
        }
    }
}
