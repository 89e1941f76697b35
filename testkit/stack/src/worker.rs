//! `panoptes-worker` nodes started from [`WorkerConfig`].

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use panoptes_workers::config::WorkerConfig;

use panoptes_testkit::{FREE_PORT, Node, Topics};

/// Logs the worker tests read back.
pub const DEBUG_LOGS: &[(&str, &str)] = &[("RUST_LOG", "info,panoptes_workers=debug")];

/// A worker `worker_id` consuming `t.frames` on `bootstrap` in consumer group `group_id`
/// (static assignment), HTTP on a free port, the TorchScript `model` (with its `manifest`)
/// on the CPU with one intra-op thread.
pub fn config(
    worker_id: &str,
    bootstrap: &str,
    t: &Topics,
    group_id: &str,
    model: &Path,
    manifest: &Path,
) -> WorkerConfig {
    let mut c = WorkerConfig {
        worker_id: worker_id.into(),
        ..WorkerConfig::default()
    };
    c.http.listen = FREE_PORT.parse().expect("socket address");
    c.kafka.client.bootstrap_servers = bootstrap.into();
    c.kafka.frames_topic = t.frames.clone();
    c.kafka.detections_topic = t.detections.clone();
    c.kafka.dlq_topic = t.dlq.clone();
    c.kafka.shadow_topic = t.shadow.clone();
    c.kafka.group_id = group_id.into();
    c.model.path = model.to_path_buf();
    c.model.manifest = Some(manifest.to_path_buf());
    c.model.device = "cpu".into();
    c.model.intra_op_threads = 1;
    c
}

/// Starts `panoptes-worker` on `config` with the extra `env`, waiting up to `timeout` for
/// it to serve (loading a model takes a while).
pub fn start(config: &WorkerConfig, env: &[(&str, &str)], timeout: Duration) -> Result<Node> {
    let mut node = Node::start(&config.worker_id, "panoptes-worker", config, env, timeout)?;
    node.region = config.region.clone();
    Ok(node)
}
