//! Validation runs: a model's precision, recall and forward latency on a golden set, measured
//! on the device class it will serve on, as a [`ValidationResult`] for its manifest.
//!
//! Contract of [`run`]:
//! - frames go through exactly the worker's path: [`InputBatch::set_jpeg`] (JPEG decode and
//!   letterbox), [`LoadedModel::forward`] in batches of `batch`, [`decode_output`] (the
//!   manifest's contract, score threshold, NMS, cap) and [`to_detections`] (back to frame
//!   pixels, labels), so the result measures what the worker would publish;
//! - detections are matched per class at IoU ≥ 0.5 ([`matching`]); precision and recall are
//!   over all objects of all frames;
//! - latency is the p99 (nearest rank) of `latency_passes` timed forward passes at `batch`
//!   images, after [`WARM_UP_PASSES`] untimed ones; a pass is the forward call plus the copy
//!   of its output to the CPU (which waits for the device), as the infer stage does;
//! - the result is raw measurement: thresholds are the coordinator gate's business.
//!
//! Pure parts ([`matching`], [`golden`]'s checks) are apart from the I/O here.

pub mod golden;
pub mod matching;

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use panoptes_schemas::model::ValidationResult;
use tch::{Device, Kind};

use crate::error::{ModelError, PreprocessError};
use crate::model::LoadedModel;
use crate::postprocess::{decode_output, to_detections};
use crate::preprocess::{InputBatch, Letterbox};

pub use golden::{GoldenFrame, GoldenIndex, GoldenObject, GoldenSet};
pub use matching::{Counts, LabelledBox, Tally};

/// Untimed forward passes before latency is measured.
pub const WARM_UP_PASSES: usize = 3;

/// Why a validation run failed.
#[derive(Debug, thiserror::Error)]
pub enum ValidateError {
    /// Reading or writing a file failed.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The golden set is malformed.
    #[error("golden set {dir}: {problem}")]
    Golden {
        /// Its directory.
        dir: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// A golden frame does not decode, or has another size than its index says.
    #[error("golden frame {file}: {source}")]
    Frame {
        /// The JPEG file name.
        file: String,
        /// The decode error.
        #[source]
        source: PreprocessError,
    },
    /// Loading or running the model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// Bad options (batch 0, no latency passes).
    #[error("invalid options: {0}")]
    Options(String),
}

/// How to run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Images per forward pass (accuracy and latency).
    pub batch: usize,
    /// Timed forward passes for the latency figure.
    pub latency_passes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            batch: 8,
            latency_passes: 30,
        }
    }
}

/// A run's outcome: the manifest record and the detail behind it.
#[derive(Debug, Clone)]
pub struct Report {
    /// What goes into the manifest.
    pub result: ValidationResult,
    /// Counts, total and per class.
    pub tally: Tally,
    /// Every timed pass, milliseconds.
    pub latencies_ms: Vec<f64>,
}

/// The device class recorded in a result: `"cpu"` or `"cuda"` (the kind, not the index).
pub fn device_class(device: Device) -> &'static str {
    match device {
        Device::Cuda(_) => "cuda",
        _ => "cpu",
    }
}

/// Runs `model` over `golden` and measures its latency; see the module docs.
pub fn run(
    model: &LoadedModel,
    golden: &GoldenSet,
    opts: Options,
) -> Result<Report, ValidateError> {
    if opts.batch == 0 || opts.latency_passes == 0 {
        return Err(ValidateError::Options(format!(
            "batch {} and latency passes {} must be at least 1",
            opts.batch, opts.latency_passes
        )));
    }
    let tally = accuracy(model, golden, opts.batch)?;
    let latencies_ms = latency(model, golden, opts)?;
    let result = ValidationResult {
        device_class: device_class(model.device()).into(),
        golden_set: golden.id.clone(),
        frames: tally.frames,
        precision: tally.total.precision(),
        recall: tally.total.recall(),
        latency_p99_ms: matching::quantile(&latencies_ms, 0.99),
        batch: opts.batch as u32,
        measured_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    };
    Ok(Report {
        result,
        tally,
        latencies_ms,
    })
}

/// Decodes and letterboxes frame `i` into `slot`, checking its size against the index.
fn load_frame(
    golden: &GoldenSet,
    batch: &mut InputBatch,
    slot: usize,
    i: usize,
) -> Result<Letterbox, ValidateError> {
    let frame = &golden.index.frames[i];
    let jpeg = golden.read_frame(i)?;
    batch
        .set_jpeg_sized(slot, &jpeg, (frame.width, frame.height))
        .map_err(|source| ValidateError::Frame {
            file: frame.file.clone(),
            source,
        })
}

fn accuracy(model: &LoadedModel, golden: &GoldenSet, batch: usize) -> Result<Tally, ValidateError> {
    let manifest = model.manifest();
    let mut input = InputBatch::for_manifest(manifest, batch);
    let mut tally = Tally::default();
    let frames = &golden.index.frames;
    for start in (0..frames.len()).step_by(batch) {
        let n = batch.min(frames.len() - start);
        let mut boxes = Vec::with_capacity(n);
        for slot in 0..n {
            boxes.push(load_frame(golden, &mut input, slot, start + slot)?);
        }
        let output = model.forward(&input.to_tensor(n))?;
        let raw = decode_output(manifest, &output)?;
        for (slot, (dets, lb)) in raw.iter().zip(&boxes).enumerate() {
            let detections: Vec<LabelledBox> = to_detections(dets, lb, &manifest.classes)
                .into_iter()
                .map(|d| LabelledBox {
                    class: d.label,
                    bbox: d.bbox,
                    score: d.score,
                })
                .collect();
            let truth: Vec<LabelledBox> = frames[start + slot]
                .objects
                .iter()
                .map(GoldenObject::to_box)
                .collect();
            tally.add_frame(&truth, &detections);
        }
    }
    Ok(tally)
}

fn latency(
    model: &LoadedModel,
    golden: &GoldenSet,
    opts: Options,
) -> Result<Vec<f64>, ValidateError> {
    let mut input = InputBatch::for_manifest(model.manifest(), opts.batch);
    let frames = golden.index.frames.len();
    for slot in 0..opts.batch {
        load_frame(golden, &mut input, slot, slot % frames)?;
    }
    let tensor = input.to_tensor(opts.batch);
    let pass = || -> Result<f64, ValidateError> {
        let t = Instant::now();
        let output = model.forward(&tensor)?;
        // Copying the output back waits for the device, as the infer stage's decode does.
        let _host = output.to_device(Device::Cpu).to_kind(Kind::Float);
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    for _ in 0..WARM_UP_PASSES {
        pass()?;
    }
    (0..opts.latency_passes).map(|_| pass()).collect()
}
