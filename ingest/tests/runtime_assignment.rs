//! Cameras added, changed and removed at run time, without restarting the node: the
//! mechanism the coordinator will drive. In-process node, real broker and simulator.

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use common::{broker_with_topic, camera_seqs};
use panoptes_ingest::camera::{CameraContext, CameraState};
use panoptes_ingest::config::{CameraConfig, CameraDefaults, CameraSpec, KafkaConfig};
use panoptes_ingest::metrics::IngestMetrics;
use panoptes_ingest::node::IngestNode;
use panoptes_ingest::publisher::FramePublisher;
use panoptes_runtime::config::KafkaClientConfig;

use panoptes_testkit::wait_until;
use tokio_util::sync::CancellationToken;

fn spec(id: &str, url: String, fps: u32) -> CameraSpec {
    let c = CameraConfig {
        id: id.into(),
        url,
        fps: Some(fps),
        ..Default::default()
    };
    c.resolve(&CameraDefaults::default()).expect("valid camera")
}

fn streaming(node: &IngestNode, id: &str) -> Option<u64> {
    node.status(id)
        .filter(|s| s.state == CameraState::Streaming && s.frames > 0)
        .map(|s| s.frames)
}

#[test]
fn cameras_are_added_changed_and_removed_without_restart() -> Result<()> {
    gstreamer::init()?;
    let (broker, topic) = broker_with_topic(4)?;
    let sim = panoptes_testkit::CamSim::with_cameras(&["id=a,fps=10", "id=b,fps=10"])?;
    let metrics = IngestMetrics::new()?;
    let kafka = KafkaConfig {
        client: KafkaClientConfig {
            bootstrap_servers: broker.bootstrap.clone(),
            ..Default::default()
        },
        topic: topic.clone(),
        ..Default::default()
    };
    let link = panoptes_runtime::kafka_link::KafkaLink::new(
        &metrics.registry,
        "ingest",
        panoptes_runtime::health::Readiness::default(),
    )?;
    let publisher = Arc::new(FramePublisher::new(&kafka, metrics.clone(), link)?);
    let ctx = Arc::new(CameraContext {
        publisher: publisher.clone(),
        metrics: metrics.clone(),
    });
    let node = IngestNode::new(ctx, CancellationToken::new());

    node.apply(vec![spec("a", sim.url("a", None), 5)])?;
    wait_until("a streaming", Duration::from_secs(20), || {
        streaming(&node, "a")
    })?;

    // Add b: a keeps streaming on its first connection.
    node.apply(vec![
        spec("a", sim.url("a", None), 5),
        spec("b", sim.url("b", None), 5),
    ])?;
    wait_until("b streaming", Duration::from_secs(20), || {
        streaming(&node, "b")
    })?;
    assert_eq!(
        node.status("a").unwrap().reconnects,
        0,
        "adding b disturbed a"
    );

    // Change a's rate: a restarts, keeping its sequence numbers going.
    let seq_before = node.status("a").unwrap().next_seq;
    node.apply(vec![
        spec("a", sim.url("a", None), 10),
        spec("b", sim.url("b", None), 5),
    ])?;
    wait_until("a restarted", Duration::from_secs(20), || {
        node.status("a")
            .filter(|s| s.state == CameraState::Streaming && s.next_seq > seq_before + 5)
            .map(|_| ())
    })?;
    assert_eq!(node.statuses().len(), 2);

    // Remove a: its metric series disappear, b carries on.
    node.apply(vec![spec("b", sim.url("b", None), 5)])?;
    assert!(node.status("a").is_none());
    wait_until("a's series removed", Duration::from_secs(10), || {
        let text = metrics.registry.gather();
        let has_a = text
            .iter()
            .flat_map(|f| f.get_metric())
            .any(|m| m.get_label().iter().any(|l| l.value() == "a"));
        (!has_a).then_some(())
    })?;
    let b_frames = node.status("b").unwrap().frames;
    wait_until("b still flowing", Duration::from_secs(10), || {
        (node.status("b").unwrap().frames > b_frames + 5).then_some(())
    })?;

    node.shutdown();
    publisher.flush(Duration::from_secs(10))?;

    // Downstream: a's frames are gapless and ordered across the restart.
    let seqs = camera_seqs(&broker.bootstrap, &topic, "a", Duration::from_secs(3))?;
    assert!(seqs.len() as u64 > seq_before + 5);
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "a's sequence has gaps across the restart: {seqs:?}"
    );
    assert_eq!(seqs[0], 0);
    Ok(())
}
