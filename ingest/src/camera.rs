//! One camera's life: connect, stream, fail, back off, reconnect, until told to stop.
//!
//! Each camera runs on its own OS thread, because everything it does blocks: GStreamer state
//! changes, pulling samples, RTSP teardown. A failure (wrong password, unreachable host,
//! unsupported stream, no data) is classified, counted and shown in the camera's status; the
//! camera then waits a jittered, exponentially growing delay and tries again. Nothing a camera
//! does can stall another camera or the async runtime.
//!
//! ```text
//!   ┌────────────► Connecting ──first frame──► Streaming
//!   │                 │                           │
//!   └── BackingOff ◄──┴─── error / no data ───────┘        any state ──cancel──► Stopped
//! ```

use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gstreamer as gst;
use panoptes_schemas::{
    CaptureClock, FrameEncoding, FrameHeaders, SCHEMA_VERSION, new_traceparent,
};
use rand::Rng;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::capture;
use crate::config::CameraSpec;
pub use crate::error::CameraError;
use crate::metrics::IngestMetrics;
use crate::pipeline::{self, CameraPipeline};
use crate::publisher::FramePublisher;

/// Where a camera is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraState {
    /// Pipeline started, waiting for the first frame.
    Connecting,
    /// Frames are flowing.
    Streaming,
    /// Waiting before the next attempt.
    BackingOff,
    /// Removed or shutting down.
    Stopped,
}

impl CameraState {
    /// Metric label (one of [`crate::metrics::STATES`]).
    pub fn as_str(self) -> &'static str {
        match self {
            CameraState::Connecting => "connecting",
            CameraState::Streaming => "streaming",
            CameraState::BackingOff => "backing_off",
            CameraState::Stopped => "stopped",
        }
    }
}

/// A camera's externally visible status (served on `/cameras`; no credentials).
#[derive(Debug, Clone, Serialize)]
pub struct CameraStatus {
    /// Camera id.
    pub id: String,
    /// URL with the password replaced by `***`.
    pub url: String,
    /// Current state.
    pub state: CameraState,
    /// Kind of the last failure, if any.
    pub last_error_kind: Option<&'static str>,
    /// Message of the last failure, if any.
    pub last_error: Option<String>,
    /// Frames enqueued to Kafka.
    pub frames: u64,
    /// Frames dropped before Kafka.
    pub dropped: u64,
    /// Reconnect attempts.
    pub reconnects: u64,
    /// Next sequence number.
    pub next_seq: u64,
    /// Source resolution, once known.
    pub source_size: Option<(u32, u32)>,
    /// Published resolution, once known.
    pub output_size: Option<(u32, u32)>,
    /// Unix ms of the last state change.
    pub since_ms: u64,
}

/// Jittered exponential backoff: attempt n waits a uniform time in [d/2, d] with
/// d = min(initial × 2ⁿ, max). The upper bound is what an operator can rely on.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A fresh backoff.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self, rng: &mut impl Rng) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        let ceiling = self.initial.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let low = ceiling / 2;
        low + ceiling.saturating_sub(low).mul_f64(rng.random::<f64>())
    }

    /// Jump to the longest delay (for failures that need an operator).
    pub fn saturate(&mut self) {
        self.attempt = 20;
    }

    /// Back to the initial delay (after a successful stream).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Things every camera thread shares.
pub struct CameraContext {
    /// The node's producer.
    pub publisher: Arc<FramePublisher>,
    /// The node's metrics.
    pub metrics: IngestMetrics,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

struct Camera<'a> {
    spec: &'a CameraSpec,
    ctx: &'a CameraContext,
    status: &'a Mutex<CameraStatus>,
    cancel: &'a CancellationToken,
    /// The coordinator's rate cap (0: none), applied to the running pipeline.
    rate_cap: &'a AtomicU32,
    seq: u64,
    /// Clock of the last published frame's capture time (to log changes once).
    clock: Option<CaptureClock>,
    /// The last `unsupported` reason counted (the same reason again is not counted again).
    unsupported: Option<String>,
}

impl Camera<'_> {
    fn set_state(&self, state: CameraState) {
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        if st.state != state {
            tracing::info!(camera = %self.spec.id, from = st.state.as_str(), to = state.as_str(), "camera state");
            st.state = state;
            st.since_ms = now_ms();
        }
        drop(st);
        self.ctx.metrics.set_state(&self.spec.id, state.as_str());
    }

    fn record_error(&mut self, e: &CameraError) {
        // An unsupported stream stays unsupported on every retry: report it once (log,
        // counter), keep it in the status, and count again only if the reason changes.
        if let CameraError::Unsupported(reason) = e {
            if self.unsupported.as_deref() == Some(reason.as_str()) {
                tracing::debug!(camera = %self.spec.id, error = %e, "still unsupported");
                return;
            }
            self.unsupported = Some(reason.clone());
        }
        tracing::warn!(camera = %self.spec.id, url = %self.spec.url, kind = e.kind(), error = %e, "camera failed");
        self.ctx
            .metrics
            .camera_errors
            .with_label_values(&[&self.spec.id, e.kind()])
            .inc();
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        st.last_error_kind = Some(e.kind());
        st.last_error = Some(e.to_string());
    }

    /// Sleeps up to `d`, waking early on cancellation. Returns false when cancelled.
    fn sleep(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            if self.cancel.is_cancelled() {
                return false;
            }
            std::thread::sleep(
                Duration::from_millis(50).min(deadline.saturating_duration_since(Instant::now())),
            );
        }
        !self.cancel.is_cancelled()
    }

    fn run(&mut self) {
        // Create the camera's series at zero so that dashboards and alerts see them at once.
        let m = &self.ctx.metrics;
        for c in [&m.frames, &m.bytes, &m.reconnects, &m.decode_errors] {
            c.with_label_values(&[&self.spec.id]).inc_by(0);
        }
        let mut backoff = Backoff::new(self.spec.backoff_initial, self.spec.backoff_max);
        let mut rng = rand::rng();
        let mut first = true;
        while !self.cancel.is_cancelled() {
            if !first {
                self.ctx
                    .metrics
                    .reconnects
                    .with_label_values(&[&self.spec.id])
                    .inc();
                self.status
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .reconnects += 1;
            }
            first = false;
            self.set_state(CameraState::Connecting);
            tracing::info!(camera = %self.spec.id, url = %self.spec.url, "connecting");
            let (streamed, result) = self.stream_once();
            let Err(e) = result else { break };
            if streamed {
                backoff.reset();
                self.unsupported = None;
            }
            if !e.is_retryable() {
                backoff.saturate();
            }
            self.record_error(&e);
            self.set_state(CameraState::BackingOff);
            let delay = backoff.next_delay(&mut rng);
            tracing::info!(camera = %self.spec.id, delay_ms = delay.as_millis() as u64, "backing off");
            if !self.sleep(delay) {
                break;
            }
        }
        self.set_state(CameraState::Stopped);
    }

    /// One connection: returns whether any frame arrived, and why it ended (Ok = cancelled).
    fn stream_once(&mut self) -> (bool, Result<(), CameraError>) {
        let skipped = self
            .ctx
            .metrics
            .decode_skipped
            .with_label_values(&[&self.spec.id]);
        let pipe = match pipeline::build(self.spec, skipped) {
            Ok(p) => p,
            Err(e) => return (false, Err(e)),
        };
        let mut streamed = false;
        let result = pipe.start().and_then(|()| self.pump(&pipe, &mut streamed));
        pipe.stop();
        (streamed, result)
    }

    fn pump(&mut self, pipe: &CameraPipeline, streamed: &mut bool) -> Result<(), CameraError> {
        use std::sync::atomic::Ordering;
        let started = Instant::now();
        let mut last_frame = Instant::now();
        let decode_errors = self
            .ctx
            .metrics
            .decode_errors
            .with_label_values(&[&self.spec.id]);
        let mut rate = 0;
        loop {
            if self.cancel.is_cancelled() {
                return Ok(());
            }
            rate = self.follow_rate_cap(pipe, rate);
            if let Some(sample) = pipe.next_frame(Duration::from_millis(100)) {
                last_frame = Instant::now();
                if !*streamed {
                    *streamed = true;
                    self.set_state(CameraState::Streaming);
                }
                self.publish(&sample, pipe);
            }
            if let Some(e) = pipe.poll_bus(|| decode_errors.inc()) {
                // A source that announced its streams but had no video is unsupported,
                // whatever error the unlinked streams caused afterwards.
                if !pipe.info.video_linked.load(Ordering::SeqCst)
                    && pipe.info.no_more_pads.load(Ordering::SeqCst)
                {
                    return Err(CameraError::Unsupported("the stream has no video".into()));
                }
                return Err(e);
            }
            if pipe.info.no_more_pads.load(Ordering::SeqCst)
                && !pipe.info.video_linked.load(Ordering::SeqCst)
            {
                return Err(CameraError::Unsupported("the stream has no video".into()));
            }
            if !*streamed && let Some(reason) = pipe.info.unsupported_reason() {
                return Err(CameraError::Unsupported(reason));
            }
            if pipe.info.link_failed.load(Ordering::SeqCst) {
                return Err(CameraError::Unsupported(
                    "decoded video could not be linked".into(),
                ));
            }
            if !*streamed && started.elapsed() > self.spec.connect_timeout {
                return Err(CameraError::ConnectTimeout(self.spec.connect_timeout));
            }
            if *streamed && last_frame.elapsed() > self.spec.no_data_timeout {
                return Err(CameraError::NoData(self.spec.no_data_timeout));
            }
        }
    }

    fn publish(&mut self, sample: &gst::Sample, pipe: &CameraPipeline) {
        let Some(buffer) = sample.buffer() else {
            return;
        };
        let Ok(map) = buffer.map_readable() else {
            return;
        };
        let dims = *pipe.info.dims.lock().unwrap_or_else(|e| e.into_inner());
        let (sw, sh, ow, oh) = dims.unwrap_or((0, 0, 0, 0));
        let (width, height) = sample
            .caps()
            .and_then(|c| c.structure(0))
            .map(|s| {
                (
                    s.get::<i32>("width").unwrap_or(ow as i32) as u32,
                    s.get::<i32>("height").unwrap_or(oh as i32) as u32,
                )
            })
            .unwrap_or((ow, oh));
        let capture = self.capture_time(buffer);
        let headers = FrameHeaders {
            schema_version: SCHEMA_VERSION,
            camera_id: self.spec.id.clone(),
            seq: self.seq,
            capture_time_us: capture.time_us,
            pts_ns: buffer.pts().map(|t| t.nseconds()),
            width,
            height,
            source_width: if sw > 0 { sw } else { width },
            source_height: if sh > 0 { sh } else { height },
            encoding: FrameEncoding::Jpeg,
            traceparent: new_traceparent(),
            owner_epoch: None,
            capture_clock: capture.clock,
        };
        // The sequence number is spent even when the frame is dropped, so that every loss
        // before Kafka shows as a gap downstream as well as in the drop counter.
        self.seq += 1;
        let m = &self.ctx.metrics;
        let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
        st.next_seq = self.seq;
        // The sizes follow the stream, which may change them while it runs.
        if dims.is_some() {
            st.source_size = Some((sw, sh));
            st.output_size = Some((ow, oh));
        }
        match self
            .ctx
            .publisher
            .publish(self.spec.partition, &headers, map.as_slice())
        {
            Ok(()) => {
                st.frames += 1;
                m.frames.with_label_values(&[&self.spec.id]).inc();
                m.bytes
                    .with_label_values(&[&self.spec.id])
                    .inc_by(map.len() as u64);
                m.frame_bytes.observe(map.len() as f64);
            }
            Err(e) => {
                st.dropped += 1;
                m.dropped
                    .with_label_values(&[&self.spec.id, e.reason()])
                    .inc();
                tracing::debug!(camera = %self.spec.id, seq = headers.seq, error = %e, "frame dropped");
            }
        }
    }
}

impl Camera<'_> {
    /// Applies a changed rate cap to the running pipeline (`videorate`'s `max-rate`: frames
    /// above it are dropped before scaling and JPEG, and never get a sequence number, so the
    /// published sequence stays continuous). Returns the rate now applied.
    fn follow_rate_cap(&self, pipe: &CameraPipeline, applied: u32) -> u32 {
        let want = match self.rate_cap.load(std::sync::atomic::Ordering::Relaxed) {
            0 => self.spec.fps,
            cap => cap.min(self.spec.fps),
        };
        if want != applied {
            pipe.set_max_rate(want);
            self.ctx
                .metrics
                .camera_rate_cap
                .with_label_values(&[&self.spec.id])
                .set(f64::from(want));
            if applied != 0 {
                tracing::info!(camera = %self.spec.id, from = applied, to = want, fps = self.spec.fps, "sampling rate cap changed");
            }
        }
        want
    }

    /// The frame's capture time ([`crate::capture`]): the camera's own clock while it agrees
    /// with ours, else arrival on the cluster clock (Redis's, in coordinator mode, so that
    /// workers on other machines measure ages on the same clock; the wall clock in static
    /// mode). Publishes the camera's clock offset and logs when the clock in use changes.
    fn capture_time(&mut self, buffer: &gst::BufferRef) -> capture::CaptureTime {
        let arrival_us = panoptes_coordinator_client::clock::now_us();
        let camera_us = capture::camera_ntp_ns(buffer).and_then(capture::ntp_ns_to_unix_us);
        let chosen = capture::choose(camera_us, arrival_us, self.spec.camera_clock_tolerance);
        if let Some(offset_us) = chosen.offset_us {
            self.ctx
                .metrics
                .camera_clock_offset
                .with_label_values(&[&self.spec.id])
                .set(offset_us as f64 / 1e6);
        }
        if self.clock != Some(chosen.clock) {
            let offset_s = chosen.offset_us.map(|o| o as f64 / 1e6);
            match (chosen.clock, offset_s) {
                (CaptureClock::Arrival, Some(offset_s)) => tracing::warn!(
                    camera = %self.spec.id, offset_s,
                    tolerance = ?self.spec.camera_clock_tolerance,
                    "camera clock disagrees with ours: frames carry their arrival time"
                ),
                _ => tracing::info!(
                    camera = %self.spec.id, clock = chosen.clock.as_str(), ?offset_s,
                    "capture clock"
                ),
            }
            self.clock = Some(chosen.clock);
        }
        chosen
    }
}

/// A running camera thread.
pub struct CameraHandle {
    /// The spec it runs.
    pub spec: CameraSpec,
    /// Live status.
    pub status: Arc<Mutex<CameraStatus>>,
    rate_cap: Arc<AtomicU32>,
    cancel: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CameraHandle {
    /// Starts the camera's thread.
    pub fn spawn(
        spec: CameraSpec,
        ctx: Arc<CameraContext>,
        cancel: CancellationToken,
    ) -> std::io::Result<Self> {
        let status = Arc::new(Mutex::new(CameraStatus {
            id: spec.id.clone(),
            url: spec.url.redacted(),
            state: CameraState::Connecting,
            last_error_kind: None,
            last_error: None,
            frames: 0,
            dropped: 0,
            reconnects: 0,
            next_seq: spec.start_seq,
            source_size: None,
            output_size: None,
            since_ms: now_ms(),
        }));
        let rate_cap = Arc::new(AtomicU32::new(0));
        let thread = {
            let (spec, status, cancel) = (spec.clone(), status.clone(), cancel.clone());
            let rate_cap = rate_cap.clone();
            std::thread::Builder::new()
                .name(format!("cam-{}", spec.id))
                .spawn(move || {
                    let mut cam = Camera {
                        spec: &spec,
                        ctx: &ctx,
                        status: &status,
                        cancel: &cancel,
                        rate_cap: &rate_cap,
                        seq: spec.start_seq,
                        clock: None,
                        unsupported: None,
                    };
                    cam.run();
                })?
        };
        Ok(Self {
            spec,
            status,
            rate_cap,
            cancel,
            thread: Some(thread),
        })
    }

    /// A copy of the current status.
    pub fn status(&self) -> CameraStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Caps the sampling rate (`None`: the spec's fps) without restarting the pipeline;
    /// takes effect within ~100 ms.
    pub fn set_rate_cap(&self, cap: Option<u32>) {
        let v = cap.map_or(0, |c| c.max(1));
        self.rate_cap.store(v, std::sync::atomic::Ordering::Relaxed);
    }

    /// The rate cap set (`None`: none).
    pub fn rate_cap(&self) -> Option<u32> {
        Some(self.rate_cap.load(std::sync::atomic::Ordering::Relaxed)).filter(|v| *v > 0)
    }

    /// Asks the thread to stop (returns at once).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Stops the thread and waits for it (blocking: call from a blocking context).
    pub fn stop_and_join(mut self) -> CameraStatus {
        self.cancel.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.status()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_bound_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut rng = rand::rng();
        let delays: Vec<Duration> = (0..8).map(|_| b.next_delay(&mut rng)).collect();
        assert!(delays[0] >= Duration::from_millis(50) && delays[0] <= Duration::from_millis(100));
        assert!(delays[1] >= Duration::from_millis(100) && delays[1] <= Duration::from_millis(200));
        for d in &delays[4..] {
            assert!(
                *d >= Duration::from_millis(500) && *d <= Duration::from_secs(1),
                "{d:?}"
            );
        }
        b.reset();
        assert!(b.next_delay(&mut rng) <= Duration::from_millis(100));
        b.saturate();
        assert!(b.next_delay(&mut rng) >= Duration::from_millis(500));
    }

    #[test]
    fn operator_errors_are_not_retryable() {
        assert!(!CameraError::AuthFailed.is_retryable());
        assert!(!CameraError::Unsupported("x".into()).is_retryable());
        assert!(CameraError::Unreachable("x".into()).is_retryable());
        assert!(CameraError::NoData(Duration::from_secs(1)).is_retryable());
    }
}
