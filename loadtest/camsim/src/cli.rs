//! Command-line arguments of `panoptes-camsim`.

use std::net::SocketAddr;

use clap::Parser;

use panoptes_scene::camera::{CameraConfig, CamsimConfig, Codec, ConfigError};

use crate::formats::FormatCamera;

/// Serve simulated RTSP cameras with known ground truth, with an HTTP fault-control API.
#[derive(Debug, Clone, Parser)]
#[command(name = "panoptes-camsim", version)]
pub struct CamsimArgs {
    /// RTSP listen address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0", env = "PANOPTES_CAMSIM_LISTEN")]
    pub listen: SocketAddr,
    /// HTTP control listen address (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0", env = "PANOPTES_CAMSIM_CONTROL")]
    pub control: SocketAddr,
    /// A camera: "id=cam0,width=640,height=360,fps=10,codec=h264,objects=3,seed=1,user=u,pass=p"
    /// (only id required). Repeatable.
    #[arg(long = "camera", value_name = "SPEC")]
    pub camera: Vec<CameraConfig>,
    /// A test-pattern camera in an explicit source format:
    /// "id=hi10,format=h264-high10,width=320,height=240,fps=10" (formats: see
    /// `panoptes_camsim::formats::SourceFormat`). Repeatable.
    #[arg(long = "format-camera", value_name = "SPEC")]
    pub format_camera: Vec<FormatCamera>,
    /// Shorthand: N identical cameras named cam0..cam{N-1} (sized by --width/--height/--fps/--codec).
    #[arg(long = "cameras", value_name = "N")]
    pub cameras: Option<u32>,
    /// Width of --cameras cameras.
    #[arg(long, default_value_t = 640)]
    pub width: u32,
    /// Height of --cameras cameras.
    #[arg(long, default_value_t = 360)]
    pub height: u32,
    /// Frame rate of --cameras cameras.
    #[arg(long, default_value_t = 10)]
    pub fps: u32,
    /// Codec of --cameras cameras (h264, h265, audio).
    #[arg(long, default_value = "h264")]
    pub codec: Codec,
    /// Objects per scene of --cameras cameras.
    #[arg(long, default_value_t = 3)]
    pub objects: u32,
    /// Non-reference B-frames between reference frames of --cameras cameras (0: IPPP).
    #[arg(long, default_value_t = 0)]
    pub bframes: u32,
}

impl CamsimArgs {
    /// The scene cameras' configuration and the format cameras; either list may be empty,
    /// not both.
    pub fn into_parts(mut self) -> Result<(CamsimConfig, Vec<FormatCamera>), ConfigError> {
        let formats = std::mem::take(&mut self.format_camera);
        if formats.is_empty() {
            return Ok((self.into_config()?, formats));
        }
        let listen = (self.listen, self.control);
        let config = if self.cameras.is_none() && self.camera.is_empty() {
            CamsimConfig {
                listen: listen.0,
                control: listen.1,
                cameras: Vec::new(),
            }
        } else {
            self.into_config()?
        };
        Ok((config, formats))
    }

    /// Builds and validates the simulator configuration.
    pub fn into_config(self) -> Result<CamsimConfig, ConfigError> {
        let mut cameras = Vec::new();
        for i in 0..self.cameras.unwrap_or(0) {
            cameras.push(CameraConfig {
                width: self.width,
                height: self.height,
                fps: self.fps,
                codec: self.codec,
                objects: self.objects,
                bframes: self.bframes,
                ..CameraConfig::new(format!("cam{i}"))
            });
        }
        cameras.extend(self.camera);
        let config = CamsimConfig {
            listen: self.listen,
            control: self.control,
            cameras,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shorthand_and_explicit_cameras_combine() {
        let args = CamsimArgs::parse_from([
            "panoptes-camsim",
            "--cameras",
            "2",
            "--width",
            "320",
            "--height",
            "240",
            "--codec",
            "h265",
            "--camera",
            "id=door,fps=5,user=a,pass=b",
        ]);
        let cfg = args.into_config().unwrap();
        let ids: Vec<&str> = cfg.cameras.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["cam0", "cam1", "door"]);
        assert_eq!(cfg.cameras[1].codec, Codec::H265);
        assert_eq!(cfg.cameras[1].width, 320);
        assert_eq!(cfg.cameras[2].fps, 5);
        assert!(cfg.cameras[2].credentials.is_some());
    }

    #[test]
    fn requires_a_camera_and_unique_ids() {
        assert!(
            CamsimArgs::parse_from(["panoptes-camsim"])
                .into_config()
                .is_err()
        );
        let dup =
            CamsimArgs::parse_from(["panoptes-camsim", "--cameras", "1", "--camera", "id=cam0"]);
        assert!(dup.into_config().is_err());
        assert!(CamsimArgs::try_parse_from(["panoptes-camsim", "--camera", "id=a,fps=x"]).is_err());
    }
}
