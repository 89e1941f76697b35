//! `panoptes-models` (tool crate): offline generation of the project's own TorchScript models
//! (no download, no Python). The worker never runs this code; tests, benchmarks, the demo and
//! load runs use it to make the models the worker then loads like any other.
//!
//! - [`REFERENCE_DETECTOR`]: a detector built from tensor operations that really finds the
//!   camera simulator's objects ([`reference`](mod@reference)), `post_nms` contract.
//! - [`YOLOV8N_LIKE`]: random weights in the exact YOLOv8n topology ([`yolov8`]) for
//!   performance work, `yolo_raw` contract `[B, 84, 8400]`.
//!
//! - [`golden`]: golden sets (simulator frames with exact ground truth) for validation runs;
//!   [`variant`]: degraded copies of a model (a class dropped, or N× slower) for rollout tests.
//!
//! Both models are traced with `tch::CModule::create_by_tracing` on a one-image batch and saved with
//! their JSON manifests. Every shape in them is either fixed by the 640×640 input or left to
//! the batch dimension, so the traced modules run at any batch size.

mod error;
pub mod golden;
pub mod reference;
pub mod variant;
pub mod yolov8;

use std::path::{Path, PathBuf};

use tch::{CModule, Device, Kind, Tensor, nn};

use panoptes_workers::error::torch_message;
use panoptes_workers::model::{
    InputFormat, InputSpec, ManifestFile, ModelManifest, OutputContract,
};

pub use error::GenerateError;

/// File stem of the reference detector.
pub const REFERENCE_DETECTOR: &str = "reference-detector";
/// File stem of the YOLOv8n-like performance model.
pub const YOLOV8N_LIKE: &str = "yolov8n-like";
/// Version written into generated manifests.
pub const GENERATED_VERSION: &str = "1.0.0";
/// Input side of the generated models.
pub const INPUT_SIZE: u32 = 640;
/// Letterbox fill of the generated models (Ultralytics' 114).
pub const LETTERBOX_FILL: u8 = 114;

/// The 80 COCO class names, in YOLO order.
pub const COCO_CLASSES: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// The simulator's classes, in its class-id order (red, green, blue).
pub const SIMULATOR_CLASSES: [&str; 3] = panoptes_scene::CLASS_NAMES;

/// A generated model: where its files are and what it is.
#[derive(Debug, Clone)]
pub struct GeneratedModel {
    /// The TorchScript file.
    pub model_path: PathBuf,
    /// The manifest file.
    pub manifest_path: PathBuf,
    /// The manifest written.
    pub manifest: ModelManifest,
    /// Parameter count (0 for the parameter-free reference detector).
    pub parameters: i64,
    /// FLOPs per 640×640 image, where known.
    pub flops: Option<f64>,
}

/// The default output folder: `workers/models/`, this crate's folder (the generated `.pt` and
/// `.json` files are git-ignored), where the worker's example configurations look.
pub fn default_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The manifest of the reference detector.
pub fn reference_manifest() -> ModelManifest {
    ModelManifest {
        name: REFERENCE_DETECTOR.into(),
        version: GENERATED_VERSION.into(),
        input: input_spec(),
        output: OutputContract::PostNms,
        classes: SIMULATOR_CLASSES.iter().map(|s| s.to_string()).collect(),
        score_threshold: 0.5,
        iou_threshold: 0.5,
        max_detections: (reference::NUM_CLASSES * reference::RUNS_PER_CLASS) as usize,
        sha256: None,
        validation: Vec::new(),
    }
}

/// The manifest of the YOLOv8n-like model.
pub fn yolov8n_like_manifest() -> ModelManifest {
    ModelManifest {
        name: YOLOV8N_LIKE.into(),
        version: GENERATED_VERSION.into(),
        input: input_spec(),
        output: OutputContract::YoloRaw,
        classes: COCO_CLASSES.iter().map(|s| s.to_string()).collect(),
        score_threshold: 0.25,
        iou_threshold: 0.45,
        max_detections: 300,
        sha256: None,
        validation: Vec::new(),
    }
}

fn input_spec() -> InputSpec {
    InputSpec {
        width: INPUT_SIZE,
        height: INPUT_SIZE,
        format: InputFormat::Rgb,
        letterbox_fill: LETTERBOX_FILL,
    }
}

/// Traces `f` on a zero `[1, 3, 640, 640]` batch and saves it with `manifest` into `dir`.
fn trace_and_save(
    dir: &Path,
    manifest: ModelManifest,
    f: &dyn Fn(&Tensor) -> Tensor,
) -> Result<(PathBuf, PathBuf, ModelManifest), GenerateError> {
    std::fs::create_dir_all(dir).map_err(|source| GenerateError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let name = manifest.name.clone();
    let torch_err = |e: tch::TchError| GenerateError::Torch {
        name: name.clone(),
        message: torch_message(&e),
    };
    let example = Tensor::zeros(manifest.input_shape(1), (Kind::Float, Device::Cpu));
    let module = tch::no_grad(|| {
        let mut closure = |inputs: &[Tensor]| vec![f(&inputs[0])];
        // The module name becomes a TorchScript class name: no '-' allowed.
        let class_name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        CModule::create_by_tracing(&class_name, "forward", &[example], &mut closure)
    })
    .map_err(torch_err)?;
    let model_path = dir.join(format!("{name}.pt"));
    let manifest_path = dir.join(format!("{name}.json"));
    save(&module, &manifest, &model_path, &manifest_path)?;
    Ok((model_path, manifest_path, manifest))
}

/// Saves a TorchScript module and its manifest side by side.
pub(crate) fn save(
    module: &CModule,
    manifest: &ModelManifest,
    model_path: &Path,
    manifest_path: &Path,
) -> Result<(), GenerateError> {
    module.save(model_path).map_err(|e| GenerateError::Torch {
        name: manifest.name.clone(),
        message: torch_message(&e),
    })?;
    manifest
        .write(manifest_path)
        .map_err(|source| GenerateError::Io {
            path: manifest_path.to_path_buf(),
            source,
        })
}

/// Generates `reference-detector.pt` and `.json` in `dir`.
pub fn generate_reference(dir: &Path) -> Result<GeneratedModel, GenerateError> {
    let (model_path, manifest_path, manifest) =
        trace_and_save(dir, reference_manifest(), &reference::detect)?;
    Ok(GeneratedModel {
        model_path,
        manifest_path,
        manifest,
        parameters: 0,
        flops: None,
    })
}

/// Generates `yolov8n-like.pt` and `.json` in `dir`, weights drawn from `seed`.
pub fn generate_yolov8n_like(dir: &Path, seed: i64) -> Result<GeneratedModel, GenerateError> {
    tch::manual_seed(seed);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let net = yolov8::YoloV8nLike::new(&vs);
    vs.freeze();
    let (model_path, manifest_path, manifest) =
        trace_and_save(dir, yolov8n_like_manifest(), &|x| net.forward(x))?;
    Ok(GeneratedModel {
        model_path,
        manifest_path,
        manifest,
        parameters: net.parameters,
        flops: Some(net.flops),
    })
}

/// Generates all models into `dir`.
pub fn generate_all(dir: &Path) -> Result<Vec<GeneratedModel>, GenerateError> {
    Ok(vec![
        generate_reference(dir)?,
        generate_yolov8n_like(dir, 8)?,
    ])
}
