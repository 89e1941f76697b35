//! `panoptes-camsim` (tool crate): one process serving N simulated RTSP cameras
//! (gst-rtsp-server) whose pictures come from [`panoptes_scene`], plus an HTTP API to inject
//! faults (stall, drop, stop). The simulator's GStreamer code lives here; nothing here ships
//! in a product image.
//!
//! Layout: what to serve is [`panoptes_scene::camera`] (re-exported here; it lives in the
//! scene crate so harnesses can describe cameras without linking GStreamer), `rtsp` (server,
//! factories, auth, session control), `feeder` (per-media frame threads), `control` (axum
//! routes), [`cli`] (clap arguments of the `panoptes-camsim` binary), [`formats`] (test-pattern
//! cameras in explicit source formats: bit depths, chroma, interlacing, odd sizes, MJPEG). [`CamSim`] is the embeddable handle; [`run`] is the binary's
//! main: start, print `RTSP=`/`CONTROL=` lines, wait for a shutdown signal.

pub mod cli;
pub mod formats;

mod camera;
mod control;
mod feeder;
mod rtsp;

use std::io::Write;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gstreamer as gst;

pub use camera::{CameraState, CameraStatus};
pub use panoptes_scene::camera::{CameraConfig, CamsimConfig, Codec, ConfigError, Credentials};
pub use panoptes_scene::variant::Variant;

use camera::Camera;
use formats::FormatCamera;
use rtsp::Rtsp;

/// Camera simulator errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// GStreamer or gst-rtsp-server failure (missing plugin, cannot bind, main loop gone).
    #[error("gstreamer: {0}")]
    Gst(String),
    /// Socket or thread error.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// No camera with this id.
    #[error("unknown camera {0:?}")]
    UnknownCamera(String),
    /// Not one of stall, drop, stop, resume.
    #[error(
        "unknown action {0:?} (expected stall, drop, stop, resume, or a variant: normal, dark, covered, blurred, scene_changed)"
    )]
    UnknownAction(String),
}

/// A fault to inject into one camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultAction {
    /// Keep sessions connected but send no more frames.
    Stall,
    /// End current sessions (connections closed); the mount stays, clients may reconnect.
    Drop,
    /// End current sessions and unmount: new connections get 404 until resume.
    Stop,
    /// Back to live (remounts a stopped camera).
    Resume,
}

impl FromStr for FaultAction {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stall" => Ok(FaultAction::Stall),
            "drop" => Ok(FaultAction::Drop),
            "stop" => Ok(FaultAction::Stop),
            "resume" => Ok(FaultAction::Resume),
            other => Err(Error::UnknownAction(other.to_string())),
        }
    }
}

/// State shared by the control API and the [`CamSim`] handle.
pub(crate) struct CamSimCore {
    cameras: Vec<Arc<Camera>>,
    rtsp: Rtsp,
    /// Serialises fault operations.
    ops: tokio::sync::Mutex<()>,
}

impl CamSimCore {
    fn camera(&self, id: &str) -> Result<&Arc<Camera>, Error> {
        self.cameras
            .iter()
            .find(|c| c.config.id == id)
            .ok_or_else(|| Error::UnknownCamera(id.to_string()))
    }

    pub(crate) async fn status(&self) -> Result<Vec<CameraStatus>, Error> {
        let paths = self.cameras.iter().map(|c| c.path()).collect();
        let counts = self.rtsp.client_counts(paths).await?;
        Ok(self
            .cameras
            .iter()
            .zip(counts)
            .map(|(c, n)| c.status(n))
            .collect())
    }

    pub(crate) async fn camera_status(&self, id: &str) -> Result<CameraStatus, Error> {
        let cam = self.camera(id)?;
        let counts = self.rtsp.client_counts(vec![cam.path()]).await?;
        Ok(cam.status(counts.first().copied().unwrap_or(0)))
    }

    /// Switches camera `id` to a picture variant (`panoptes_scene::variant`).
    pub(crate) async fn set_variant(&self, id: &str, v: Variant) -> Result<CameraStatus, Error> {
        self.camera(id)?.set_variant(v);
        tracing::info!(camera = %id, variant = v.as_str(), "picture variant");
        self.camera_status(id).await
    }

    /// Changes format camera `id` while it streams ([`formats::FormatChange`]).
    pub(crate) async fn change_format(
        &self,
        id: &str,
        change: &formats::FormatChange,
    ) -> Result<formats::FormatStatus, Error> {
        let _serial = self.ops.lock().await;
        let (cam, ended) = self.rtsp.change_format(id, change).await?;
        tracing::info!(camera = %id, format = %cam.format, width = cam.width, height = cam.height, fps = cam.fps, ended_sessions = ended, "format camera changed");
        Ok(formats::FormatStatus::of(&cam, ended))
    }

    pub(crate) async fn apply(&self, id: &str, action: FaultAction) -> Result<CameraStatus, Error> {
        let cam = self.camera(id)?.clone();
        let _serial = self.ops.lock().await;
        match action {
            FaultAction::Stall | FaultAction::Resume => {
                let new = if action == FaultAction::Stall {
                    CameraState::Stalled
                } else {
                    CameraState::Live
                };
                if cam.swap_state(new) == CameraState::Stopped {
                    self.rtsp.set_mounted(id, true).await?;
                }
            }
            FaultAction::Drop => {
                let n = self.rtsp.end_sessions(cam.path()).await?;
                tracing::info!(camera = %id, clients = n, "dropped sessions");
            }
            FaultAction::Stop => {
                if cam.swap_state(CameraState::Stopped) != CameraState::Stopped {
                    self.rtsp.set_mounted(id, false).await?;
                }
                let n = self.rtsp.end_sessions(cam.path()).await?;
                tracing::info!(camera = %id, clients = n, "stopped camera");
            }
        }
        tracing::info!(camera = %id, ?action, state = ?cam.state(), "fault control");
        self.camera_status(id).await
    }
}

/// A running camera simulator (RTSP server + control API).
pub struct CamSim {
    core: Arc<CamSimCore>,
    shutdown: Arc<AtomicBool>,
    rtsp_url: String,
    control_url: String,
    http_stop: Option<tokio::sync::oneshot::Sender<()>>,
    http_task: Option<tokio::task::JoinHandle<()>>,
}

fn url_host(addr: &SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => "127.0.0.1".into(),
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => "[::1]".into(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    }
}

/// Every format camera is valid and no id is used twice across both kinds.
fn validate_formats(config: &CamsimConfig, formats: &[FormatCamera]) -> Result<(), Error> {
    let mut seen: std::collections::HashSet<&str> =
        config.cameras.iter().map(|c| c.id.as_str()).collect();
    for cam in formats {
        cam.validate()?;
        if !seen.insert(cam.id.as_str()) {
            return Err(ConfigError(format!("duplicate camera id {:?}", cam.id)).into());
        }
    }
    Ok(())
}

/// Fails early when a GStreamer element the configured codecs need is missing.
fn check_plugins(config: &CamsimConfig, formats: &[FormatCamera]) -> Result<(), Error> {
    let mut needed = vec!["appsrc", "queue"];
    for cam in formats {
        needed.extend(cam.format.elements());
    }
    for cam in &config.cameras {
        needed.extend(match cam.codec {
            Codec::H264 => ["x264enc", "rtph264pay"],
            Codec::H265 => ["x265enc", "rtph265pay"],
            Codec::Audio => ["rtpL16pay", "queue"],
        });
    }
    for name in needed {
        if gst::ElementFactory::find(name).is_none() {
            return Err(Error::Gst(format!(
                "GStreamer element {name} is not installed"
            )));
        }
    }
    Ok(())
}

impl CamSim {
    /// Validates the config, starts the RTSP server (own GLib main-loop thread) and the
    /// control API on the current tokio runtime.
    pub async fn start(config: CamsimConfig) -> Result<Self, Error> {
        Self::start_with_formats(config, Vec::new()).await
    }

    /// [`CamSim::start`] plus [`FormatCamera`]s (then the scene camera list may be empty).
    pub async fn start_with_formats(
        config: CamsimConfig,
        formats: Vec<FormatCamera>,
    ) -> Result<Self, Error> {
        if formats.is_empty() || !config.cameras.is_empty() {
            config.validate()?;
        }
        validate_formats(&config, &formats)?;
        gst::init().map_err(|e| Error::Gst(e.to_string()))?;
        check_plugins(&config, &formats)?;
        let shutdown = Arc::new(AtomicBool::new(false));
        let cameras: Vec<Arc<Camera>> = config
            .cameras
            .iter()
            .map(|c| Arc::new(Camera::new(c.clone(), shutdown.clone())))
            .collect();
        let listen = config.listen;
        let rtsp = {
            let cameras = cameras.clone();
            tokio::task::spawn_blocking(move || Rtsp::start(listen, &cameras, &formats))
                .await
                .map_err(|e| Error::Gst(format!("RTSP start panicked: {e}")))??
        };
        let rtsp_url = format!("rtsp://{}:{}", url_host(&listen), rtsp.port());
        let core = Arc::new(CamSimCore {
            cameras,
            rtsp,
            ops: tokio::sync::Mutex::new(()),
        });
        let listener = tokio::net::TcpListener::bind(config.control).await?;
        let control_addr = listener.local_addr()?;
        let control_url = format!("http://{}:{}", url_host(&control_addr), control_addr.port());
        let (http_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = control::router(core.clone());
        let http_task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "control API failed");
            }
        });
        tracing::info!(%rtsp_url, %control_url, cameras = core.cameras.len(), "camsim ready");
        Ok(Self {
            core,
            shutdown,
            rtsp_url,
            control_url,
            http_stop: Some(http_stop),
            http_task: Some(http_task),
        })
    }

    /// Base RTSP URL, `rtsp://host:port`.
    pub fn rtsp_url(&self) -> &str {
        &self.rtsp_url
    }

    /// Base control URL, `http://host:port`.
    pub fn control_url(&self) -> &str {
        &self.control_url
    }

    /// URL of one camera, `rtsp://host:port/<id>`.
    pub fn camera_url(&self, id: &str) -> String {
        format!("{}/{id}", self.rtsp_url)
    }

    /// Status of all cameras (as `GET /cameras`).
    pub async fn status(&self) -> Result<Vec<CameraStatus>, Error> {
        self.core.status().await
    }

    /// Switches a camera's picture variant (as `POST /cameras/<id>/<variant>`).
    pub async fn set_variant(&self, id: &str, v: Variant) -> Result<CameraStatus, Error> {
        self.core.set_variant(id, v).await
    }

    /// Applies a fault action (as `POST /cameras/<id>/<action>`).
    pub async fn apply(&self, id: &str, action: FaultAction) -> Result<CameraStatus, Error> {
        self.core.apply(id, action).await
    }

    /// Stops feeders, the control API and the RTSP server (closing client connections).
    pub async fn shutdown(mut self) {
        self.shutdown.store(true, Ordering::Release);
        if let Some(tx) = self.http_stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.http_task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        let core = self.core.clone();
        let _ = tokio::task::spawn_blocking(move || core.rtsp.shutdown()).await;
        tracing::info!("camsim stopped");
    }
}

impl Drop for CamSim {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Release);
    }
}

/// The `panoptes-camsim` main: starts the simulator, prints `RTSP=<url>` and
/// `CONTROL=<url>` on stdout (flushed), runs until `shutdown` resolves, then stops cleanly.
pub async fn run(
    config: CamsimConfig,
    formats: Vec<FormatCamera>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Error> {
    let sim = CamSim::start_with_formats(config, formats).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "RTSP={}", sim.rtsp_url())?;
        writeln!(out, "CONTROL={}", sim.control_url())?;
        out.flush()?;
    }
    shutdown.await;
    sim.shutdown().await;
    Ok(())
}
