//! Runtime state of one simulated camera (fault state, counters) and its status report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use panoptes_scene::variant::Variant;

use serde::{Deserialize, Serialize};

use panoptes_scene::camera::{CameraConfig, Codec};

/// Fault state of a camera, as set through the control API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CameraState {
    /// Streaming normally.
    Live,
    /// Sessions stay connected but no frames are sent.
    Stalled,
    /// The mount is gone (new connections get 404) and no frames are sent.
    Stopped,
}

impl CameraState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => CameraState::Live,
            1 => CameraState::Stalled,
            _ => CameraState::Stopped,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            CameraState::Live => 0,
            CameraState::Stalled => 1,
            CameraState::Stopped => 2,
        }
    }
}

/// One camera as reported by `GET /cameras`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraStatus {
    /// Camera id (mount name).
    pub id: String,
    /// Current fault state.
    pub state: CameraState,
    /// RTSP clients that currently hold a session on this camera.
    pub clients: u32,
    /// Frames (or, for audio, buffers) that left the source since start, all media together.
    pub frames_sent: u64,
    /// Stream codec.
    pub codec: Codec,
    /// Frame width.
    pub width: u32,
    /// Frame height.
    pub height: u32,
    /// Frames per second.
    pub fps: u32,
}

/// Shared runtime state of one camera: read by its feeder threads, written by the control API.
#[derive(Debug)]
pub(crate) struct Camera {
    pub(crate) config: CameraConfig,
    state: AtomicU8,
    /// The picture variant ([`Variant::as_u8`]).
    variant: AtomicU8,
    frames_sent: AtomicU64,
    /// Process-wide shutdown flag, shared by all cameras.
    shutdown: Arc<AtomicBool>,
}

impl Camera {
    pub(crate) fn new(config: CameraConfig, shutdown: Arc<AtomicBool>) -> Self {
        Self {
            config,
            state: AtomicU8::new(CameraState::Live.as_u8()),
            variant: AtomicU8::new(Variant::Normal.as_u8()),
            frames_sent: AtomicU64::new(0),
            shutdown,
        }
    }

    /// Mount path, `/<id>`.
    pub(crate) fn path(&self) -> String {
        format!("/{}", self.config.id)
    }

    pub(crate) fn state(&self) -> CameraState {
        CameraState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Sets the state and returns the previous one.
    pub(crate) fn swap_state(&self, state: CameraState) -> CameraState {
        CameraState::from_u8(self.state.swap(state.as_u8(), Ordering::AcqRel))
    }

    /// The picture variant shown now.
    pub(crate) fn variant(&self) -> Variant {
        Variant::from_u8(self.variant.load(Ordering::Acquire))
    }

    /// Switches the picture variant (from the next frame on).
    pub(crate) fn set_variant(&self, v: Variant) {
        self.variant.store(v.as_u8(), Ordering::Release);
    }

    pub(crate) fn count_frame(&self) {
        self.frames_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    pub(crate) fn status(&self, clients: u32) -> CameraStatus {
        CameraStatus {
            id: self.config.id.clone(),
            state: self.state(),
            clients,
            frames_sent: self.frames_sent.load(Ordering::Relaxed),
            codec: self.config.codec,
            width: self.config.width,
            height: self.config.height,
            fps: self.config.fps,
        }
    }
}
