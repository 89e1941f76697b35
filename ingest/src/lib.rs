//! Panoptes ingest node: RTSP cameras in, JPEG frames on Kafka out.
//!
//! - [`config`]: the node's typed configuration and the resolved [`config::CameraSpec`];
//! - [`pipeline`]: one camera's GStreamer pipeline (rtspsrc → decode → rate → scale → JPEG);
//! - [`decode_skip`]: which compressed frames may skip the decoder (pure);
//! - [`camera`]: one camera's thread and state machine (connect, stream, back off, reconnect);
//! - [`error`]: why a camera is not streaming ([`error::CameraError`]), shared by the two above;
//! - [`publisher`]: the idempotent Kafka producer with its bounded queue;
//! - [`node`]: the set of running cameras, changeable at run time;
//! - [`coordinated`]: coordinator mode, where the node's cameras come from the coordinator;
//! - [`metrics`], [`api`]: what the node tells operators.
//!
//! [`run`] ties them together; `main.rs` hands it to `panoptes_runtime::node::main` (command
//! line, configuration, logging, shutdown signals).

pub mod api;
pub mod camera;
pub mod capture;
pub mod config;
pub mod coordinated;
pub mod decode_skip;
pub mod error;
pub mod metrics;
pub mod node;
pub mod pipeline;
pub mod publisher;
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

use gstreamer as gst;
use panoptes_coordinator_client::RedisLink;
use panoptes_coordinator_client::clock::ClockSync;
use panoptes_runtime::health::{self, Readiness};
use panoptes_runtime::kafka_link::KafkaLink;
use tokio_util::sync::CancellationToken;

use crate::camera::{CameraContext, CameraStatus};
use crate::config::{ConfigError, IngestConfig};
use crate::coordinated::Coordinator;
use crate::metrics::IngestMetrics;
use crate::node::IngestNode;
use crate::publisher::FramePublisher;

/// Why the node could not start or stop cleanly. All are fatal to the process.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// GStreamer is missing or broken.
    #[error("GStreamer initialisation failed: {0}")]
    Gstreamer(String),
    /// The Kafka producer could not be created (bad properties).
    #[error("Kafka producer: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The `[kafka]` security settings are unusable (missing CA, password, ...).
    #[error("{0}")]
    KafkaConfig(#[from] panoptes_runtime::config::kafka::KafkaConfigError),
    /// Metrics registration failed (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP port could not be bound, or a camera thread could not start.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// `[tracing]` is unusable (bad endpoint, sampling ratio).
    #[error("tracing: {0}")]
    Tracing(#[from] panoptes_runtime::trace::TraceError),
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// Coordinator mode could not start (bad Redis URL or member id).
    #[error("coordinator: {0}")]
    Coordinator(#[from] panoptes_coordinator_client::CoordError),
}

/// How long shutdown waits for the producer to deliver what it holds.
const FLUSH_DEADLINE: Duration = Duration::from_secs(10);

/// Runs the node until `cancel` fires, then stops cameras, flushes the producer and returns.
///
/// In coordinator mode (`coordinator.enabled`) the cameras come from the coordinator, and
/// `cancel` starts a drain first (see [`coordinated`]): the cameras keep running while the
/// coordinator moves them, up to `coordinator.drain_timeout`.
pub async fn run(config: IngestConfig, cancel: CancellationToken) -> Result<(), IngestError> {
    config.validate()?;
    gst::init().map_err(|e| IngestError::Gstreamer(e.to_string()))?;
    config.kafka.client.validate()?;
    let metrics = IngestMetrics::new()?;
    // Before any camera starts (its pipeline's stage probes look for the tracer); flushed
    // when `run` returns.
    let _traces = panoptes_runtime::trace::install(
        &config.tracing,
        "panoptes-ingest",
        &config.node_id,
        &metrics.registry,
        "ingest",
    )?;
    let readiness = Readiness::default();
    readiness.set("kafka", false, "not checked yet");
    let link = KafkaLink::new(&metrics.registry, "ingest", readiness.clone())?;
    // Coordinator mode: capture times on the cluster clock (Redis's); static mode: the wall clock.
    let _clock = if config.coordinator.enabled {
        let redis = RedisLink::open(&config.coordinator.redis)?;
        Some(ClockSync::start(redis, &metrics.registry, "ingest")?)
    } else {
        None
    };
    let publisher = Arc::new(FramePublisher::new(
        &config.kafka,
        metrics.clone(),
        link.clone(),
    )?);

    // Intake (cameras, broker probe) stops on `cancel` in static mode, after the drain in
    // coordinator mode.
    let intake = CancellationToken::new();
    let ctx = Arc::new(CameraContext {
        publisher: publisher.clone(),
        metrics: metrics.clone(),
    });
    let node = Arc::new(IngestNode::new(ctx, intake.child_token()));
    start_static_cameras(&config, &node)?;
    let http = Http::serve(&config, &metrics, &readiness, &node).await?;
    let probe = tokio::spawn(probe_broker(
        publisher.clone(),
        readiness.clone(),
        link,
        metrics.clone(),
        intake.clone(),
    ));

    let coordinator = if config.coordinator.enabled {
        let started = Coordinator::start(
            &config,
            format!("http://{}", http.addr),
            node.clone(),
            publisher.clone(),
            metrics.clone(),
            readiness.clone(),
            &cancel,
        )
        .await;
        match started {
            Ok(c) => c,
            Err(e) => {
                intake.cancel();
                http.cancel.cancel();
                return Err(e.into());
            }
        }
    } else {
        None
    };
    match &coordinator {
        Some(c) => c.drive(cancel.clone()).await,
        None => cancel.cancelled().await,
    }

    intake.cancel();
    let stopped = stop_cameras(&node).await;
    flush_producer(&publisher).await;
    // Last: the membership ends only after the frames were delivered, so the next owner of
    // a camera never publishes before this node's last frames of it.
    if let Some(c) = &coordinator {
        c.finish(stopped).await;
    }
    let _ = probe.await;
    http.stop().await;
    if let Some(other) = coordinator.as_ref().and_then(|c| c.replaced()) {
        return Err(panoptes_coordinator_client::CoordError::Invalid(format!(
            "member id {:?} was taken over by another process (session {other})",
            config.node_id
        ))
        .into());
    }
    tracing::info!("ingest node stopped");
    Ok(())
}

/// Static mode: starts the file's cameras (bad entries are logged and skipped). In
/// coordinator mode the coordinator's grants start them later.
fn start_static_cameras(config: &IngestConfig, node: &IngestNode) -> Result<(), IngestError> {
    if config.coordinator.enabled {
        tracing::info!(node = %config.node_id, region = %config.region, "ingest node starting in coordinator mode");
        return Ok(());
    }
    let (specs, errors) = config.camera_specs();
    for e in &errors {
        tracing::error!(error = %e, "camera entry ignored");
    }
    tracing::info!(node = %config.node_id, region = %config.region, cameras = specs.len(), "ingest node starting");
    node.apply(specs)?;
    Ok(())
}

/// The node's HTTP server: health, metrics and `/cameras`.
struct Http {
    addr: std::net::SocketAddr,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Http {
    /// Binds `http.listen` and announces the bound address (`HTTP=…` on stdout).
    async fn serve(
        config: &IngestConfig,
        metrics: &IngestMetrics,
        readiness: &Readiness,
        node: &Arc<IngestNode>,
    ) -> Result<Self, IngestError> {
        let cancel = CancellationToken::new();
        let router = health::router(metrics.registry.clone(), readiness.clone())
            .merge(api::router(node.clone()));
        let (addr, task) = health::serve(config.http.listen, router, cancel.clone()).await?;
        tracing::info!(%addr, "HTTP listening");
        println!("HTTP=http://{addr}");
        Ok(Self { addr, cancel, task })
    }

    /// Stops the server and waits for it.
    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// Stops every camera (blocking GStreamer teardown, off the runtime threads) and returns
/// what each had reached.
async fn stop_cameras(node: &Arc<IngestNode>) -> Vec<CameraStatus> {
    tracing::info!("stopping cameras");
    let n = node.clone();
    tokio::task::spawn_blocking(move || n.shutdown())
        .await
        .unwrap_or_default()
}

/// Waits up to [`FLUSH_DEADLINE`] for the producer to deliver what it holds.
async fn flush_producer(publisher: &Arc<FramePublisher>) {
    tracing::info!(in_flight = publisher.in_flight(), "flushing producer");
    let p = publisher.clone();
    let flushed = tokio::task::spawn_blocking(move || p.flush(FLUSH_DEADLINE)).await;
    match flushed {
        Ok(Ok(())) => tracing::info!("producer flushed"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, in_flight = publisher.in_flight(), "producer not fully flushed")
        }
        Err(e) => tracing::warn!(error = %e, "flush task failed"),
    }
}

/// Readiness: the broker answers metadata requests for the frames topic.
async fn probe_broker(
    publisher: Arc<FramePublisher>,
    readiness: Readiness,
    link: KafkaLink,
    metrics: IngestMetrics,
    cancel: CancellationToken,
) {
    // One failed probe can be a hiccup on a busy machine; two in a row (about 2-4 s) mark
    // the broker unreachable, which in coordinator mode moves this node's cameras away.
    let mut failures = 0u32;
    loop {
        let p = publisher.clone();
        let result = tokio::task::spawn_blocking(move || {
            // A producer that hit a fatal error is replaced before it is probed.
            if let Err(e) = p.replace_if_fatal() {
                tracing::error!(error = %e, "replacing the producer after a fatal error failed");
            }
            p.check_broker(Duration::from_secs(1))
        })
        .await;
        let error = match result {
            Ok(Ok(partitions)) => {
                failures = 0;
                readiness.set("kafka", true, format!("{partitions} partitions"));
                link.connected();
                None
            }
            Ok(Err(e)) => Some(e.to_string()),
            Err(e) => Some(e.to_string()),
        };
        if let Some(e) = error {
            failures += 1;
            if failures >= 2 {
                readiness.set("kafka", false, e);
            }
        }
        metrics.producer_queue.set(i64::from(publisher.in_flight()));
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
