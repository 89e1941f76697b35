//! `panoptes-ingest` nodes started from [`IngestConfig`] (feature `ingest`).

use std::time::Duration;

use anyhow::Result;
use panoptes_ingest::config::{CameraConfig, IngestConfig};

use crate::node::Node;

/// Log levels the ingest tests read back (`RUST_LOG=debug`, GStreamer warnings).
pub const DEBUG_LOGS: &[(&str, &str)] = &[("RUST_LOG", "debug"), ("GST_DEBUG", "2")];

/// A static-mode node `node_id` publishing to `topic` on `bootstrap`, HTTP on a free port,
/// no cameras yet.
pub fn config(node_id: &str, bootstrap: &str, topic: &str) -> IngestConfig {
    let mut c = IngestConfig {
        node_id: node_id.into(),
        ..IngestConfig::default()
    };
    c.http.listen = crate::basics::FREE_PORT.parse().expect("socket address");
    c.kafka.client.bootstrap_servers = bootstrap.into();
    c.kafka.topic = topic.into();
    c
}

/// A coordinator-mode member `node_id` taking its cameras from the coordination state in
/// `redis_url`.
pub fn coordinated_config(
    node_id: &str,
    bootstrap: &str,
    topic: &str,
    redis_url: &str,
) -> IngestConfig {
    let mut c = config(node_id, bootstrap, topic);
    c.coordinator.enabled = true;
    c.coordinator.redis.redis_url = redis_url.into();
    c
}

/// A camera entry: `fps` at most, scaled into `width`×`height`, on `partition` (or by key).
pub fn camera(
    id: &str,
    url: String,
    fps: u32,
    (width, height): (u32, u32),
    partition: Option<i32>,
) -> CameraConfig {
    CameraConfig {
        id: id.into(),
        url,
        fps: Some(fps),
        width: Some(width),
        height: Some(height),
        partition,
        ..CameraConfig::default()
    }
}

/// Starts `panoptes-ingest` on `config` with the extra `env`.
pub fn start(config: &IngestConfig, env: &[(&str, &str)]) -> Result<Node> {
    start_within(config, env, Duration::from_secs(20))
}

/// [`start`], waiting up to `timeout` for the node to serve.
pub fn start_within(
    config: &IngestConfig,
    env: &[(&str, &str)],
    timeout: Duration,
) -> Result<Node> {
    // Ingest nodes hold the camera keyring (workers do not).
    let mut vars = vec![(
        panoptes_coordinator_client::sealed::KEYS_ENV,
        crate::redis::TEST_CAMERA_KEYS,
    )];
    vars.extend_from_slice(env);
    let mut node = Node::start(&config.node_id, "panoptes-ingest", config, &vars, timeout)?;
    node.region = config.region.clone();
    Ok(node)
}
