//! Fixture of the model tests (`models.rs`, `canary.rs`, `shadow.rs`): a repository's
//! manifests and validation results, a real coordinator process with a `[models]` section,
//! and the calls the rollout tests make ([`Rollouts`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use panoptes_coordinator::api::models::ModelsConfig;
use panoptes_coordinator_client::keys;
use panoptes_coordinator_client::models::ModelRepository;
use panoptes_schemas::model::{
    InputFormat, InputSpec, ModelManifest, ModelRollout, OutputContract, ValidationResult,
};
use panoptes_testkit::RedisServer;
use panoptes_testkit::coordinator::{Coordinator, config};
use serde_json::{Value, json};

/// The frames topic of model tests.
pub const TOPIC: &str = "panoptes.frames.models-test";

/// A manifest of model `det` at `version` (no sha256, no validation).
pub fn manifest(version: &str) -> ModelManifest {
    ModelManifest {
        name: "det".into(),
        version: version.into(),
        input: InputSpec {
            width: 640,
            height: 640,
            format: InputFormat::Rgb,
            letterbox_fill: 114,
        },
        output: OutputContract::YoloRaw,
        classes: vec!["person".into(), "car".into()],
        score_threshold: 0.25,
        iou_threshold: 0.45,
        max_detections: 300,
        sha256: None,
        validation: Vec::new(),
    }
}

/// A cpu validation result with `precision` and a p99 latency.
pub fn result(precision: f64, latency_ms: f64) -> ValidationResult {
    ValidationResult {
        device_class: "cpu".into(),
        golden_set: "street@0123456789ab".into(),
        frames: 40,
        precision,
        recall: 0.8,
        latency_p99_ms: latency_ms,
        batch: 1,
        measured_at_ms: 1,
    }
}

/// Writes `det-<version>.pt` (`bytes`) and its manifest into `dir`; returns both paths.
pub fn write_version(dir: &Path, version: &str, bytes: &[u8]) -> (String, String) {
    let model = dir.join(format!("det-{version}.pt"));
    std::fs::write(&model, bytes).unwrap();
    let man = dir.join(format!("det-{version}.json"));
    std::fs::write(&man, manifest(version).to_json_pretty()).unwrap();
    (
        model.to_str().unwrap().to_owned(),
        man.to_str().unwrap().to_owned(),
    )
}

/// Redis and a leading coordinator whose `[models]` is the gate min precision/recall 0.5,
/// max latency 100 ms on `repository`, then changed by `tune`.
pub fn start_with(
    repository: Option<&Path>,
    tune: impl FnOnce(&mut ModelsConfig),
) -> (panoptes_testkit::RedisServer, Coordinator) {
    let redis = panoptes_testkit::RedisServer::start().unwrap();
    let mut c = config("coord-models", &redis.url, "127.0.0.1:9", TOPIC, 4);
    let mut models = ModelsConfig {
        repository: repository.map(Path::to_owned),
        min_precision: 0.5,
        min_recall: 0.5,
        max_latency_ms: 100.0,
        ..ModelsConfig::default()
    };
    tune(&mut models);
    c.models = models;
    let coord = Coordinator::start(&c).unwrap();
    coord.wait_leader(Duration::from_secs(10)).unwrap();
    (redis, coord)
}

/// A coordinator on a repository of model `det` with cameras in group `default`, and the
/// calls the rollout tests make on that group.
pub struct Rollouts {
    /// Its Redis.
    pub redis: RedisServer,
    /// The coordinator.
    pub coord: Coordinator,
    /// The repository's directory.
    pub root: PathBuf,
    _work: tempfile::TempDir,
}

impl Rollouts {
    /// Pushes `versions` of `det` (each `validated` one with precision 0.8, p99 40 ms),
    /// starts the coordinator with `tune` applied to its `[models]` and registers `cameras`.
    pub fn start(
        versions: &[&str],
        validated: &[&str],
        cameras: &[&str],
        tune: impl FnOnce(&mut ModelsConfig),
    ) -> Self {
        let work = tempfile::tempdir().unwrap();
        let root = work.path().join("repo");
        std::fs::create_dir(&root).unwrap();
        let repo = ModelRepository::open(&root).unwrap();
        for v in versions {
            let (model, man) = write_version(work.path(), v, format!("model {v}").as_bytes());
            repo.push_files(model.as_ref(), man.as_ref()).unwrap();
        }
        for v in validated {
            repo.record_validation("det", v, result(0.8, 40.0)).unwrap();
        }
        let (redis, coord) = start_with(Some(&root), tune);
        for cam in cameras {
            coord
                .add_camera(&json!({"id": cam, "url": format!("rtsp://10.0.0.2/{cam}")}))
                .unwrap();
        }
        Self {
            redis,
            coord,
            root,
            _work: work,
        }
    }

    /// `POST /v1/rollouts/default/<route>`.
    pub fn post(&self, route: &str, body: Option<Value>) -> (u16, Value) {
        let path = format!("/v1/rollouts/default/{route}");
        self.coord.api("POST", &path, body.as_ref()).unwrap()
    }

    /// A candidate of `det` on `route` (`canary`, `shadow`) at `percent`.
    pub fn candidate(&self, route: &str, version: &str, percent: u8) -> (u16, Value) {
        self.post(
            route,
            Some(json!({"model": "det", "version": version, "percent": percent})),
        )
    }

    /// The group's rollout record as stored.
    pub fn record(&self) -> ModelRollout {
        let raw: String = redis::cmd("GET")
            .arg(keys::rollout("default"))
            .query(&mut self.redis.connection().unwrap())
            .unwrap();
        ModelRollout::from_json(raw.as_bytes()).unwrap()
    }
}

/// The `error` of an API answer.
pub fn error(v: &Value) -> &str {
    v["error"].as_str().unwrap_or_default()
}
