//! Fixture of the model tests (`models.rs`, `canary.rs`): a repository's manifests and
//! validation results, and a real coordinator process with a `[models]` section.

use std::path::Path;
use std::time::Duration;

use panoptes_coordinator::api::models::ModelsConfig;
use panoptes_schemas::model::{
    InputFormat, InputSpec, ModelManifest, OutputContract, ValidationResult,
};
use panoptes_testkit::coordinator::{Coordinator, config};

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
