//! Simulated camera configuration: cameras, codecs, credentials and listen addresses.

use std::{fmt, net::SocketAddr, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::SceneSpec;

/// Invalid configuration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid camera configuration: {0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

/// What a simulated camera streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// H.264 video (x264enc, rtph264pay).
    H264,
    /// H.265 video (x265enc, rtph265pay).
    H265,
    /// Audio only (raw L16 over RTP), no video at all: for testing that ingest rejects it.
    Audio,
}

impl Codec {
    /// The name used on the command line and in the control API.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
            Codec::Audio => "audio",
        }
    }
}

impl fmt::Display for Codec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Codec {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "h264" | "avc" => Ok(Codec::H264),
            "h265" | "hevc" => Ok(Codec::H265),
            "audio" => Ok(Codec::Audio),
            other => Err(err(format!(
                "unknown codec {other:?} (expected h264, h265 or audio)"
            ))),
        }
    }
}

/// RTSP basic-auth credentials protecting one camera.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password.
    pub pass: String,
}

/// One simulated camera.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraConfig {
    /// Mount name: the camera is served at `rtsp://host:port/<id>`.
    pub id: String,
    /// Frame width (even), default 640.
    pub width: u32,
    /// Frame height (even), default 360.
    pub height: u32,
    /// Frames per second, default 10.
    pub fps: u32,
    /// Stream codec, default H.264.
    pub codec: Codec,
    /// Moving objects in the scene, default 3.
    pub objects: u32,
    /// Scene seed, default 1.
    pub seed: u64,
    /// Basic-auth credentials; `None` means open to anonymous clients.
    pub credentials: Option<Credentials>,
    /// Non-reference B-frames between reference frames (H.264/H.265), default 0: an IBBP
    /// stream with 2, as some cameras send; 0 is the usual IPPP.
    #[serde(default)]
    pub bframes: u32,
}

impl CameraConfig {
    /// A camera with the given id and all defaults (640x360@10 H.264, 3 objects, seed 1, no auth).
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            width: 640,
            height: 360,
            fps: 10,
            codec: Codec::H264,
            objects: 3,
            seed: 1,
            credentials: None,
            bframes: 0,
        }
    }

    /// The scene this camera shows.
    pub fn scene(&self) -> SceneSpec {
        SceneSpec {
            width: self.width,
            height: self.height,
            objects: self.objects,
            seed: self.seed,
        }
    }

    /// Checks id characters, even frame size and frame rate.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let id_ok = !self.id.is_empty()
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !id_ok {
            return Err(err(format!(
                "camera id {:?} must be non-empty [A-Za-z0-9._-]",
                self.id
            )));
        }
        if self.codec != Codec::Audio {
            if self.width < 64 || self.height < 64 || self.width > 7680 || self.height > 4320 {
                return Err(err(format!("{}: size out of range 64..7680x4320", self.id)));
            }
            if !self.width.is_multiple_of(2) || !self.height.is_multiple_of(2) {
                return Err(err(format!("{}: width and height must be even", self.id)));
            }
        }
        if !(1..=120).contains(&self.fps) {
            return Err(err(format!("{}: fps must be 1..=120", self.id)));
        }
        if self.bframes > 4 {
            return Err(err(format!("{}: bframes must be 0..=4", self.id)));
        }
        if let Some(c) = &self.credentials
            && (c.user.is_empty() || c.user.contains(':'))
        {
            return Err(err(format!(
                "{}: user must be non-empty and without ':'",
                self.id
            )));
        }
        Ok(())
    }
}

impl FromStr for CameraConfig {
    type Err = ConfigError;

    /// Parses `id=cam0,width=640,height=360,fps=10,codec=h264,objects=3,seed=1,bframes=0,user=u,pass=p`
    /// (only `id` required).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut cam = CameraConfig::new("");
        let (mut user, mut pass) = (None, None);
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| err(format!("expected key=value, got {part:?}")))?;
            let num = |v: &str| -> Result<u64, ConfigError> {
                v.parse()
                    .map_err(|_| err(format!("{key}: not a number: {v:?}")))
            };
            let small = |v: &str| -> Result<u32, ConfigError> {
                u32::try_from(num(v)?).map_err(|_| err(format!("{key}: too large")))
            };
            match key.trim() {
                "id" => cam.id = value.to_string(),
                "width" => cam.width = small(value)?,
                "height" => cam.height = small(value)?,
                "fps" => cam.fps = small(value)?,
                "codec" => cam.codec = value.parse()?,
                "objects" => cam.objects = small(value)?,
                "seed" => cam.seed = num(value)?,
                "bframes" => cam.bframes = small(value)?,
                "user" => user = Some(value.to_string()),
                "pass" | "password" => pass = Some(value.to_string()),
                other => return Err(err(format!("unknown camera key {other:?}"))),
            }
        }
        cam.credentials = match (user, pass) {
            (None, None) => None,
            (Some(user), Some(pass)) => Some(Credentials { user, pass }),
            _ => return Err(err("user and pass must be given together")),
        };
        cam.validate()?;
        Ok(cam)
    }
}

/// Whole simulator configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CamsimConfig {
    /// RTSP listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// HTTP control listen address; port 0 picks a free port.
    pub control: SocketAddr,
    /// The cameras (ids unique).
    pub cameras: Vec<CameraConfig>,
}

impl CamsimConfig {
    /// Validates every camera and id uniqueness; at least one camera is required.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cameras.is_empty() {
            return Err(err("no cameras configured"));
        }
        let mut seen = std::collections::HashSet::new();
        for cam in &self.cameras {
            cam.validate()?;
            if !seen.insert(cam.id.as_str()) {
                return Err(err(format!("duplicate camera id {:?}", cam.id)));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_and_minimal_specs() {
        let c: CameraConfig =
            "id=cam0,width=320,height=240,fps=5,codec=h265,objects=2,seed=9,user=alice,pass=s3cret"
                .parse()
                .unwrap();
        assert_eq!(c.id, "cam0");
        assert_eq!((c.width, c.height, c.fps), (320, 240, 5));
        assert_eq!(c.codec, Codec::H265);
        assert_eq!((c.objects, c.seed), (2, 9));
        assert_eq!(
            c.credentials,
            Some(Credentials {
                user: "alice".into(),
                pass: "s3cret".into()
            })
        );
        let d: CameraConfig = "id=x".parse().unwrap();
        assert_eq!(d, CameraConfig::new("x"));
    }

    #[test]
    fn rejects_bad_specs() {
        for bad in [
            "",
            "width=640",
            "id=a,width=641",
            "id=a,fps=0",
            "id=a,codec=vp8",
            "id=a,user=u",
            "id=a b",
            "id=a,bogus=1",
            "id=a,width=x",
        ] {
            assert!(bad.parse::<CameraConfig>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rejects_duplicate_ids() {
        let cfg = CamsimConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            control: "127.0.0.1:0".parse().unwrap(),
            cameras: vec![CameraConfig::new("a"), CameraConfig::new("a")],
        };
        assert!(cfg.validate().is_err());
    }
}
