//! What only the ingest tests share: nodes started from [`IngestConfig`] with debug logs,
//! the reconnect timings the tests shorten, and the hand-played coordinator ([`leader`]).
//! Processes (broker, simulator, nodes) come from `panoptes_testkit`.

#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context, Result};
use panoptes_ingest::config::{CameraConfig, IngestConfig};
use panoptes_testkit::kafka::{TopicReader, by_camera};
use panoptes_testkit::{DevBroker, Node, ingest, unique_name};

#[allow(unused_imports)]
pub use panoptes_testkit::ingest::camera;

/// The ingest node under test.
pub type Ingest = Node;

/// Starts a static-mode `panoptes-ingest` pulling `cams` into `topic`, with debug logging;
/// `tune` changes the config first.
pub fn start(
    bootstrap: &str,
    topic: &str,
    cams: Vec<CameraConfig>,
    tune: impl FnOnce(&mut IngestConfig),
) -> Result<Ingest> {
    let mut c = ingest::config(&unique_name("ingest"), bootstrap, topic);
    c.cameras = cams;
    tune(&mut c);
    ingest::start(&c, ingest::DEBUG_LOGS)
}

/// Starts `panoptes-ingest` in coordinator mode as member `node_id`, with no cameras in its
/// file; `tune` changes the config first.
pub fn start_coordinated(
    bootstrap: &str,
    topic: &str,
    node_id: &str,
    redis_url: &str,
    tune: impl FnOnce(&mut IngestConfig),
) -> Result<Ingest> {
    let mut c = ingest::coordinated_config(node_id, bootstrap, topic, redis_url);
    tune(&mut c);
    ingest::start(&c, ingest::DEBUG_LOGS)
}

/// The sequence numbers of `camera`'s frames on `topic`, in log order, as read over `window`.
pub fn camera_seqs(
    bootstrap: &str,
    topic: &str,
    camera: &str,
    window: Duration,
) -> Result<Vec<u64>> {
    let reader = TopicReader::new(bootstrap, topic)?;
    let mut records = Vec::new();
    reader.read_for(window, &mut records)?;
    let per_cam = by_camera(&records);
    let frames = per_cam
        .get(camera)
        .with_context(|| format!("no frames from {camera}"))?;
    Ok(frames
        .iter()
        .map(|r| r.headers.as_ref().unwrap().seq)
        .collect())
}

/// Broker + a fresh frames topic with `partitions` partitions.
pub fn broker_with_topic(partitions: u32) -> Result<(DevBroker, String)> {
    let broker = DevBroker::start(1)?;
    let topic = broker.frames_topic(partitions)?;
    Ok((broker, topic))
}

pub mod leader;
