//! Deliberately degraded variants of an existing TorchScript model, for rollout tests.
//!
//! A variant wraps the source module in a new traced module (the source's operations are
//! recorded into it, its weights become constants) and changes exactly one thing:
//!
//! - [`Degradation::DropClass`]: the named class's score is multiplied by 0 (`post_nms`: the
//!   score column of rows of that class; `yolo_raw`: that class's score row), so the model
//!   never reports it and everything else is bit-identical;
//! - [`Degradation::Slow`]: the source runs `factor` times per forward pass (the extra runs
//!   on slightly rescaled inputs so nothing is de-duplicated) and the sum of the extra outputs
//!   times 0 is added to the real output, so the work cannot be dropped as dead code while
//!   the output stays identical (as long as the source's outputs are finite);
//! - [`Degradation::FailOnFrames`]: the forward pass fails (an index out of range) on any
//!   input that is not all zeros, and is the source's otherwise: it loads, passes the
//!   contract check and the warm-up (zeros), and breaks on the first real frame, the way a
//!   model with a data-dependent bug does.
//!
//! The variant is written in the repository's version layout: `model.pt` and
//! `manifest.json` (the source's manifest with the new version, no `sha256`, no validation
//! results) in the output folder.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use tch::{CModule, Device, Kind, Tensor};

use panoptes_workers::error::torch_message;
use panoptes_workers::model::{ModelManifest, OutputContract};

use crate::GenerateError;

/// How a variant is worse than its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Degradation {
    /// Never reports this class.
    DropClass(String),
    /// Does `factor` times the work, same output.
    Slow(u32),
    /// Fails on every input but zeros.
    FailOnFrames,
}

impl Degradation {
    /// A version suffix describing it: `no-<class>`, `slow<factor>` or `fails`.
    pub fn suffix(&self) -> String {
        match self {
            Self::DropClass(c) => {
                let c: String = c
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                    .collect();
                format!("no-{c}")
            }
            Self::Slow(f) => format!("slow{f}"),
            Self::FailOnFrames => "fails".into(),
        }
    }
}

/// A generated variant: its files and manifest.
#[derive(Debug, Clone)]
pub struct Variant {
    /// `<out>/model.pt`.
    pub model_path: PathBuf,
    /// `<out>/manifest.json`.
    pub manifest_path: PathBuf,
    /// The manifest written.
    pub manifest: ModelManifest,
}

/// Builds a degraded copy of `model_path` (described by `manifest`) into `out` with
/// `version` (default: `<source version>-<suffix>`).
pub fn generate_variant(
    model_path: &Path,
    manifest: &ModelManifest,
    degradation: &Degradation,
    out: &Path,
    version: Option<&str>,
) -> Result<Variant, GenerateError> {
    let torch_err = |e: tch::TchError| GenerateError::Torch {
        name: manifest.name.clone(),
        message: torch_message(&e),
    };
    let invalid = |message: String| GenerateError::Golden { message };
    let source = CModule::load_on_device(model_path, Device::Cpu).map_err(torch_err)?;
    // Weights become constants of the traced module: they must not require gradients.
    for (_, p) in source.named_parameters().map_err(torch_err)? {
        let _ = p.set_requires_grad(false);
    }
    let rows = match manifest.output {
        OutputContract::PostNms => 6,
        OutputContract::YoloRaw => 4 + manifest.classes.len() as i64,
    };
    let class_id = match degradation {
        Degradation::DropClass(c) => Some(
            manifest
                .classes
                .iter()
                .position(|k| k == c)
                .ok_or_else(|| invalid(format!("class {c:?} is not in {:?}", manifest.classes)))?
                as i64,
        ),
        Degradation::Slow(f) if *f < 2 => {
            return Err(invalid(format!("slow factor {f} must be at least 2")));
        }
        Degradation::Slow(_) | Degradation::FailOnFrames => None,
    };
    let failure: RefCell<Option<tch::TchError>> = RefCell::new(None);
    let run = |x: &Tensor| match source.forward_ts(&[x.shallow_clone()]) {
        Ok(t) => t,
        Err(e) => {
            failure.borrow_mut().replace(e);
            Tensor::zeros([1, rows, 1], (Kind::Float, Device::Cpu))
        }
    };
    let forward = |x: &Tensor| -> Tensor {
        let out = run(x);
        match (degradation, class_id) {
            (Degradation::DropClass(_), Some(k)) => match manifest.output {
                OutputContract::PostNms => {
                    let keep = out.select(2, 5).round().ne(k as f64).to_kind(Kind::Float);
                    let score = out.select(2, 4) * keep;
                    Tensor::cat(
                        &[out.narrow(2, 0, 4), score.unsqueeze(2), out.narrow(2, 5, 1)],
                        2,
                    )
                }
                OutputContract::YoloRaw => {
                    let mut mask = vec![1.0f32; rows as usize];
                    mask[4 + k as usize] = 0.0;
                    out * Tensor::from_slice(&mask).view([1, rows, 1])
                }
            },
            (Degradation::Slow(factor), _) => {
                let mut extra = Tensor::from(0f32);
                for i in 1..*factor {
                    let scaled = x * (1.0 - 1e-3 * f64::from(i));
                    extra += run(&scaled).sum(Kind::Float);
                }
                out + extra * 0.0
            }
            (Degradation::FailOnFrames, _) => {
                // Index 0 of a one-element tensor for zeros; far out of range otherwise.
                let index = (x.abs().max() * 1e9).to_kind(Kind::Int64).reshape([1]);
                let probe = Tensor::zeros([1], (Kind::Float, Device::Cpu)).index_select(0, &index);
                out + probe.sum(Kind::Float) * 0.0
            }
            _ => out,
        }
    };
    let example = Tensor::zeros(manifest.input_shape(1), (Kind::Float, Device::Cpu));
    let class_name: String = format!("{}_{}", manifest.name, degradation.suffix())
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let module = tch::no_grad(|| {
        let mut closure = |inputs: &[Tensor]| vec![forward(&inputs[0])];
        CModule::create_by_tracing(&class_name, "forward", &[example], &mut closure)
    })
    .map_err(torch_err)?;
    if let Some(e) = failure.into_inner() {
        return Err(torch_err(e));
    }
    std::fs::create_dir_all(out).map_err(|source| GenerateError::Io {
        path: out.to_owned(),
        source,
    })?;
    let mut manifest = manifest.clone();
    manifest.version = match version {
        Some(v) => v.to_owned(),
        None => format!("{}-{}", manifest.version, degradation.suffix()),
    };
    manifest.sha256 = None;
    manifest.validation.clear();
    let model_path = out.join("model.pt");
    let manifest_path = out.join("manifest.json");
    crate::save(&module, &manifest, &model_path, &manifest_path)?;
    Ok(Variant {
        model_path,
        manifest_path,
        manifest,
    })
}
