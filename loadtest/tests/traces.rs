//! Traces across processes, received by a real OTLP receiver (`panoptes_testkit::otlp`,
//! decoding the official protobuf definitions): camera simulator → ingest (exporting over
//! OTLP/gRPC) → development broker → worker (exporting over OTLP/HTTP) → detections.
//!
//! Asserts, for one frame, the structure the design fixes: ingest's PRODUCER `send` span is
//! the root of the frame's trace and its context is the frame's `traceparent`; the worker's
//! CONSUMER `receive` span is its child (same partition and offset); the worker's PRODUCER
//! `send` span for the detection is the receive span's child, its context is the detection
//! record's `traceparent` (field and header); the batch's CONSUMER `process` span (its own
//! trace) **links** to the frame's creation context, and its INTERNAL `inference` child
//! carries batch size, device and model. Then the sampling rules: frames written straight
//! into the topic with an *unsampled* `traceparent` leave no span when they are inferred,
//! but are kept when dead-lettered or skipped as stale (`keep_anomalies`). Logs: the worker
//! writes JSON lines (`PANOPTES_LOG_FORMAT=json`), and its line about the dead-lettered frame
//! carries, as top-level keys, the trace id the receiver got and the frame's span id.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use panoptes_runtime::trace::{OtlpProtocol, TracingConfig};
use panoptes_schemas::format_traceparent;
use panoptes_testkit::kafka::{FrameProducer, all_records, frame_headers, test_jpeg};
use panoptes_testkit::otlp::{OtlpReceiver, ReceivedSpan, print_trace, wait_for_spans};
use panoptes_testkit::{CamSim, DevBroker, ingest, unique_name};
use panoptes_testkit_stack::{stack, worker};

/// Exporting to `url` over `protocol`, every new trace sampled, exported quickly.
fn tracing_to(url: &str, protocol: OtlpProtocol, sample_ratio: f64) -> TracingConfig {
    TracingConfig {
        endpoint: Some(url.to_owned()),
        protocol,
        sample_ratio,
        export_interval: Duration::from_millis(200),
        ..TracingConfig::default()
    }
}

fn one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    pred: impl Fn(&ReceivedSpan) -> bool,
) -> Result<&'a ReceivedSpan> {
    let found: Vec<_> = spans.iter().filter(|s| pred(s)).collect();
    match found.as_slice() {
        [s] => Ok(s),
        _ => bail!("expected one {what}, found {}: {found:#?}", found.len()),
    }
}

#[test]
fn one_frame_trace_crosses_ingest_kafka_worker_and_detections() -> Result<()> {
    let receiver = OtlpReceiver::start()?;
    let broker = DevBroker::start(1)?;
    let t = broker.create_topics(2)?;
    let sim = CamSim::with_cameras(&["id=cam0,fps=5,width=320,height=240"])?;
    let models = stack::generate_models()?;

    let mut ic = ingest::config(&unique_name("ingest"), &broker.bootstrap, &t.frames);
    ic.cameras.push(ingest::camera(
        "cam0",
        sim.url("cam0", None),
        5,
        (320, 240),
        Some(0),
    ));
    ic.tracing = tracing_to(&receiver.grpc_url, OtlpProtocol::Grpc, 1.0);
    let mut wc = worker::config(
        &unique_name("worker"),
        &broker.bootstrap,
        &t,
        &unique_name("group"),
        &models.path().join("reference-detector.pt"),
        &models.path().join("reference-detector.json"),
    );
    wc.batching.max_batch = 4;
    wc.batching.max_wait = Duration::from_millis(20);
    wc.tracing = tracing_to(&receiver.http_url, OtlpProtocol::HttpProtobuf, 1.0);
    let worker = worker::start(
        &wc,
        &[("PANOPTES_LOG_FORMAT", "json")],
        Duration::from_secs(30),
    )?;
    let mut ingest_node = ingest::start(&ic, &[])?;
    ingest_node.wait_streaming("cam0", Duration::from_secs(20))?;

    // A whole frame: ingest's send, the worker's receive and send, in one trace.
    let complete = |spans: &[ReceivedSpan]| {
        spans.iter().any(|s| {
            s.service == "panoptes-worker"
                && s.kind == "PRODUCER"
                && spans.iter().any(|p| p.span_id == s.parent_span_id)
        })
    };
    ensure!(
        wait_for_spans(&receiver, Duration::from_secs(30), complete),
        "no complete frame trace; received:\n{:#?}",
        receiver.spans()
    );
    // Let a few more batches arrive, then read what the worker published.
    std::thread::sleep(Duration::from_secs(2));
    let spans = receiver.spans();
    let det_send = spans
        .iter()
        .find(|s| {
            s.service == "panoptes-worker"
                && s.kind == "PRODUCER"
                && s.name == format!("send {}", t.detections)
        })
        .context("a detection send span")?;
    let trace = receiver.trace(&det_send.trace_id);
    println!("one frame's trace:\n{}", print_trace(&trace));

    // Ingest: the root PRODUCER span, the camera, where the frame went.
    let ingest_send = one(&trace, "ingest send span", |s| {
        s.service == "panoptes-ingest" && s.kind == "PRODUCER"
    })?;
    assert!(ingest_send.parent_span_id.is_empty(), "{ingest_send:#?}");
    assert_eq!(ingest_send.name, format!("send {}", t.frames));
    assert_eq!(ingest_send.attr("messaging.system"), Some("kafka"));
    assert_eq!(ingest_send.attr("messaging.operation.type"), Some("send"));
    assert_eq!(
        ingest_send.attr("messaging.destination.name"),
        Some(t.frames.as_str())
    );
    assert_eq!(ingest_send.attr("panoptes.camera.id"), Some("cam0"));
    assert_eq!(
        ingest_send.attr("messaging.destination.partition.id"),
        Some("0")
    );
    assert_eq!(ingest_send.transport, "grpc");
    // Its pipeline stages, as children, when the probes matched the frame.
    for s in trace
        .iter()
        .filter(|s| s.parent_span_id == ingest_send.span_id)
    {
        if s.service == "panoptes-ingest" {
            assert!(["decode", "encode"].contains(&s.name.as_str()), "{s:#?}");
            assert_eq!(s.kind, "INTERNAL");
        }
    }

    // Worker: receive (CONSUMER, child of the frame's creation context, same record).
    let receive = one(&trace, "worker receive span", |s| {
        s.service == "panoptes-worker" && s.kind == "CONSUMER"
    })?;
    assert_eq!(receive.parent_span_id, ingest_send.span_id);
    assert_eq!(receive.name, format!("receive {}", t.frames));
    assert_eq!(receive.attr("messaging.operation.type"), Some("receive"));
    assert_eq!(
        receive.attr("messaging.destination.partition.id"),
        Some("0")
    );
    assert_eq!(
        receive.attr("messaging.kafka.offset"),
        ingest_send.attr("messaging.kafka.offset")
    );
    assert_eq!(receive.attr("panoptes.camera.id"), Some("cam0"));
    assert_eq!(receive.transport, "http");
    // Detection send (PRODUCER, child of receive, linked to the batch).
    assert_eq!(det_send.parent_span_id, receive.span_id);
    assert_eq!(det_send.attr("panoptes.frame.status"), Some("ok"));
    assert_eq!(det_send.links.len(), 1, "{det_send:#?}");
    let batch_id = &det_send.links[0];

    // The batch: its own trace, CONSUMER `process` with a link to this frame's creation
    // context, and the inference span under it.
    let batch = spans
        .iter()
        .find(|s| s.span_id == batch_id.span_id && s.trace_id == batch_id.trace_id)
        .context("the batch span the detection links to")?;
    assert_eq!(batch.kind, "CONSUMER");
    assert_eq!(batch.name, format!("process {}", t.frames));
    assert_ne!(batch.trace_id, ingest_send.trace_id);
    assert_eq!(batch.attr("messaging.operation.type"), Some("process"));
    let n: usize = batch
        .attr("messaging.batch.message_count")
        .context("batch count")?
        .parse()?;
    assert_eq!(batch.links.len(), n, "one link per frame: {batch:#?}");
    assert!(
        batch
            .links
            .iter()
            .any(|l| l.trace_id == ingest_send.trace_id && l.span_id == ingest_send.span_id),
        "the batch links to the frame's creation context: {batch:#?}"
    );
    let inference = one(&spans, "inference span", |s| {
        s.parent_span_id == batch.span_id && s.name == "inference"
    })?;
    assert_eq!(inference.kind, "INTERNAL");
    assert_eq!(inference.attr("panoptes.device"), Some("cpu"));
    assert_eq!(
        inference.attr("panoptes.batch.size"),
        Some(n.to_string().as_str())
    );
    assert!(inference.attr("panoptes.model.version").is_some());
    // Some batch held several frames (4 at most): many parents.
    let multi = spans
        .iter()
        .filter(|s| s.name == format!("process {}", t.frames))
        .map(|s| s.links.len())
        .max()
        .unwrap_or(0);
    println!("largest batch seen: {multi} frames");

    // The detection record carries the send span's context onward (the camera stops first,
    // so that reading the topic comes to an end).
    let im = ingest_node.metrics();
    assert!(
        ingest_node.proc.terminate(Duration::from_secs(10))?,
        "ingest exits cleanly"
    );
    let records = all_records(&broker.bootstrap, &t.detections)?;
    let tp = format!("00-{}-{}-01", det_send.trace_id, det_send.span_id);
    ensure!(
        records
            .iter()
            .any(|r| r.traceparent.as_deref() == Some(tp.as_str())),
        "no detection record with traceparent {tp}"
    );

    // Sampling: unsampled frames written straight into the topic (partition 1, a camera of
    // its own) leave no span when inferred, but are kept when dead-lettered or stale.
    let producer = FrameProducer::new(&broker.bootstrap, &[])?;
    let unsampled = |i: u8| format_traceparent(&[0xa0 + i; 16], &[0x11; 8], 0x00);
    let jpeg = test_jpeg(64, 48);
    let mut fine = frame_headers("direct", 0, (64, 48), Duration::ZERO);
    fine.traceparent = unsampled(1);
    producer.send(&t.frames, 1, &fine, &jpeg)?;
    let mut broken = frame_headers("direct", 1, (64, 48), Duration::ZERO);
    broken.traceparent = unsampled(2);
    producer.send(&t.frames, 1, &broken, b"not a jpeg")?;
    let mut stale = frame_headers("direct", 2, (64, 48), Duration::from_secs(120));
    stale.traceparent = unsampled(3);
    producer.send(&t.frames, 1, &stale, &jpeg)?;
    producer.flush()?;
    let id = |i: u8| hex(&[0xa0 + i; 16]);
    let kept = |spans: &[ReceivedSpan], i: u8| {
        spans
            .iter()
            .any(|s| s.trace_id == id(i) && s.kind == "PRODUCER")
    };
    ensure!(
        wait_for_spans(&receiver, Duration::from_secs(20), |s| kept(s, 2)
            && kept(s, 3)),
        "dead-lettered and stale frames keep their spans"
    );
    // The fine frame was published before the others (one partition, in order).
    let records = all_records(&broker.bootstrap, &t.detections)?;
    let direct: Vec<_> = records
        .iter()
        .filter(|r| r.camera_id == "direct")
        .map(|r| (r.seq, r.status, r.traceparent.clone()))
        .collect();
    ensure!(
        direct.iter().any(|(seq, _, _)| *seq == 0),
        "the unsampled fine frame was detected: {direct:?}"
    );
    let spans = receiver.spans();
    assert!(
        !spans.iter().any(|s| s.trace_id == id(1)),
        "unsampled, not kept"
    );
    let dead = one(&spans, "dead letter send", |s| {
        s.trace_id == id(2) && s.kind == "PRODUCER"
    })?;
    assert_eq!(dead.name, format!("send {}", t.dlq));
    assert_eq!(
        dead.attr("panoptes.trace.kept_because"),
        Some("dead_letter")
    );
    // The worker's log line about that frame names the same trace (top-level keys, from the
    // log span entered while the frame is handled) and the span its receive span hangs under.
    let dead_receive = one(&spans, "dead letter receive", |s| {
        s.trace_id == id(2) && s.kind == "CONSUMER"
    })?;
    let logged = log_lines_of_trace(&worker.proc.log_text(), &dead.trace_id);
    let line = logged
        .iter()
        .find(|l| l["fields"]["message"] == "dead-lettering frame")
        .with_context(|| {
            format!(
                "no JSON log line with trace_id {}: {logged:#?}",
                dead.trace_id
            )
        })?;
    assert_eq!(
        line["span_id"],
        dead_receive.parent_span_id.as_str(),
        "{line}"
    );
    assert_eq!(line["level"], "WARN", "{line}");
    let stale_send = one(&spans, "stale send", |s| {
        s.trace_id == id(3) && s.kind == "PRODUCER"
    })?;
    assert_eq!(
        stale_send.attr("panoptes.trace.kept_because"),
        Some("skipped_stale")
    );
    // The kept frames' receive spans hang under their (never exported) creation context.
    let services: BTreeSet<_> = spans.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        BTreeSet::from(["panoptes-ingest", "panoptes-worker"])
    );

    // Export is counted, nothing dropped.
    let wm = worker.metrics();
    let exported =
        panoptes_testkit::metric_value(&wm, "panoptes_worker_trace_spans_exported_total")
            .unwrap_or(0.0);
    assert!(exported > 0.0, "{wm}");
    assert_eq!(
        panoptes_testkit::metric_value(&wm, "panoptes_worker_trace_spans_dropped_total"),
        Some(0.0)
    );

    assert!(
        panoptes_testkit::metric_value(&im, "panoptes_ingest_trace_spans_exported_total")
            .unwrap_or(0.0)
            > 0.0,
        "{im}"
    );
    println!(
        "spans received: {} in {} export requests",
        receiver.spans().len(),
        receiver.requests()
    );
    Ok(())
}

/// The JSON log lines of `log` whose top-level `trace_id` is `trace_id`.
fn log_lines_of_trace(log: &str, trace_id: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["trace_id"] == trace_id)
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
