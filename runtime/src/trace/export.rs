//! The span processor of every Panoptes process: a bounded queue in front of one export
//! thread, so that exporting can never block or slow the data path.
//!
//! `on_end` (called on the thread that ends a span: a camera thread, a worker stage) does a
//! `try_send` into a `sync_channel` of `queue_size` spans and returns: a full queue drops the
//! span and counts it (`panoptes_<component>_trace_spans_dropped_total`). The export thread
//! owns the OTLP exporter and a current-thread tokio runtime of its own (tonic and the HTTP
//! client need one; the node's runtime is never borrowed), collects up to `max_export_batch`
//! spans or `export_interval`, and sends them with `export_timeout` as deadline. A failed
//! export loses that batch (counted in `panoptes_<component>_trace_export_failed_spans_total`):
//! retrying would let a dead collector grow memory.
//!
//! The SDK's own `BatchSpanProcessor` does the same job but only logs its drop count at
//! shutdown; operators need it as a metric while the process runs.

use std::fmt;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use prometheus::{IntCounter, Registry};

use super::TraceError;
use super::config::{OtlpProtocol, TracingConfig};

/// The processor's counters, registered in the process's registry.
#[derive(Clone)]
pub struct ExportMetrics {
    /// Spans dropped because the queue was full.
    pub dropped: IntCounter,
    /// Spans handed to the collector successfully.
    pub exported: IntCounter,
    /// Spans lost in failed export requests.
    pub failed: IntCounter,
}

impl ExportMetrics {
    /// Registers `panoptes_<component>_trace_*` in `registry`.
    pub fn new(registry: &Registry, component: &str) -> Result<Self, prometheus::Error> {
        let name = |n: &str| format!("panoptes_{component}_trace_{n}");
        Ok(Self {
            dropped: crate::metrics::counter(
                registry,
                &name("spans_dropped_total"),
                "Finished spans dropped because the export queue was full.",
            )?,
            exported: crate::metrics::counter(
                registry,
                &name("spans_exported_total"),
                "Spans accepted by the OTLP collector.",
            )?,
            failed: crate::metrics::counter(
                registry,
                &name("export_failed_spans_total"),
                "Spans lost because their OTLP export request failed or timed out.",
            )?,
        })
    }
}

/// What the export thread is told.
enum Msg {
    Span(Box<SpanData>),
    /// Export what is queued, then answer.
    Flush(SyncSender<()>),
    /// Export what is queued, shut the exporter down, answer and end.
    Shutdown(SyncSender<()>),
}

/// The bounded processor (see the module doc).
pub struct QueueProcessor {
    tx: SyncSender<Msg>,
    metrics: ExportMetrics,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl fmt::Debug for QueueProcessor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueProcessor").finish_non_exhaustive()
    }
}

impl QueueProcessor {
    /// Starts the export thread with an OTLP exporter for `cfg` (built on that thread,
    /// inside its runtime). Fails when the exporter cannot be built (a bad endpoint).
    pub fn start(
        cfg: &TracingConfig,
        resource: Resource,
        metrics: ExportMetrics,
    ) -> Result<Self, TraceError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.queue_size);
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
        let cfg = cfg.clone();
        let m = metrics.clone();
        let thread = std::thread::Builder::new()
            .name("otlp-export".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(TraceError::Exporter(e.to_string())));
                        return;
                    }
                };
                let exporter = rt.block_on(async { build_exporter(&cfg) });
                match exporter {
                    Ok(mut exporter) => {
                        exporter.set_resource(&resource);
                        let _ = ready_tx.send(Ok(()));
                        export_loop(&rt, exporter, &rx, &cfg, &m);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            })
            .map_err(|e| TraceError::Exporter(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self {
                tx,
                metrics,
                thread: std::sync::Mutex::new(Some(thread)),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TraceError::Exporter("the export thread died".into())),
        }
    }

    /// Sends `msg` and waits (up to `timeout`) for its answer.
    fn ask(&self, make: impl FnOnce(SyncSender<()>) -> Msg, timeout: Duration) -> OTelSdkResult {
        let (ack_tx, ack_rx) = std::sync::mpsc::sync_channel(1);
        // A full queue must not make a flush wait forever: give up after `timeout`.
        let deadline = Instant::now() + timeout;
        let mut msg = make(ack_tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => return Err(OTelSdkError::Timeout(timeout)),
                Err(TrySendError::Disconnected(_)) => return Err(OTelSdkError::AlreadyShutdown),
            }
        }
        ack_rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.tx.try_send(Msg::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.metrics.dropped.inc();
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.ask(Msg::Flush, Duration::from_secs(10))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let result = self.ask(Msg::Shutdown, timeout);
        if result.is_ok()
            && let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take()
        {
            let _ = t.join();
        }
        result
    }
}

/// The OTLP exporter for `cfg` (must run inside a tokio runtime: tonic's channel spawns on it).
fn build_exporter(cfg: &TracingConfig) -> Result<opentelemetry_otlp::SpanExporter, TraceError> {
    use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
    let url = cfg
        .export_url()
        .ok_or_else(|| TraceError::Exporter("no endpoint".into()))?;
    let built = match cfg.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(url)
            .with_timeout(cfg.export_timeout)
            .build(),
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(reqwest::Client::new())
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(cfg.export_timeout)
            .build(),
    };
    built.map_err(|e| TraceError::Exporter(e.to_string()))
}

/// The export thread: batches by size and age, exports, answers flushes; ends on shutdown
/// or when every sender is gone.
fn export_loop(
    rt: &tokio::runtime::Runtime,
    mut exporter: opentelemetry_otlp::SpanExporter,
    rx: &Receiver<Msg>,
    cfg: &TracingConfig,
    metrics: &ExportMetrics,
) {
    let mut batch: Vec<SpanData> = Vec::with_capacity(cfg.max_export_batch);
    let mut oldest: Option<Instant> = None;
    let send = |batch: &mut Vec<SpanData>| {
        if batch.is_empty() {
            return;
        }
        let spans = std::mem::take(batch);
        let n = spans.len() as u64;
        let result = rt.block_on(async {
            tokio::time::timeout(cfg.export_timeout, exporter.export(spans)).await
        });
        match result {
            Ok(Ok(())) => metrics.exported.inc_by(n),
            Ok(Err(e)) => {
                metrics.failed.inc_by(n);
                tracing::debug!(error = %e, spans = n, "span export failed");
            }
            Err(_) => {
                metrics.failed.inc_by(n);
                tracing::debug!(spans = n, "span export timed out");
            }
        }
    };
    loop {
        let wait = oldest.map_or(cfg.export_interval, |t| {
            (t + cfg.export_interval).saturating_duration_since(Instant::now())
        });
        match rx.recv_timeout(wait) {
            Ok(Msg::Span(span)) => {
                oldest.get_or_insert_with(Instant::now);
                batch.push(*span);
                if batch.len() >= cfg.max_export_batch {
                    send(&mut batch);
                    oldest = None;
                }
            }
            Ok(Msg::Flush(ack)) => {
                drain_spans(rx, &mut batch, cfg.max_export_batch, &send);
                send(&mut batch);
                oldest = None;
                let _ = ack.send(());
            }
            Ok(Msg::Shutdown(ack)) => {
                drain_spans(rx, &mut batch, cfg.max_export_batch, &send);
                send(&mut batch);
                let _ = exporter.shutdown();
                let _ = ack.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                send(&mut batch);
                oldest = None;
            }
            Err(RecvTimeoutError::Disconnected) => {
                send(&mut batch);
                return;
            }
        }
    }
}

/// Takes the spans already queued (a flush exports what was ended before it).
fn drain_spans(
    rx: &Receiver<Msg>,
    batch: &mut Vec<SpanData>,
    max: usize,
    send: &impl Fn(&mut Vec<SpanData>),
) {
    while let Ok(msg) = rx.try_recv() {
        match msg {
            Msg::Span(span) => {
                batch.push(*span);
                if batch.len() >= max {
                    send(batch);
                }
            }
            // Flush requests behind this one are answered by this one's export.
            Msg::Flush(ack) | Msg::Shutdown(ack) => {
                let _ = ack.send(());
            }
        }
    }
}
