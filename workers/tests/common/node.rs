//! The processes of the worker's integration tests, from `panoptes_testkit`: workers started
//! from [`WorkerConfig`], the three simulated cameras and the ingest node that pulls them.

use std::time::Duration;

use anyhow::Result;
use panoptes_checker::Checker;
use panoptes_models::GeneratedModel;
use panoptes_scene::camera::CameraConfig;
use panoptes_testkit::{CamSim, DevBroker, FREE_PORT, Node, Topics, unique_name, worker};
use panoptes_workers::config::{DeliveryMode, WorkerConfig};

#[allow(unused_imports)]
pub use panoptes_testkit::settle::{checker, finish_when_settled};

/// A running `panoptes-worker`.
pub type Worker = Node;

/// Starts worker `worker_id` in consumer group `group` on the test's topics (static
/// assignment, `model` on the CPU, debug logs); `tune` changes the config first.
pub fn start_worker(
    worker_id: &str,
    bootstrap: &str,
    t: &Topics,
    group: &str,
    model: &GeneratedModel,
    tune: impl FnOnce(&mut WorkerConfig),
) -> Result<Worker> {
    let (model, manifest) = (&model.model_path, &model.manifest_path);
    let mut c = worker::config(worker_id, bootstrap, t, group, model, manifest);
    tune(&mut c);
    worker::start(&c, worker::DEBUG_LOGS, Duration::from_secs(30))
}

/// What a static-mode worker test runs against: a broker with fresh topics and a consumer
/// group name.
pub struct Rig {
    pub broker: DevBroker,
    pub t: Topics,
    pub group: String,
}

impl Rig {
    /// Topics with `partitions` partitions.
    pub fn new(partitions: u32) -> Result<Self> {
        let broker = DevBroker::start(1)?;
        let t = broker.create_topics(partitions)?;
        Ok(Self {
            broker,
            t,
            group: unique_name("group"),
        })
    }

    /// The checker on the rig's topics, scoring accuracy against `cameras` (none:
    /// accounting only).
    pub fn checker(&self, cameras: Vec<CameraConfig>) -> Result<Checker> {
        checker(&self.broker.bootstrap, &self.t, cameras)
    }

    /// Starts a worker (reference detector) with a fresh id in the rig's group.
    pub fn worker(&self, tune: impl FnOnce(&mut WorkerConfig)) -> Result<Worker> {
        let model = &super::models().reference;
        let (bootstrap, id) = (&self.broker.bootstrap, unique_name("worker"));
        start_worker(&id, bootstrap, &self.t, &self.group, model, tune)
    }
}

/// Exactly-once delivery, committing every 300 ms.
pub fn exactly_once(c: &mut WorkerConfig) {
    c.delivery = DeliveryMode::ExactlyOnce;
    c.commit_interval = Duration::from_millis(300);
}

pub const CAMERAS: [&str; 3] = ["cam0", "cam1", "cam2"];
pub const FPS: u32 = 5;

/// The three simulated cameras (640×360 at [`FPS`], seeds 1..=3).
pub fn camera_configs() -> Vec<CameraConfig> {
    CAMERAS
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut c = CameraConfig::new(*id);
            c.fps = FPS;
            c.seed = 1 + i as u64;
            c
        })
        .collect()
}

/// Starts `panoptes-ingest` pulling the three cameras at 640×360, camera i → partition i.
///
/// The worker's tests do not link the ingest crate (GStreamer), so the node's config is
/// written as a TOML table here; the node rejects any key it does not know.
pub fn start_ingest(bootstrap: &str, frames: &str, sim: &CamSim) -> Result<Node> {
    let cameras: Vec<serde_json::Value> = CAMERAS
        .iter()
        .enumerate()
        .map(|(i, id)| {
            serde_json::json!({
                "id": id, "url": sim.url(id, None), "fps": FPS,
                "width": 640, "height": 360, "partition": i,
            })
        })
        .collect();
    let config = serde_json::json!({
        "node_id": unique_name("ingest"),
        "http": { "listen": FREE_PORT },
        "kafka": { "bootstrap_servers": bootstrap, "topic": frames },
        "cameras": cameras,
    });
    Node::start(
        "ingest",
        "panoptes-ingest",
        &config,
        &[],
        Duration::from_secs(20),
    )
}
