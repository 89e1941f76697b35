//! The coordinator's grants as spans, received by a real OTLP receiver
//! (`panoptes_testkit::otlp`): a real coordinator process exporting over OTLP/gRPC with new
//! traces sampled at 0 (control-plane spans are kept anyway), a real `redis-server`, one
//! ingest and one worker member (`MemberAgent`, as the nodes run it). The camera and its
//! partition are granted, and each grant arrives as an INTERNAL `grant <kind>` span naming the
//! item, the owner, the epoch and the planner's reason. Then a handover: a second worker joins,
//! the planner moves one of the first worker's two loaded partitions to it, and the move
//! arrives as a `handover worker` span (owner, target, epoch, reason) followed, once the first
//! worker released the partition, by the `grant worker` span to the newcomer at a higher epoch.

mod common;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use panoptes_coordinator_client::{MemberAgent, MemberKind};
use panoptes_runtime::trace::{OtlpProtocol, TracingConfig};
use panoptes_testkit::coordinator::config;
use panoptes_testkit::otlp::{OtlpReceiver, ReceivedSpan, wait_for_spans};
use panoptes_testkit::{Coordinator, RedisServer, unique_name};
use tokio_util::sync::CancellationToken;

use common::members::{member, start_i1_and_w1};

fn grant<'a>(spans: &'a [ReceivedSpan], kind: &str, owner: &str) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.name == format!("grant {kind}") && s.attr("panoptes.owner") == Some(owner))
}

/// A coordinator on `redis` for `topic` (4 partitions) exporting to `receiver` over gRPC,
/// new traces sampled at 0.
fn traced_coordinator(
    receiver: &OtlpReceiver,
    redis: &RedisServer,
    topic: &str,
) -> Result<Coordinator> {
    let mut cfg = config("c1", &redis.url, "127.0.0.1:9", topic, 4);
    cfg.tracing = TracingConfig {
        endpoint: Some(receiver.grpc_url.clone()),
        protocol: OtlpProtocol::Grpc,
        sample_ratio: 0.0,
        export_interval: Duration::from_millis(200),
        ..TracingConfig::default()
    };
    Coordinator::start(&cfg)
}

#[test]
fn grants_are_exported_as_spans_whatever_the_sampling() -> Result<()> {
    let receiver = OtlpReceiver::start()?;
    let redis = RedisServer::start()?;
    let topic = unique_name("frames");
    let c = traced_coordinator(&receiver, &redis, &topic)?;
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

fn span_of<'a>(
    spans: &'a [ReceivedSpan],
    name: &str,
    pred: impl Fn(&ReceivedSpan) -> bool,
) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| s.name == name && pred(s))
}

#[test]
fn a_partition_moving_between_two_workers_is_exported_as_handover_and_grant_spans() -> Result<()> {
    let receiver = OtlpReceiver::start()?;
    let redis = RedisServer::start()?;
    let topic = unique_name("frames");
    let c = traced_coordinator(&receiver, &redis, &topic)?;
    c.wait_leader(Duration::from_secs(10))?;
    // Two loaded partitions, so that one worker holding both is worth rebalancing.
    for (id, partition) in [("cam-p0", 0), ("cam-p1", 1)] {
        c.add_camera(&serde_json::json!({
            "id": id, "url": "rtsp://127.0.0.1:1/cam", "partition": partition
        }))?;
    }
    let cancel = CancellationToken::new();
    let mut threads = Vec::new();
    let mut start = |kind, id: &str| -> Result<MemberAgent> {
        let (agent, t) = MemberAgent::start(member(kind, id, &redis, &topic), cancel.clone())?;
        threads.push(t);
        Ok(agent)
    };
    let _i1 = start(MemberKind::Ingest, "i1")?;
    let w1 = start(MemberKind::Worker, "w1")?;
    let on_w1 = |s: &[ReceivedSpan], p: char| {
        span_of(s, "grant worker", |g| {
            g.attr("panoptes.owner") == Some("w1")
                && g.attr("panoptes.item").is_some_and(|i| i.ends_with(p))
        })
        .is_some()
    };
    let granted = wait_for_spans(&receiver, Duration::from_secs(30), |s| {
        on_w1(s, '0') && on_w1(s, '1')
    });
    let _w2 = start(MemberKind::Worker, "w2")?;
    let handover = |s: &[ReceivedSpan]| {
        span_of(s, "handover worker", |h| {
            h.attr("panoptes.owner") == Some("w1") && h.attr("panoptes.target") == Some("w2")
        })
        .cloned()
    };
    let moved = granted
        && wait_for_spans(&receiver, Duration::from_secs(30), |s| {
            handover(s).is_some()
        });
    // w1 hands the moving partition over, as a worker's driver does once its work is done.
    let mut handed = false;
    if let Some(h) = moved.then(|| handover(&receiver.spans())).flatten() {
        let item = h.attr("panoptes.item").unwrap_or_default().to_owned();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !handed && std::time::Instant::now() < deadline {
            if let Some(g) = w1.desired().grants.get(&item).filter(|g| g.moving()) {
                handed = w1.release(&item, g.epoch(), None)?;
            } else {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    let regranted = handed
        && wait_for_spans(&receiver, Duration::from_secs(30), |s| {
            handover(s).is_some_and(|h| {
                span_of(s, "grant worker", |g| {
                    g.attr("panoptes.owner") == Some("w2")
                        && g.attr("panoptes.item") == h.attr("panoptes.item")
                })
                .is_some()
            })
        });
    cancel.cancel();
    for t in threads {
        let _ = t.join();
    }
    let spans = receiver.spans();
    ensure!(
        granted,
        "both partitions granted to w1; received: {spans:#?}"
    );
    ensure!(moved, "a handover span w1 → w2; received: {spans:#?}");
    ensure!(handed, "w1 released the moving partition");
    ensure!(
        regranted,
        "the grant to w2 after the handover; received: {spans:#?}"
    );
    let h = handover(&spans).context("checked")?;
    assert_eq!(h.service, "panoptes-coordinator");
    assert_eq!(h.kind, "INTERNAL");
    assert_eq!(h.attr("panoptes.member.kind"), Some("worker"));
    assert_eq!(h.attr("panoptes.reason"), Some("rebalance"), "{h:#?}");
    assert_eq!(h.attr("panoptes.trace.kept_because"), Some("control_plane"));
    let item = h.attr("panoptes.item").context("item")?;
    assert!(item.ends_with('0') || item.ends_with('1'), "{h:#?}");
    let handed_at: u64 = h.attr("panoptes.epoch").context("epoch")?.parse()?;
    let g = span_of(&spans, "grant worker", |g| {
        g.attr("panoptes.owner") == Some("w2") && g.attr("panoptes.item") == Some(item)
    })
    .context("checked")?;
    let granted_at: u64 = g.attr("panoptes.epoch").context("epoch")?.parse()?;
    assert!(
        granted_at > handed_at,
        "epochs only grow: {h:#?} then {g:#?}"
    );
    assert!(g.start_ns >= h.start_ns, "the grant follows the handover");
    Ok(())
}
