//! Shared test helpers: models generated once per test binary into a temp dir, and simulator
//! frames as the worker receives them (1280×720 render → 640×360 → JPEG quality 80).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use panoptes_models::{self as models, GeneratedModel};
use panoptes_scene::{self as scene, GroundTruthBox, SceneSpec};
use panoptes_testkit::fixtures;
use panoptes_workers::model::LoadedModel;
use panoptes_workers::tch::Device;

/// The generated models and the temp dir holding them (kept alive for the whole binary).
pub struct Models {
    _dir: tempfile::TempDir,
    /// Reference detector.
    pub reference: GeneratedModel,
    /// YOLOv8n-like model.
    pub yolo: GeneratedModel,
    /// The folder.
    pub path: PathBuf,
}

impl Models {
    /// The reference detector, loaded on the CPU.
    pub fn load_reference(&self) -> LoadedModel {
        let (model, manifest) = (&self.reference.model_path, &self.reference.manifest_path);
        LoadedModel::load(model, manifest, Device::Cpu).expect("reference detector loads")
    }
}

/// Generates the models on first use.
pub fn models() -> &'static Models {
    static MODELS: OnceLock<Models> = OnceLock::new();
    MODELS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let reference = models::generate_reference(dir.path()).expect("reference detector");
        let yolo = models::generate_yolov8n_like(dir.path(), 8).expect("yolov8n-like");
        Models {
            path: dir.path().to_owned(),
            _dir: dir,
            reference,
            yolo,
        }
    })
}

/// Source (camera) resolution of the simulated frames.
pub const SRC: (u32, u32) = (1280, 720);
/// Analytic resolution after the ingest node's scaling.
pub const ANALYTIC: (u32, u32) = (640, 360);

/// Renders a frame at 1280×720, halves it with a 2×2 box filter and JPEG-encodes it at
/// quality 80 (4:2:0), as an ingest node would publish it. Returns the JPEG and the ground
/// truth scaled to 640×360.
pub fn simulator_frame(
    spec: &SceneSpec,
    camera: &str,
    index: u64,
) -> (Vec<u8>, Vec<GroundTruthBox>) {
    let mut rgb = Vec::new();
    scene::render_rgb(spec, camera, index, &mut rgb);
    let (w, h) = (spec.width as usize, spec.height as usize);
    let jpeg = fixtures::encode_jpeg(&fixtures::halve_rgb(&rgb, w, h), w / 2, h / 2, 80);
    let truth = scene::ground_truth(spec, camera, index)
        .into_iter()
        .map(|b| GroundTruthBox {
            x1: b.x1 / 2.0,
            y1: b.y1 / 2.0,
            x2: b.x2 / 2.0,
            y2: b.y2 / 2.0,
            ..b
        })
        .collect();
    (jpeg, truth)
}

pub mod node;
