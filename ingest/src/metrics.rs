//! Prometheus metrics of the ingest node, in an explicit registry.
//!
//! Per-camera series carry a `camera` label; their number is bounded by the cameras assigned
//! to the node, and [`IngestMetrics::remove_camera`] deletes them when a camera leaves. The
//! other labels (`reason`, `kind`, `state`) take values from fixed lists below.

use panoptes_runtime::metrics;
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

/// Reasons a frame can be dropped before it reaches the producer queue.
pub const DROP_REASONS: &[&str] = &[
    "producer_queue_full",
    "too_large",
    "producer_error",
    "lease_expired",
];
/// Camera error kinds (see [`crate::error::CameraError::kind`]).
pub const ERROR_KINDS: &[&str] = &[
    "auth_failed",
    "unreachable",
    "not_found",
    "unsupported",
    "connect_timeout",
    "no_data",
    "stream_ended",
    "pipeline",
];
/// Outcomes of a camera handover in coordinator mode (`panoptes_ingest_handovers_total`):
/// `ok` (frames acknowledged, released with the next sequence number), `undelivered`
/// (released after `handover_flush_timeout` with frames still unacknowledged), `superseded`
/// (the release was refused: the camera had already been given to another node),
/// `shutdown` (released without a move being asked, when the node stopped at the end of its
/// drain), `error` (Redis could not be reached; retried).
pub const HANDOVER_RESULTS: &[&str] = &["ok", "undelivered", "superseded", "shutdown", "error"];
/// Camera states (see [`crate::camera::CameraState`]).
pub const STATES: &[&str] = &["connecting", "streaming", "backing_off", "stopped"];

/// Upper bounds of `panoptes_ingest_publish_latency_seconds`.
const PUBLISH_LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 30.0,
];

/// All ingest metrics.
#[derive(Clone)]
pub struct IngestMetrics {
    /// The registry served on `/metrics`.
    pub registry: Registry,
    /// Frames handed to the producer, per camera.
    pub frames: IntCounterVec,
    /// Payload bytes handed to the producer, per camera.
    pub bytes: IntCounterVec,
    /// Frames dropped before the producer, per camera and reason.
    pub dropped: IntCounterVec,
    /// Frames whose delivery failed after enqueueing, per reason.
    pub publish_errors: IntCounterVec,
    /// Decode errors reported by the decoder, per camera.
    pub decode_errors: IntCounterVec,
    /// Access units dropped before the decoder because the sampler would not keep them.
    pub decode_skipped: IntCounterVec,
    /// Reconnect attempts, per camera.
    pub reconnects: IntCounterVec,
    /// Camera failures by kind.
    pub camera_errors: IntCounterVec,
    /// 1 while a camera is streaming.
    pub camera_up: IntGaugeVec,
    /// One-hot camera state.
    pub camera_state: IntGaugeVec,
    /// Time from enqueue to broker acknowledgement.
    pub publish_latency: Histogram,
    /// Size of published frames.
    pub frame_bytes: Histogram,
    /// Messages in the producer's queue (waiting or in flight).
    pub producer_queue: IntGauge,
    /// Cameras assigned to this node.
    pub cameras: IntGauge,
    /// Coordinator mode: camera handovers by result.
    pub handovers: IntCounterVec,
    /// Coordinator mode: times the node found its lease expired (it was paused or cut off).
    pub lease_lost: IntCounter,
    /// Coordinator mode: granted cameras not started because their sealed password could
    /// not be opened, by reason (`SealError::reason`: `no_keyring`, `unknown_key`, `forged`,
    /// `malformed`).
    pub credential_errors: IntCounterVec,
    /// Per camera: camera capture time − node clock at arrival, from its RTCP sender reports
    /// (see [`crate::capture`]); absent while the camera sent none.
    pub camera_clock_offset: prometheus::GaugeVec,
    /// Per camera: the sampling rate it runs at (the coordinator's cap, or its fps).
    pub camera_rate_cap: prometheus::GaugeVec,
}

impl IngestMetrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registry::new();
        let counter_vec = |name, help, labels| metrics::counter_vec(&r, name, help, labels);
        let gauge_vec = |name, help, labels| metrics::gauge_vec(&r, name, help, labels);
        let m = Self {
            frames: counter_vec(
                "panoptes_ingest_frames_total",
                "Frames handed to the Kafka producer.",
                &["camera"],
            )?,
            bytes: counter_vec(
                "panoptes_ingest_bytes_total",
                "Frame payload bytes handed to the Kafka producer.",
                &["camera"],
            )?,
            dropped: counter_vec(
                "panoptes_ingest_frames_dropped_total",
                "Frames dropped before the producer queue (their sequence numbers leave a gap).",
                &["camera", "reason"],
            )?,
            publish_errors: counter_vec(
                "panoptes_ingest_publish_errors_total",
                "Frames the broker did not acknowledge (delivery failures).",
                &["reason"],
            )?,
            decode_errors: counter_vec(
                "panoptes_ingest_decode_errors_total",
                "Decoder errors and warnings.",
                &["camera"],
            )?,
            decode_skipped: counter_vec(
                "panoptes_ingest_decode_skipped_total",
                "Compressed frames dropped before the decoder because the sampler would not keep them.",
                &["camera"],
            )?,
            reconnects: counter_vec(
                "panoptes_ingest_reconnects_total",
                "Reconnect attempts after a camera failure.",
                &["camera"],
            )?,
            camera_errors: counter_vec(
                "panoptes_ingest_camera_errors_total",
                "Camera failures by kind.",
                &["camera", "kind"],
            )?,
            camera_up: gauge_vec(
                "panoptes_ingest_camera_up",
                "1 while the camera streams.",
                &["camera"],
            )?,
            camera_state: gauge_vec(
                "panoptes_ingest_camera_state",
                "Camera state, one-hot.",
                &["camera", "state"],
            )?,
            publish_latency: metrics::histogram(
                &r,
                "panoptes_ingest_publish_latency_seconds",
                "Enqueue to broker acknowledgement.",
                PUBLISH_LATENCY_BUCKETS.to_vec(),
            )?,
            frame_bytes: metrics::histogram(
                &r,
                "panoptes_ingest_frame_bytes",
                "Size of published frame payloads.",
                prometheus::exponential_buckets(4096.0, 2.0, 10)?,
            )?,
            producer_queue: metrics::gauge(
                &r,
                "panoptes_ingest_producer_queue_messages",
                "Frames in the Kafka producer queue, waiting or in flight.",
            )?,
            cameras: metrics::gauge(
                &r,
                "panoptes_ingest_cameras",
                "Cameras assigned to this node.",
            )?,
            handovers: counter_vec(
                "panoptes_ingest_handovers_total",
                "Cameras handed over to another node at the coordinator's request, by result.",
                &["result"],
            )?,
            lease_lost: metrics::counter(
                &r,
                "panoptes_ingest_lease_lost_total",
                "Times this node found its coordinator lease expired (its cameras were probably moved).",
            )?,
            credential_errors: counter_vec(
                "panoptes_ingest_camera_credential_errors_total",
                "Granted cameras whose sealed password could not be opened (not started), by reason.",
                &["reason"],
            )?,
            camera_clock_offset: metrics::register(
                &r,
                prometheus::GaugeVec::new(
                    prometheus::Opts::new(
                        "panoptes_ingest_camera_clock_offset_seconds",
                        "Camera clock (RTCP sender reports) minus this node's capture clock at the frame's arrival.",
                    ),
                    &["camera"],
                )?,
            )?,
            camera_rate_cap: metrics::register(
                &r,
                prometheus::GaugeVec::new(
                    prometheus::Opts::new(
                        "panoptes_ingest_camera_rate_cap_fps",
                        "Sampling rate a camera runs at: the coordinator's degradation cap, or its fps.",
                    ),
                    &["camera"],
                )?,
            )?,
            registry: r,
        };
        for result in HANDOVER_RESULTS {
            m.handovers.with_label_values(&[result]).inc_by(0);
        }
        Ok(m)
    }

    /// Sets the one-hot state gauges and `camera_up` for `camera`.
    pub fn set_state(&self, camera: &str, state: &str) {
        for s in STATES {
            self.camera_state
                .with_label_values(&[camera, s])
                .set(i64::from(*s == state));
        }
        self.camera_up
            .with_label_values(&[camera])
            .set(i64::from(state == "streaming"));
    }

    /// Deletes every series of `camera`, so a departed camera leaves no stale label behind.
    pub fn remove_camera(&self, camera: &str) {
        for vec in [
            &self.frames,
            &self.bytes,
            &self.decode_errors,
            &self.decode_skipped,
            &self.reconnects,
        ] {
            let _ = vec.remove_label_values(&[camera]);
        }
        let _ = self.camera_up.remove_label_values(&[camera]);
        let _ = self.camera_clock_offset.remove_label_values(&[camera]);
        let _ = self.camera_rate_cap.remove_label_values(&[camera]);
        for r in DROP_REASONS {
            let _ = self.dropped.remove_label_values(&[camera, r]);
        }
        for k in ERROR_KINDS {
            let _ = self.camera_errors.remove_label_values(&[camera, k]);
        }
        for s in STATES {
            let _ = self.camera_state.remove_label_values(&[camera, s]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_a_camera_removes_its_series() {
        let m = IngestMetrics::new().unwrap();
        m.frames.with_label_values(&["cam9"]).inc();
        m.dropped.with_label_values(&["cam9", "too_large"]).inc();
        m.set_state("cam9", "streaming");
        m.set_state("cam8", "connecting");
        let count = |m: &IngestMetrics| {
            m.registry
                .gather()
                .iter()
                .flat_map(|f| f.get_metric().to_vec())
                .filter(|mm| mm.get_label().iter().any(|l| l.value() == "cam9"))
                .count()
        };
        assert!(count(&m) > 0);
        m.remove_camera("cam9");
        assert_eq!(count(&m), 0);
    }
}
