//! The camera simulator (`panoptes-camsim`) as a child process: RTSP cameras with known
//! content, and its control API for faults.

use std::time::Duration;

use anyhow::Result;

use crate::basics::bin_path;
use crate::http::post_json;
use crate::process::ChildProcess;

/// The camera simulator, as a process.
pub struct CamSim {
    /// `rtsp://127.0.0.1:<port>`.
    pub rtsp: String,
    /// Base URL of its control API.
    pub control: String,
    /// The process.
    pub child: ChildProcess,
}

impl CamSim {
    /// Starts `panoptes-camsim` with `args` (e.g. `--camera id=cam0,fps=10`).
    pub fn start(args: &[&str]) -> Result<Self> {
        Self::start_with_env(args, &[])
    }

    /// [`CamSim::start`] with extra environment variables (e.g. `RUST_LOG`).
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let mut all = vec!["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut child = ChildProcess::spawn("camsim", &bin_path("panoptes-camsim"), &all, env)?;
        let rtsp = child.wait_for_line("RTSP=", Duration::from_secs(20))?;
        let control = child.wait_for_line("CONTROL=", Duration::from_secs(5))?;
        Ok(Self {
            rtsp,
            control,
            child,
        })
    }

    /// Starts the simulator with one `--camera <spec>` per entry of `specs`
    /// (e.g. `"id=cam0,fps=10"`).
    pub fn with_cameras(specs: &[&str]) -> Result<Self> {
        let mut args = Vec::new();
        for s in specs {
            args.push("--camera");
            args.push(*s);
        }
        Self::start(&args)
    }

    /// Starts the simulator serving `cameras` (id, size, fps, seed, objects, credentials).
    #[cfg(feature = "scene")]
    pub fn with_configs(cameras: &[panoptes_scene::camera::CameraConfig]) -> Result<Self> {
        let specs: Vec<String> = cameras.iter().map(camera_arg).collect();
        Self::with_cameras(&specs.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// URL of camera `id`, optionally with credentials.
    pub fn url(&self, id: &str, creds: Option<(&str, &str)>) -> String {
        match creds {
            None => format!("{}/{id}", self.rtsp),
            Some((u, p)) => format!(
                "{}/{id}",
                self.rtsp
                    .replacen("rtsp://", &format!("rtsp://{u}:{p}@"), 1)
            ),
        }
    }

    /// Applies a fault: `stall`, `drop`, `stop` or `resume`.
    pub fn fault(&self, id: &str, action: &str) -> Result<()> {
        post_json(
            &format!("{}/cameras/{id}/{action}", self.control),
            &serde_json::json!({}),
        )
    }

    /// Changes format camera `id` while it streams: `change` is a JSON object with any of
    /// `format`, `width`, `height`, `fps` (`panoptes_camsim::formats::FormatChange`).
    pub fn change_format(&self, id: &str, change: &serde_json::Value) -> Result<()> {
        post_json(&format!("{}/formats/{id}", self.control), change)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// The simulator's `--camera` value for `c`.
#[cfg(feature = "scene")]
pub fn camera_arg(c: &panoptes_scene::camera::CameraConfig) -> String {
    let mut a = format!(
        "id={},width={},height={},fps={},seed={},objects={}",
        c.id, c.width, c.height, c.fps, c.seed, c.objects
    );
    if c.bframes > 0 {
        a.push_str(&format!(",bframes={}", c.bframes));
    }
    if let Some(cr) = &c.credentials {
        a.push_str(&format!(",user={},pass={}", cr.user, cr.pass));
    }
    a
}
