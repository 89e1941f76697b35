//! Feeder threads: push rendered frames into a media's `appsrc` at real-time pace.
//!
//! One thread per prepared media (not on the GLib main loop). The first frame of a media
//! shows `frame_index_at(now, fps)` and each tick after adds one, so every client sees the
//! scene of the current instant; PTS = tick × frame duration. Ticks run on the monotonic
//! clock; if the thread falls more than a few frames behind it skips ticks (like a camera
//! dropping frames) instead of bursting. While the camera is stalled or stopped, ticks pass
//! without pushing, so after a resume the index and PTS are those of the current instant.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::camera::{Camera, CameraState};
use panoptes_scene::camera::Codec;
use panoptes_scene::{self as scene, frame_index_at};

/// Audio sample rate of the `audio` codec (S16BE mono).
pub(crate) const AUDIO_RATE: u64 = 16_000;

/// Longest single sleep, so a stop request is noticed promptly.
const MAX_SLEEP: Duration = Duration::from_millis(50);

/// Starts the feeder thread for one media; it ends when `stop` is set, the process shuts
/// down, or the appsrc reports end of stream.
pub(crate) fn spawn(
    camera: Arc<Camera>,
    appsrc: gst_app::AppSrc,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("feed-{}", camera.config.id))
        .spawn(move || {
            if let Err(e) = run(&camera, &appsrc, &stop) {
                tracing::warn!(camera = %camera.config.id, error = %e, "feeder failed");
            }
            tracing::debug!(camera = %camera.config.id, "feeder stopped");
        })
}

/// Produces the buffer for one tick.
trait Source {
    fn buffer(&mut self, tick: u64, frame_index: u64) -> Result<gst::Buffer, String>;
}

struct VideoSource {
    camera: Arc<Camera>,
    pool: gst::BufferPool,
}

impl VideoSource {
    fn new(camera: Arc<Camera>) -> Result<Self, String> {
        let c = &camera.config;
        let size = scene::i420_size(c.width, c.height);
        let pool = gst::BufferPool::new();
        let mut cfg = pool.config();
        cfg.set_params(None, u32::try_from(size).map_err(|e| e.to_string())?, 2, 0);
        pool.set_config(cfg).map_err(|e| e.to_string())?;
        pool.set_active(true).map_err(|e| e.to_string())?;
        Ok(Self { camera, pool })
    }
}

impl Source for VideoSource {
    fn buffer(&mut self, _tick: u64, frame_index: u64) -> Result<gst::Buffer, String> {
        let mut buffer = self
            .pool
            .acquire_buffer(None)
            .map_err(|e| format!("acquire buffer: {e:?}"))?;
        {
            let buf = buffer.get_mut().ok_or("pool buffer not writable")?;
            let mut map = buf.map_writable().map_err(|e| e.to_string())?;
            let c = &self.camera.config;
            scene::render_i420_into(&c.scene(), &c.id, frame_index, map.as_mut_slice());
            self.camera
                .variant()
                .apply_i420(c.width, c.height, map.as_mut_slice());
        }
        Ok(buffer)
    }
}

impl Drop for VideoSource {
    fn drop(&mut self) {
        let _ = self.pool.set_active(false);
    }
}

/// A 440 Hz tone, one second of samples, cut into per-tick buffers.
struct AudioSource {
    fps: u64,
    tone: Vec<u8>,
}

impl AudioSource {
    fn new(fps: u32) -> Self {
        let tone = (0..AUDIO_RATE)
            .flat_map(|i| {
                let t = i as f32 / AUDIO_RATE as f32;
                let v = (std::f32::consts::TAU * 440.0 * t).sin() * 8000.0;
                (v as i16).to_be_bytes()
            })
            .collect();
        Self {
            fps: u64::from(fps),
            tone,
        }
    }
}

impl Source for AudioSource {
    fn buffer(&mut self, tick: u64, _frame_index: u64) -> Result<gst::Buffer, String> {
        let start = tick * AUDIO_RATE / self.fps;
        let end = (tick + 1) * AUDIO_RATE / self.fps;
        let mut bytes = Vec::with_capacity(((end - start) * 2) as usize);
        for s in start..end {
            let i = (s % AUDIO_RATE) as usize * 2;
            bytes.extend_from_slice(&self.tone[i..i + 2]);
        }
        Ok(gst::Buffer::from_mut_slice(bytes))
    }
}

fn unix_now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn run(camera: &Arc<Camera>, appsrc: &gst_app::AppSrc, stop: &AtomicBool) -> Result<(), String> {
    let fps = camera.config.fps.max(1);
    let frame_ns = 1_000_000_000u64 / u64::from(fps);
    let frame = Duration::from_nanos(frame_ns);
    let mut source: Box<dyn Source> = match camera.config.codec {
        Codec::Audio => Box::new(AudioSource::new(fps)),
        Codec::H264 | Codec::H265 => Box::new(VideoSource::new(camera.clone())?),
    };
    let first_index = frame_index_at(unix_now_ns(), fps);
    let start = Instant::now();
    let mut tick: u64 = 0;
    tracing::debug!(camera = %camera.config.id, first_index, "feeder started");
    loop {
        // Wait for this tick's due time, checking for stop requests.
        let due = start + Duration::from_nanos(tick.saturating_mul(frame_ns));
        loop {
            if stop.load(Ordering::Acquire) || camera.is_shutting_down() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= due {
                break;
            }
            std::thread::sleep((due - now).min(MAX_SLEEP));
        }
        // Far behind (starved CPU): skip to the current tick rather than burst.
        let behind = Instant::now().saturating_duration_since(due);
        if behind > frame * 3 {
            tick = (start.elapsed().as_nanos() / u128::from(frame_ns)) as u64;
        }
        if camera.state() == CameraState::Live {
            let mut buffer = source.buffer(tick, first_index + tick)?;
            {
                let buf = buffer.get_mut().ok_or("buffer not writable")?;
                buf.set_pts(gst::ClockTime::from_nseconds(tick * frame_ns));
                buf.set_duration(gst::ClockTime::from_nseconds(frame_ns));
            }
            match appsrc.push_buffer(buffer) {
                // Flushing: media not started yet or being torn down; keep ticking.
                Ok(_) | Err(gst::FlowError::Flushing) => {}
                Err(gst::FlowError::Eos) => return Ok(()),
                Err(e) => return Err(format!("push_buffer: {e:?}")),
            }
        }
        tick += 1;
    }
}
