//! OpenTelemetry traces of every Panoptes process, exported over OTLP (gRPC or HTTP).
//!
//! Contract:
//! - [`install`] is called once per process by the node's `run` with its `[tracing]`
//!   section ([`TracingConfig`]). Without an `endpoint` it installs nothing and
//!   [`tracer`] stays `None`: instrumented code then builds no span at all, so a node
//!   without a collector pays one branch per frame.
//! - Spans follow the OpenTelemetry messaging conventions (attribute names in [`attr`]):
//!   ingest ends a PRODUCER span per frame and writes its context into the frame's
//!   `traceparent` header; a worker makes, per frame, a CONSUMER `receive` span (child of
//!   that context), per batch a CONSUMER `process` span with a **link** to every frame's
//!   context and an INTERNAL `inference` span, and per record a PRODUCER `send` span whose
//!   context travels in the detection's `traceparent` (header and field).
//! - Sampling ([`sampler`]): parent-based with a trace-id ratio at the root, plus the
//!   always-keep override ([`KEPT_BECAUSE`]) for dead-lettered, skipped and slow frames.
//! - Export ([`export`]): a bounded queue and one export thread per process; a full queue
//!   drops spans and counts them, nothing on the data path ever waits for the collector.
//! - The [`Tracing`] guard flushes and shuts the exporter down when dropped (end of `run`).
//!
//! The tracer is process-wide (like the log subscriber) because the spans are made on
//! many threads (camera threads, consumer, decode pool, inference, publishers) that share
//! nothing else; passing it through every stage's constructor would touch them all for one
//! optional facility.

pub mod config;
pub mod export;
pub mod logs;
pub mod sampler;

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState, TracerProvider};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};
use prometheus::Registry;

pub use config::{OtlpProtocol, TracingConfig};
pub use export::ExportMetrics;
/// The OpenTelemetry API and SDK this crate builds on, for the instrumented crates (one
/// version everywhere, no direct dependency to keep in step).
pub use opentelemetry as otel;
pub use opentelemetry_sdk as otel_sdk;
pub use sampler::{KEPT_BECAUSE, KeepSampler};

/// Why tracing could not be installed. Fatal at start (a configured but unusable exporter
/// is an operator error); never raised on the data path.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The `[tracing]` section is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigInvalid),
    /// The OTLP exporter or its thread could not be created.
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    /// The trace metrics could not be registered.
    #[error("trace metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Tracing was already installed in this process.
    #[error("tracing is already installed in this process")]
    AlreadyInstalled,
}

/// Attribute names (OpenTelemetry semantic conventions, messaging and service; Panoptes'
/// own under `panoptes.`).
pub mod attr {
    /// `kafka`.
    pub const MESSAGING_SYSTEM: &str = "messaging.system";
    /// `send`, `receive`, `process`.
    pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
    /// The client operation (`send`, `poll`, `process`).
    pub const MESSAGING_OPERATION_NAME: &str = "messaging.operation.name";
    /// Topic.
    pub const MESSAGING_DESTINATION: &str = "messaging.destination.name";
    /// Partition (string, per the conventions).
    pub const MESSAGING_PARTITION: &str = "messaging.destination.partition.id";
    /// Offset.
    pub const MESSAGING_OFFSET: &str = "messaging.kafka.offset";
    /// Record key.
    pub const MESSAGING_KEY: &str = "messaging.kafka.message.key";
    /// Consumer group.
    pub const MESSAGING_GROUP: &str = "messaging.consumer.group.name";
    /// Messages in a batch operation.
    pub const MESSAGING_BATCH_COUNT: &str = "messaging.batch.message_count";
    /// Payload size in bytes.
    pub const MESSAGING_BODY_SIZE: &str = "messaging.message.body.size";
    /// Camera id.
    pub const CAMERA: &str = "panoptes.camera.id";
    /// Frame sequence number.
    pub const SEQ: &str = "panoptes.frame.seq";
    /// Record status (`ok`, `skipped_stale`, ..., `dead_letter`).
    pub const STATUS: &str = "panoptes.frame.status";
    /// Frames in an inference batch.
    pub const BATCH_SIZE: &str = "panoptes.batch.size";
    /// Inference device (`cpu`, `cuda:0`).
    pub const DEVICE: &str = "panoptes.device";
    /// Model name.
    pub const MODEL_NAME: &str = "panoptes.model.name";
    /// Model version.
    pub const MODEL_VERSION: &str = "panoptes.model.version";
    /// End-to-end latency of a frame, ms.
    pub const END_TO_END_MS: &str = "panoptes.frame.end_to_end_ms";
}

/// What instrumented code needs besides the tracer.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Keep dead-lettered and skipped frames.
    pub keep_anomalies: bool,
    /// Keep frames slower than this end to end (`None`: rule off).
    pub slow_threshold: Option<Duration>,
}

struct Installed {
    tracer: SdkTracer,
    settings: Settings,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// The process's tracer, when export is configured.
pub fn tracer() -> Option<&'static SdkTracer> {
    INSTALLED.get().map(|i| &i.tracer)
}

/// The always-keep settings (meaningful only when [`tracer`] is `Some`).
pub fn settings() -> Option<&'static Settings> {
    INSTALLED.get().map(|i| &i.settings)
}

/// Keeps the provider alive; flushes and shuts the exporter down when dropped.
pub struct Tracing {
    provider: Option<SdkTracerProvider>,
}

impl Tracing {
    /// Exports what is queued now (blocking, bounded). For tests and shutdown.
    pub fn flush(&self) {
        if let Some(p) = &self.provider {
            let _ = p.force_flush();
        }
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown_with_timeout(Duration::from_secs(5))
        {
            tracing::warn!(error = %e, "trace exporter shutdown");
        }
    }
}

/// Installs tracing for this process (see the module doc): `service` is the binary's name
/// (`service.name`), `instance` the node id (`service.instance.id`), `component` the metric
/// prefix part (`ingest`, `worker`, `coordinator`). Off (`Ok` with nothing installed) when
/// `cfg.endpoint` is unset. Call off the async runtime's worker threads or from `async` code
/// before the data path starts: it spawns the export thread and waits for it to be ready.
pub fn install(
    cfg: &TracingConfig,
    service: &'static str,
    instance: &str,
    registry: &Registry,
    component: &str,
) -> Result<Tracing, TraceError> {
    cfg.validate()?;
    if !cfg.enabled() {
        return Ok(Tracing { provider: None });
    }
    if INSTALLED.get().is_some() {
        return Err(TraceError::AlreadyInstalled);
    }
    let metrics = ExportMetrics::new(registry, component)?;
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("service.instance.id", instance.to_owned()))
        .build();
    let processor = export::QueueProcessor::start(cfg, resource.clone(), metrics)?;
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(KeepSampler::new(cfg.sample_ratio))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("panoptes");
    let settings = Settings {
        keep_anomalies: cfg.keep_anomalies,
        slow_threshold: (!cfg.slow_threshold.is_zero()).then_some(cfg.slow_threshold),
    };
    INSTALLED
        .set(Installed { tracer, settings })
        .map_err(|_| TraceError::AlreadyInstalled)?;
    tracing::info!(
        endpoint = cfg.endpoint.as_deref().unwrap_or_default(),
        protocol = ?cfg.protocol,
        sample_ratio = cfg.sample_ratio,
        "exporting traces over OTLP"
    );
    Ok(Tracing {
        provider: Some(provider),
    })
}

/// The span context a W3C `traceparent` names (remote), if it is well-formed.
pub fn remote_context(traceparent: &str) -> Option<SpanContext> {
    let (trace_id, span_id, flags) = parse_traceparent(traceparent)?;
    Some(SpanContext::new(
        TraceId::from_bytes(trace_id),
        SpanId::from_bytes(span_id),
        TraceFlags::new(flags),
        true,
        TraceState::default(),
    ))
}

/// The W3C `traceparent` (version 00) of `cx`.
pub fn traceparent(cx: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        cx.trace_id(),
        cx.span_id(),
        cx.trace_flags().to_u8()
    )
}

/// (trace id, span id, flags) of a version-00 `traceparent`; `None` when malformed or
/// all-zero. (The strict validator with reasons is `panoptes_schemas::parse_traceparent`;
/// this crate does not depend on the schemas.)
fn parse_traceparent(s: &str) -> Option<([u8; 16], [u8; 8], u8)> {
    let mut parts = s.split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    let hex = |t: &str, out: &mut [u8]| {
        t.len() == out.len() * 2
            && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && (0..out.len()).all(|i| {
                u8::from_str_radix(&t[2 * i..2 * i + 2], 16)
                    .map(|v| out[i] = v)
                    .is_ok()
            })
    };
    let (mut t, mut sp, mut f) = ([0u8; 16], [0u8; 8], [0u8; 1]);
    if !(hex(trace, &mut t) && hex(span, &mut sp) && hex(flags, &mut f)) {
        return None;
    }
    if t == [0; 16] || sp == [0; 8] {
        return None;
    }
    Some((t, sp, f[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let cx = remote_context(tp).unwrap();
        assert!(cx.is_sampled());
        assert!(cx.is_remote());
        assert_eq!(traceparent(&cx), tp);
        let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        assert!(!remote_context(unsampled).unwrap().is_sampled());
    }

    #[test]
    fn malformed_traceparents_give_no_context() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
        ] {
            assert!(remote_context(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn disabled_config_installs_nothing() {
        let registry = Registry::new();
        let t = install(&TracingConfig::default(), "test", "t-0", &registry, "test").unwrap();
        assert!(t.provider.is_none());
        assert!(tracer().is_none());
        assert!(registry.gather().is_empty());
    }
}
