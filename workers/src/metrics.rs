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

/// Checks that refuse a frame before decoding (`frames_refused`'s `check` label):
/// `max_pixels` (the envelope's size is over `[decode] max_frame_pixels`), `header_mismatch`
/// (the JPEG's frame header disagrees with the envelope), `header_unreadable` (no JPEG
/// frame header could be read).
pub const REFUSAL_CHECKS: &[&str] = &["max_pixels", "header_mismatch", "header_unreadable"];

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
    /// Frames skipped without inference, per reason (`skipped_stale`, `superseded_owner`).
    pub skipped: IntCounterVec,
    /// Frames sent to the dead-letter topic, per reason.
    pub dead_lettered: IntCounterVec,
    /// Frames refused before any pixel buffer was sized for them, per check
    /// ([`REFUSAL_CHECKS`]): a subset of `dead_lettered`.
    pub frames_refused: IntCounterVec,
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
    /// Frames stamped over 1 s ahead of the worker's cluster clock (an ingest node off it).
    pub frames_from_future: IntCounter,
    /// Consumer lag per owned partition (end offset − position).
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
    /// Drift per camera ([`crate::drift`]).
    pub drift: crate::drift::DriftMetrics,
    /// Hot swaps, by result ([`crate::swap::SWAP_RESULTS`]).
    pub model_swaps: IntCounterVec,
    /// 1 for the model version running now (the series of a replaced one is removed).
    pub model_info: IntGaugeVec,
    /// Warm-up time of swapped-in candidates.
    pub swap_warmup: Histogram,
    /// Shadow inference ([`crate::shadow`]).
    pub shadow: crate::shadow::ShadowMetrics,
}

/// Creates metrics and registers them in one registry.
struct Registrar {
    registry: Registry,
}

impl Registrar {
    fn register<M: prometheus::core::Collector + Clone + 'static>(
        &self,
        metric: M,
    ) -> Result<M, prometheus::Error> {
        self.registry.register(Box::new(metric.clone()))?;
        Ok(metric)
    }

    fn counter(
        &self,
        name: &str,
        help: &str,
        label: &str,
    ) -> Result<IntCounterVec, prometheus::Error> {
        self.register(IntCounterVec::new(Opts::new(name, help), &[label])?)
    }

    fn gauge(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, prometheus::Error> {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    fn partition_gauge(&self, name: &str, help: &str) -> Result<IntGaugeVec, prometheus::Error> {
        self.gauge(name, help, &["partition"])
    }

    fn hist(
        &self,
        name: &str,
        help: &str,
        buckets: &[f64],
    ) -> Result<Histogram, prometheus::Error> {
        self.register(Histogram::with_opts(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        )?)
    }

    fn int_counter(&self, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
        self.register(IntCounter::new(name, help)?)
    }
}

/// Buckets of the batch size histogram.
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0];

impl WorkerMetrics {
    /// Creates and registers every metric in a fresh registry.
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registrar {
            registry: Registry::new(),
        };
        let m = Self {
            frames: r.counter("panoptes_worker_frames_total", "Frame records consumed.", "partition")?,
            records: r.counter(
                "panoptes_worker_records_total",
                "Detection records delivered, by status.",
                "status",
            )?,
            skipped: r.counter(
                "panoptes_worker_frames_skipped_total",
                "Frames not inferred, by reason.",
                "reason",
            )?,
            dead_lettered: r.counter(
                "panoptes_worker_dead_letters_total",
                "Frames sent to the dead-letter topic, by reason.",
                "reason",
            )?,
            frames_refused: r.counter(
                "panoptes_worker_frames_refused_total",
                "Frames refused before decoding (nothing allocated for their pixels), by check.",
                "check",
            )?,
            publish_errors: r.counter(
                "panoptes_worker_publish_errors_total",
                "Failures to deliver or commit, by kind.",
                "kind",
            )?,
            aborted: r.counter(
                "panoptes_worker_transactions_aborted_total",
                "Transactions aborted, by reason.",
                "reason",
            )?,
            batch_size: r.hist(
                "panoptes_worker_batch_size",
                "Images per inference batch.",
                BATCH_BUCKETS,
            )?,
            stage_latency: r.register(HistogramVec::new(
                HistogramOpts::new(
                    "panoptes_worker_stage_latency_seconds",
                    "Time per frame in each worker stage.",
                )
                .buckets(LATENCY_BUCKETS.to_vec()),
                &["stage"],
            )?)?,
            end_to_end: r.hist(
                "panoptes_worker_end_to_end_latency_seconds",
                "Capture time to publishing the detection record (both on the cluster clock).",
                LATENCY_BUCKETS,
            )?,
            frame_age: r.hist(
                "panoptes_worker_frame_age_seconds",
                "Frame age (capture to dequeue, both on the cluster clock) when a decode thread takes it.",
                LATENCY_BUCKETS,
            )?,
            frames_from_future: r.int_counter(
                "panoptes_worker_frames_from_future_total",
                "Frames whose capture time is over 1 s ahead of this worker's cluster clock: their ingest node is not on the cluster clock (no Redis, or another machine's wall clock); their age reads as 0.",
            )?,
            lag: r.partition_gauge(
                "panoptes_worker_partition_lag",
                "Records behind the end of the partition (its last stable offset), per owned partition.",
            )?,
            in_flight: r.partition_gauge(
                "panoptes_worker_partition_in_flight",
                "Frames consumed and not yet delivered, per owned partition.",
            )?,
            paused: r.partition_gauge(
                "panoptes_worker_partition_paused",
                "1 while the partition is paused for back-pressure.",
            )?,
            info: r.gauge(
                "panoptes_worker_info",
                "Constant 1: the device and model this worker runs.",
                &["device", "model", "version"],
            )?,
            inference_errors: r.int_counter(
                "panoptes_worker_inference_errors_total",
                "Batches whose forward pass failed.",
            )?,
            partitions_owned: r.register(IntGauge::new(
                "panoptes_worker_partitions_owned",
                "Frames partitions this worker consumes now.",
            )?)?,
            handovers: r.counter(
                "panoptes_worker_handovers_total",
                "Graceful partition handovers, by result.",
                "result",
            )?,
            lease_lost: r.int_counter(
                "panoptes_worker_lease_lost_total",
                "Member lease found expired at renewal (its partitions were probably moved).",
            )?,
            partition_restarts: r.int_counter(
                "panoptes_worker_partition_restarts_total",
                "Partition runs that failed (e.g. a transaction that could not commit while a broker was away) and were restarted from the committed offsets, in every mode (coordinator mode: given up and granted again at a higher epoch).",
            )?,
            model_swaps: r.counter(
                "panoptes_worker_model_swaps_total",
                "Hot swaps of the model, by result (ok or why the candidate was refused).",
                "result",
            )?,
            model_info: r.gauge(
                "panoptes_worker_model_info",
                "1 for the model name and version this worker runs now.",
                &["model", "version"],
            )?,
            swap_warmup: r.hist(
                "panoptes_worker_model_swap_warmup_seconds",
                "Warm-up time (forward passes at batch 1, 2, 4, ... max_batch) of a swapped-in model.",
                LATENCY_BUCKETS,
            )?,
            drift: crate::drift::DriftMetrics::register(&r.registry)?,
            shadow: crate::shadow::ShadowMetrics::register(&r.registry)?,
            registry: r.registry,
        };
        m.seed_labels();
        Ok(m)
    }

    /// Creates the series of every known label value at 0, so dashboards and rules see them
    /// before the first event.
    fn seed_labels(&self) {
        for r in ["released", "timeout", "failed"] {
            self.handovers.with_label_values(&[r]);
        }
        for r in ["skipped_stale", "superseded_owner"] {
            self.skipped.with_label_values(&[r]);
        }
        for r in ["undecodable", "bad_headers", "too_large", "bad_dimensions"] {
            self.dead_lettered.with_label_values(&[r]);
        }
        for c in REFUSAL_CHECKS {
            self.frames_refused.with_label_values(&[c]);
        }
        for r in crate::swap::SWAP_RESULTS {
            self.model_swaps.with_label_values(&[r]);
        }
    }

    /// Observes one stage duration in milliseconds.
    pub fn stage(&self, stage: &str, ms: f32) {
        self.stage_latency
            .with_label_values(&[stage])
            .observe(f64::from(ms) / 1000.0);
    }
}
