//! A real OTLP trace receiver for tests and the demo: what a Collector would receive, decoded
//! with the official protobuf definitions (`opentelemetry-proto`), kept in memory.
//!
//! [`OtlpReceiver::start`] listens on two free ports of 127.0.0.1:
//! - OTLP/HTTP (`POST /v1/traces`, `application/x-protobuf`, HTTP/1.1), answering an
//!   `ExportTraceServiceResponse` like a Collector;
//! - OTLP/gRPC (`/opentelemetry.proto.collector.trace.v1.TraceService/Export` over HTTP/2,
//!   gRPC length-prefixed messages, `grpc-status` trailer).
//!
//! Every span received is flattened into a [`ReceivedSpan`] (ids in lowercase hex, kinds by
//! name, attribute values as strings) so tests can assert structure: parents, links, kinds,
//! attributes. [`print_trace`] renders one trace as an indented tree. The servers run on a
//! thread of their own with a small tokio runtime and stop when the receiver is dropped.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;

/// One span as received (flattened for assertions).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// 16 hex digits, or empty for a root.
    pub parent_span_id: String,
    /// Span name.
    pub name: String,
    /// `INTERNAL`, `SERVER`, `CLIENT`, `PRODUCER`, `CONSUMER` (or `UNSPECIFIED`).
    pub kind: &'static str,
    /// Attributes, values rendered as strings.
    pub attributes: BTreeMap<String, String>,
    /// Links: (trace id, span id, attributes).
    pub links: Vec<ReceivedLink>,
    /// Start, Unix ns.
    pub start_ns: u64,
    /// End, Unix ns.
    pub end_ns: u64,
    /// Status code: 0 unset, 1 ok, 2 error.
    pub status_code: i32,
    /// Which transport brought it: `http` or `grpc`.
    pub transport: &'static str,
}

impl ReceivedSpan {
    /// An attribute's value.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A link as received.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedLink {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    /// Attributes, values rendered as strings.
    pub attributes: BTreeMap<String, String>,
}

type Store = Arc<Mutex<Vec<ReceivedSpan>>>;

/// The receiver (see the module doc).
pub struct OtlpReceiver {
    /// OTLP/HTTP base URL (`http://127.0.0.1:<port>`).
    pub http_url: String,
    /// OTLP/gRPC URL (`http://127.0.0.1:<port>`).
    pub grpc_url: String,
    spans: Store,
    requests: Arc<Mutex<u64>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OtlpReceiver {
    /// Starts both listeners on free ports.
    pub fn start() -> Result<Self> {
        let http = std::net::TcpListener::bind("127.0.0.1:0").context("binding OTLP/HTTP")?;
        let grpc = std::net::TcpListener::bind("127.0.0.1:0").context("binding OTLP/gRPC")?;
        http.set_nonblocking(true)?;
        grpc.set_nonblocking(true)?;
        let (http_addr, grpc_addr) = (http.local_addr()?, grpc.local_addr()?);
        let spans: Store = Arc::default();
        let requests = Arc::new(Mutex::new(0u64));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (s, r) = (spans.clone(), requests.clone());
        let thread = std::thread::Builder::new()
            .name("otlp-receiver".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("receiver runtime");
                rt.block_on(serve(http, grpc, s, r, stop_rx));
            })?;
        Ok(Self {
            http_url: format!("http://{http_addr}"),
            grpc_url: format!("http://{grpc_addr}"),
            spans,
            requests,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Export requests answered so far (both transports).
    pub fn requests(&self) -> u64 {
        *self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Renders the spans of `trace` (one trace id) as a tree: name, kind, service, duration,
/// the messaging attributes, and links.
pub fn print_trace(trace: &[ReceivedSpan]) -> String {
    let mut children: BTreeMap<&str, Vec<&ReceivedSpan>> = BTreeMap::new();
    let ids: std::collections::BTreeSet<&str> = trace.iter().map(|s| s.span_id.as_str()).collect();
    let mut roots = Vec::new();
    for s in trace {
        if s.parent_span_id.is_empty() || !ids.contains(s.parent_span_id.as_str()) {
            roots.push(s);
        } else {
            children.entry(&s.parent_span_id).or_default().push(s);
        }
    }
    let mut out = String::new();
    let mut stack: Vec<(&ReceivedSpan, usize)> = roots.into_iter().rev().map(|s| (s, 0)).collect();
    while let Some((s, depth)) = stack.pop() {
        let ms = s.end_ns.saturating_sub(s.start_ns) as f64 / 1e6;
        let keys = [
            "messaging.destination.name",
            "messaging.destination.partition.id",
            "messaging.kafka.offset",
            "panoptes.camera.id",
            "panoptes.frame.seq",
            "panoptes.batch.size",
            "panoptes.device",
        ];
        let attrs: Vec<String> = keys
            .iter()
            .filter_map(|k| s.attr(k).map(|v| format!("{k}={v}")))
            .collect();
        out.push_str(&format!(
            "{:indent$}{} [{}] {} {ms:.2} ms {}\n",
            "",
            s.name,
            s.kind,
            s.service,
            attrs.join(" "),
            indent = depth * 2
        ));
        for l in &s.links {
            out.push_str(&format!(
                "{:indent$}  ↳ link {}/{}\n",
                "",
                l.trace_id,
                l.span_id,
                indent = depth * 2
            ));
        }
        let mut kids = children.remove(s.span_id.as_str()).unwrap_or_default();
        kids.sort_by_key(|k| std::cmp::Reverse(k.start_ns));
        stack.extend(kids.into_iter().map(|k| (k, depth + 1)));
    }
    out
}

async fn serve(
    http: std::net::TcpListener,
    grpc: std::net::TcpListener,
    spans: Store,
    requests: Arc<Mutex<u64>>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let (Ok(http), Ok(grpc)) = (
        tokio::net::TcpListener::from_std(http),
        tokio::net::TcpListener::from_std(grpc),
    ) else {
        return;
    };
    loop {
        tokio::select! {
            _ = &mut stop => return,
            Ok((stream, _)) = http.accept() => {
                let (s, r) = (spans.clone(), requests.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle_http(req, s.clone(), r.clone()));
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, svc).await;
                });
            }
            Ok((stream, _)) = grpc.accept() => {
                let (s, r) = (spans.clone(), requests.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| handle_grpc(req, s.clone(), r.clone()));
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(io, svc)
                        .await;
                });
            }
        }
    }
}

type HttpBody = Full<Bytes>;

async fn handle_http(
    req: Request<Incoming>,
    spans: Store,
    requests: Arc<Mutex<u64>>,
) -> Result<Response<HttpBody>, Infallible> {
    let reply = |status: StatusCode, body: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/x-protobuf"),
        );
        Ok(r)
    };
    if req.method() != hyper::Method::POST || req.uri().path() != "/v1/traces" {
        return reply(StatusCode::NOT_FOUND, Vec::new());
    }
    let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return reply(StatusCode::BAD_REQUEST, Vec::new());
    };
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            store(&spans, &requests, request, "http");
            reply(
                StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        Err(_) => reply(StatusCode::BAD_REQUEST, Vec::new()),
    }
}

type GrpcBody = StreamBody<futures_util_stream::Frames>;

async fn handle_grpc(
    req: Request<Incoming>,
    spans: Store,
    requests: Arc<Mutex<u64>>,
) -> Result<Response<GrpcBody>, Infallible> {
    let path_ok = req.uri().path() == "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    let body = req.into_body().collect().await.map(|b| b.to_bytes());
    let (status, message, reply) = match (path_ok, body) {
        (false, _) => (12, "unimplemented", Vec::new()),
        (true, Err(_)) => (13, "body", Vec::new()),
        (true, Ok(body)) => {
            match grpc_message(&body).and_then(|m| ExportTraceServiceRequest::decode(m).ok()) {
                Some(request) => {
                    store(&spans, &requests, request, "grpc");
                    let msg = ExportTraceServiceResponse::default().encode_to_vec();
                    let mut framed = vec![0u8];
                    framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
                    framed.extend_from_slice(&msg);
                    (0, "", framed)
                }
                None => (3, "bad message", Vec::new()),
            }
        }
    };
    let mut trailers = hyper::HeaderMap::new();
    trailers.insert("grpc-status", status.to_string().parse().expect("header"));
    if !message.is_empty() {
        trailers.insert("grpc-message", message.parse().expect("header"));
    }
    let mut frames = Vec::new();
    if !reply.is_empty() {
        frames.push(Frame::data(Bytes::from(reply)));
    }
    frames.push(Frame::trailers(trailers));
    let mut r = Response::new(StreamBody::new(futures_util_stream::Frames::new(frames)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/grpc"),
    );
    Ok(r)
}

/// The first gRPC message of a request body (1 byte compressed flag, 4 bytes length).
fn grpc_message(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    if flag != 0 || rest.len() < 4 {
        return None; // compression was not negotiated
    }
    let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
    rest.get(4..4 + len)
}

/// A stream of ready frames, without pulling in `futures` for one `stream::iter`.
mod futures_util_stream {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use hyper::body::Frame;

    /// Frames handed out one by one.
    pub struct Frames(VecDeque<Frame<Bytes>>);

    impl Frames {
        pub fn new(frames: Vec<Frame<Bytes>>) -> Self {
            Self(frames.into())
        }
    }

    impl futures::Stream for Frames {
        type Item = Result<Frame<Bytes>, Infallible>;

        fn poll_next(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }
}

fn store(
    spans: &Store,
    requests: &Mutex<u64>,
    request: ExportTraceServiceRequest,
    transport: &'static str,
) {
    let mut out = Vec::new();
    for rs in request.resource_spans {
        let service = rs
            .resource
            .as_ref()
            .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
            .map(|kv| value_string(kv.value.as_ref()))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    name: s.name,
                    kind: kind_name(s.kind),
                    attributes: attributes(&s.attributes),
                    links: s
                        .links
                        .iter()
                        .map(|l| ReceivedLink {
                            trace_id: hex(&l.trace_id),
                            span_id: hex(&l.span_id),
                            attributes: attributes(&l.attributes),
                        })
                        .collect(),
                    start_ns: s.start_time_unix_nano,
                    end_ns: s.end_time_unix_nano,
                    status_code: s.status.map_or(0, |st| st.code),
                    transport,
                });
            }
        }
    }
    spans.lock().unwrap_or_else(|e| e.into_inner()).extend(out);
    *requests.lock().unwrap_or_else(|e| e.into_inner()) += 1;
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "INTERNAL",
        2 => "SERVER",
        3 => "CLIENT",
        4 => "PRODUCER",
        5 => "CONSUMER",
        _ => "UNSPECIFIED",
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), value_string(kv.value.as_ref())))
        .collect()
}

fn value_string(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

/// Waits up to `timeout` for `pred` to hold over the spans received.
pub fn wait_for_spans(
    receiver: &OtlpReceiver,
    timeout: Duration,
    mut pred: impl FnMut(&[ReceivedSpan]) -> bool,
) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if pred(&receiver.spans()) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
