//! The coordinator's grants as spans, received by a real OTLP receiver
//! (`panoptes_testkit::otlp`): a real coordinator process exporting over OTLP/gRPC with new
//! traces sampled at 0 (control-plane spans are kept anyway), a real `redis-server`, one
//! ingest and one worker member (`MemberAgent`, as the nodes run it). The camera and its
//! partition are granted, and each grant arrives as an INTERNAL `grant <kind>` span naming the
//! item, the owner, the epoch and the planner's reason.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use panoptes_runtime::trace::{OtlpProtocol, TracingConfig};
use panoptes_testkit::coordinator::config;
use panoptes_testkit::otlp::{OtlpReceiver, ReceivedSpan, wait_for_spans};
use panoptes_testkit::{Coordinator, RedisServer, unique_name};
use tokio_util::sync::CancellationToken;

use common::members::start_i1_and_w1;

fn grant<'a>(spans: &'a [ReceivedSpan], kind: &str, owner: &str) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.name == format!("grant {kind}") && s.attr("panoptes.owner") == Some(owner))
}

#[test]
fn grants_are_exported_as_spans_whatever_the_sampling() -> Result<()> {
    let receiver = OtlpReceiver::start()?;
    let redis = RedisServer::start()?;
    let topic = unique_name("frames");
    let mut cfg = config("c1", &redis.url, "127.0.0.1:9", &topic, 4);
    cfg.tracing = TracingConfig {
        endpoint: Some(receiver.grpc_url.clone()),
        protocol: OtlpProtocol::Grpc,
        sample_ratio: 0.0,
        export_interval: Duration::from_millis(200),
        ..TracingConfig::default()
    };
    let c = Coordinator::start(&cfg)?;
    c.wait_leader(Duration::from_secs(10))?;
    c.add_camera(&serde_json::json!({
        "id": "cam-traced", "url": "rtsp://127.0.0.1:1/cam", "partition": 0
    }))?;
    let cancel = CancellationToken::new();
    let threads = start_i1_and_w1(&redis, &topic, &cancel)?;
    let both = |s: &[ReceivedSpan]| {
        grant(s, "ingest", "i1").is_some() && grant(s, "worker", "w1").is_some()
    };
    let arrived = wait_for_spans(&receiver, Duration::from_secs(30), both);
    cancel.cancel();
    for t in threads {
        let _ = t.join();
    }
    ensure!(arrived, "grant spans; received: {:#?}", receiver.spans());
    let spans = receiver.spans();
    let cam = grant(&spans, "ingest", "i1").expect("checked");
    assert_eq!(cam.service, "panoptes-coordinator");
    assert_eq!(cam.kind, "INTERNAL");
    assert_eq!(cam.attr("panoptes.item"), Some("cam-traced"));
    assert_eq!(cam.attr("panoptes.member.kind"), Some("ingest"));
    assert_eq!(
        cam.attr("panoptes.trace.kept_because"),
        Some("control_plane")
    );
    assert!(
        cam.attr("panoptes.reason").is_some_and(|r| !r.is_empty()),
        "{cam:#?}"
    );
    let epoch: u64 = cam.attr("panoptes.epoch").unwrap_or("0").parse()?;
    assert!(epoch >= 1, "{cam:#?}");
    assert_eq!(cam.transport, "grpc");
    let part = grant(&spans, "worker", "w1").expect("checked");
    assert!(
        part.attr("panoptes.item").is_some_and(|i| i.ends_with('0')),
        "{part:#?}"
    );
    Ok(())
}
