//! Prometheus metrics of the worker node, in an explicit registry.
//!
//! Labels take values from fixed lists: `stage` ([`STAGES`]), `reason` (dead-letter reasons
//! and skip statuses), `partition` (bounded by the partitions the worker owns), `device`.

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Stages timed per frame.
pub const STAGES: &[&str] = &["queue", "decode", "batch_wait", "inference", "postprocess"];

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// All worker metrics.
#[derive(Clone)]
pub struct WorkerMetrics {
    /// The registry served on `/metrics`.
    pub registry: Registry,
    /// Frame records consumed, per partition.
    pub frames: IntCounterVec,
    /// Detection records published (acknowledged or committed), per status.
    pub records: IntCounterVec,
    /// Frames skipped without inference, per reason (`skipped_stale`).
    pub skipped: IntCounterVec,
    /// Frames sent to the dead-letter topic, per reason.
    pub dead_lettered: IntCounterVec,
    /// Publishing or committing failures, per kind.
    pub publish_errors: IntCounterVec,
    /// Images per inference batch.
    pub batch_size: Histogram,
    /// Per-stage latency.
    pub stage_latency: HistogramVec,
    /// Capture → publish.
    pub end_to_end: Histogram,
    /// Frame age (capture → dequeue by a decode thread).
    pub frame_age: Histogram,
    /// Consumer lag per owned partition (high watermark − position).
    pub lag: IntGaugeVec,
    /// Frames in flight per owned partition (consumed, not yet done).
    pub in_flight: IntGaugeVec,
    /// 1 while the partition is paused for back-pressure.
    pub paused: IntGaugeVec,
    /// Transactions aborted (exactly-once mode), per reason.
    pub aborted: IntCounterVec,
    /// Constant 1, labelled with the device and model.
    pub info: IntGaugeVec,
    /// Inference failures.
    pub inference_errors: IntCounter,
    /// Partitions this worker runs now (all clusters).
    pub partitions_owned: IntGauge,
    /// Graceful handovers (coordinator mode), by result: `released`, `timeout`, `failed`.
    pub handovers: IntCounterVec,
    /// Times the member lease was found expired at renewal (coordinator mode).
    pub lease_lost: IntCounter,
    /// Partition runs that failed and were restarted from the committed offsets.
    pub partition_restarts: IntCounter,
}

impl WorkerMetrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };
        let frames = counter(
            "panoptes_worker_frames_total",
            "Frame records consumed.",
            &["partition"],
        )?;
        let records = counter(
            "panoptes_worker_records_total",
            "Detection records delivered, by status.",
            &["status"],
        )?;
        let skipped = counter(
            "panoptes_worker_frames_skipped_total",
            "Frames not inferred, by reason.",
            &["reason"],
        )?;
        let dead_lettered = counter(
            "panoptes_worker_dead_letters_total",
            "Frames sent to the dead-letter topic, by reason.",
            &["reason"],
        )?;
        let publish_errors = counter(
            "panoptes_worker_publish_errors_total",
            "Failures to deliver or commit, by kind.",
            &["kind"],
        )?;
        let aborted = counter(
            "panoptes_worker_transactions_aborted_total",
            "Transactions aborted, by reason.",
            &["reason"],
        )?;
        let batch_size = hist(
            "panoptes_worker_batch_size",
            "Images per inference batch.",
            vec![1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0],
        )?;
        let stage_latency = HistogramVec::new(
            HistogramOpts::new(
                "panoptes_worker_stage_latency_seconds",
                "Time per frame in each worker stage.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["stage"],
        )?;
        registry.register(Box::new(stage_latency.clone()))?;
        let end_to_end = hist(
            "panoptes_worker_end_to_end_latency_seconds",
            "Capture time to publishing the detection record.",
            LATENCY_BUCKETS.to_vec(),
        )?;
        let frame_age = hist(
            "panoptes_worker_frame_age_seconds",
            "Frame age (capture to dequeue) when a decode thread takes it.",
            LATENCY_BUCKETS.to_vec(),
        )?;
        let lag = gauge(
            "panoptes_worker_partition_lag",
            "Records behind the high watermark, per owned partition.",
            &["partition"],
        )?;
        let in_flight = gauge(
            "panoptes_worker_partition_in_flight",
            "Frames consumed and not yet delivered, per owned partition.",
            &["partition"],
        )?;
        let paused = gauge(
            "panoptes_worker_partition_paused",
            "1 while the partition is paused for back-pressure.",
            &["partition"],
        )?;
        let info = gauge(
            "panoptes_worker_info",
            "Constant 1: the device and model this worker runs.",
            &["device", "model", "version"],
        )?;
        let inference_errors = IntCounter::new(
            "panoptes_worker_inference_errors_total",
            "Batches whose forward pass failed.",
        )?;
        registry.register(Box::new(inference_errors.clone()))?;
        let partitions_owned = IntGauge::new(
            "panoptes_worker_partitions_owned",
            "Frames partitions this worker consumes now.",
        )?;
        registry.register(Box::new(partitions_owned.clone()))?;
        let handovers = counter(
            "panoptes_worker_handovers_total",
            "Graceful partition handovers, by result.",
            &["result"],
        )?;
        for r in ["released", "timeout", "failed"] {
            handovers.with_label_values(&[r]);
        }
        let lease_lost = IntCounter::new(
            "panoptes_worker_lease_lost_total",
            "Member lease found expired at renewal (its partitions were probably moved).",
        )?;
        registry.register(Box::new(lease_lost.clone()))?;
        let partition_restarts = IntCounter::new(
            "panoptes_worker_partition_restarts_total",
            "Partition runs that failed (e.g. a transaction that could not commit while a broker was away) and were restarted from the committed offsets (coordinator mode).",
        )?;
        registry.register(Box::new(partition_restarts.clone()))?;
        skipped.with_label_values(&["skipped_stale"]);
        for r in ["undecodable", "bad_headers", "too_large", "bad_dimensions"] {
            dead_lettered.with_label_values(&[r]);
        }
        Ok(Self {
            registry,
            frames,
            records,
            skipped,
            dead_lettered,
            publish_errors,
            batch_size,
            stage_latency,
            end_to_end,
            frame_age,
            lag,
            in_flight,
            paused,
            aborted,
            info,
            inference_errors,
            partitions_owned,
            handovers,
            lease_lost,
            partition_restarts,
        })
    }

    /// Observes one stage duration in milliseconds.
    pub fn stage(&self, stage: &str, ms: f32) {
        self.stage_latency
            .with_label_values(&[stage])
            .observe(f64::from(ms) / 1000.0);
    }
}
