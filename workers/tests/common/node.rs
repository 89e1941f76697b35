//! The processes of the worker's integration tests, from `panoptes_testkit`: workers started
//! from [`WorkerConfig`], the three simulated cameras and the ingest node that pulls them.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use anyhow::{Context, Result};
use panoptes_checker::{Checker, Report};
use panoptes_models::GeneratedModel;
use panoptes_scene::camera::CameraConfig;
use panoptes_schemas::DetectionRecord;
use panoptes_testkit::kafka::{all_records, committed, offsets_reader, wait_committed};
use panoptes_testkit::{CamSim, DevBroker, FREE_PORT, Node, Topics, unique_name, wait_until};
use panoptes_testkit_stack::worker;
use panoptes_workers::config::{DeliveryMode, WorkerConfig};
use rdkafka::consumer::BaseConsumer;

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
pub fn start_ingest(bootstrap: &str, frames: &str, sim: &CamSim) -> Result<Node> {
    start_ingest_cameras(bootstrap, frames, sim, &CAMERAS, FPS, (640, 360))
}

/// Starts `panoptes-ingest` pulling `cameras` at `fps` and `size`, camera i → partition i.
///
/// The worker's tests do not link the ingest crate (GStreamer), so the node's config is
/// written as a JSON table here; the node rejects any key it does not know.
pub fn start_ingest_cameras(
    bootstrap: &str,
    frames: &str,
    sim: &CamSim,
    cameras: &[&str],
    fps: u32,
    (width, height): (u32, u32),
) -> Result<Node> {
    let cameras: Vec<serde_json::Value> = cameras
        .iter()
        .enumerate()
        .map(|(i, id)| {
            serde_json::json!({
                "id": id, "url": sim.url(id, None), "fps": fps,
                "width": width, "height": height, "partition": i,
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

/// A consumer group's committed offsets on a topic with `partitions` partitions.
pub struct Offsets {
    reader: BaseConsumer,
    topic: String,
    partitions: i32,
}

impl Offsets {
    /// Reads `group`'s offsets on `topic`.
    pub fn new(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Result<Self> {
        let reader = offsets_reader(bootstrap, group)?;
        let topic = topic.to_string();
        Ok(Self {
            reader,
            topic,
            partitions,
        })
    }

    /// The committed offset per partition now (missing: nothing committed).
    pub fn now(&self) -> Result<BTreeMap<i32, i64>> {
        committed(&self.reader, &self.topic, self.partitions)
    }

    /// Waits (`what`, within `timeout`) until every partition has committed past `past`.
    pub fn wait_all_past(&self, what: &str, past: i64, timeout: Duration) -> Result<()> {
        let (reader, topic) = (&self.reader, &self.topic);
        wait_committed(what, reader, topic, self.partitions, past, timeout).map(drop)
    }

    /// Waits (`what`, within `timeout`) until the committed offset of every partition in
    /// `parts` is past `floor(partition)`.
    pub fn wait_past(
        &self,
        what: &str,
        parts: Range<i32>,
        floor: impl Fn(i32) -> i64,
        timeout: Duration,
    ) -> Result<()> {
        wait_until(what, timeout, || {
            let c = self.now().ok()?;
            parts
                .clone()
                .all(|p| c.get(&p).is_some_and(|&at| at > floor(p)))
                .then_some(())
        })
    }
}

/// Finishes `checker` once the detections settle (`timeout`), prints its report and reads
/// back every detection record on `bootstrap`.
pub fn settle_and_read(
    checker: Checker,
    bootstrap: &str,
    t: &Topics,
    timeout: Duration,
) -> Result<(Report, Vec<DetectionRecord>)> {
    let report = finish_when_settled(checker, timeout)?;
    println!("{}", report.to_markdown());
    Ok((report, all_records(bootstrap, &t.detections)?))
}

/// The records of frames partition `p`, in log order, and the index of `worker`'s first.
pub fn partition_log<'a>(
    records: &'a [DetectionRecord],
    p: i32,
    worker: &str,
) -> Result<(Vec<&'a DetectionRecord>, usize)> {
    let mine: Vec<&DetectionRecord> = records.iter().filter(|r| r.partition == p).collect();
    let first = mine
        .iter()
        .position(|r| r.worker_id == worker)
        .with_context(|| format!("{worker} wrote nothing on partition {p}"))?;
    Ok((mine, first))
}
