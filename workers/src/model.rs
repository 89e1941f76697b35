//! Model manifests and loaded TorchScript models.
//!
//! A model is a pair of files: a TorchScript file (`*.pt`) and a JSON manifest next to it that
//! says what the model expects and what it returns. [`LoadedModel::load`] refuses a model whose
//! files are missing, whose TorchScript cannot be loaded, whose manifest is invalid, or whose
//! output (checked with a warm-up pass on a zero batch) contradicts the manifest's contract.
//!
//! Input, for every model: `float32` NCHW RGB in `[0, 1]`, letterboxed to
//! `input.width × input.height` (scaled to fit keeping the aspect ratio, padded with
//! `letterbox_fill / 255`), see [`crate::preprocess`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{CModule, Device, Kind, Tensor};

use crate::error::{ModelError, torch_message};

/// Pixel layout of a model's input tensor (only RGB is defined).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// Channels R, G, B in that order, values in `[0, 1]`.
    Rgb,
}

/// The input a model expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Input width in pixels.
    pub width: u32,
    /// Input height in pixels.
    pub height: u32,
    /// Channel layout.
    pub format: InputFormat,
    /// Gray level (0..=255) of the letterbox padding.
    pub letterbox_fill: u8,
}

/// What a model's output tensor means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutputContract {
    /// `[B, N, 6]` rows `x1, y1, x2, y2, score, class` in input pixels, already filtered and
    /// de-duplicated by the model; rows with score 0 are padding.
    PostNms,
    /// `[B, 4 + C, N]`: per candidate `cx, cy, w, h` in input pixels then `C` class scores
    /// in `[0, 1]`; the worker applies the threshold and class-aware NMS.
    YoloRaw,
}

impl OutputContract {
    /// The manifest spelling (`post_nms` / `yolo_raw`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PostNms => "post_nms",
            Self::YoloRaw => "yolo_raw",
        }
    }
}

/// The JSON manifest that accompanies every TorchScript model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// Model name, e.g. `"reference-detector"`.
    pub name: String,
    /// Model version, e.g. `"1.0.0"`.
    pub version: String,
    /// The input the model expects.
    pub input: InputSpec,
    /// The output contract.
    pub output: OutputContract,
    /// Class names by class id.
    pub classes: Vec<String>,
    /// Detections scoring below this are dropped.
    pub score_threshold: f32,
    /// IoU above which NMS suppresses the lower-scoring box of the same class.
    pub iou_threshold: f32,
    /// At most this many detections per image are reported.
    pub max_detections: usize,
}

impl ModelManifest {
    /// Reads and validates a manifest file.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = read_to_string(path)?;
        let manifest: Self =
            serde_json::from_str(&text).map_err(|e| ModelError::ManifestParse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Writes the manifest as pretty JSON.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, json + "\n")
    }

    /// Checks the values (sizes, thresholds, class list) for consistency.
    pub fn validate(&self) -> Result<(), ModelError> {
        let invalid = |problem: String| ModelError::ManifestInvalid {
            model: self.name.clone(),
            problem,
        };
        if self.name.trim().is_empty() {
            return Err(invalid("`name` is empty".into()));
        }
        if self.version.trim().is_empty() {
            return Err(invalid("`version` is empty".into()));
        }
        let (w, h) = (self.input.width, self.input.height);
        if !(8..=8192).contains(&w) || !(8..=8192).contains(&h) {
            return Err(invalid(format!(
                "input size {w}x{h} outside 8..=8192 pixels"
            )));
        }
        if self.classes.is_empty() {
            return Err(invalid("`classes` is empty".into()));
        }
        if let Some(i) = self.classes.iter().position(|c| c.trim().is_empty()) {
            return Err(invalid(format!("class {i} has an empty name")));
        }
        if !(0.0..=1.0).contains(&self.score_threshold) {
            return Err(invalid(format!(
                "score_threshold {} outside [0, 1]",
                self.score_threshold
            )));
        }
        if !(0.0..=1.0).contains(&self.iou_threshold) || self.iou_threshold == 0.0 {
            return Err(invalid(format!(
                "iou_threshold {} outside (0, 1]",
                self.iou_threshold
            )));
        }
        if self.max_detections == 0 {
            return Err(invalid("max_detections is 0".into()));
        }
        Ok(())
    }

    /// The expected input shape for a batch of `batch` images: `[batch, 3, height, width]`.
    pub fn input_shape(&self, batch: usize) -> [i64; 4] {
        [
            batch as i64,
            3,
            i64::from(self.input.height),
            i64::from(self.input.width),
        ]
    }

    /// Checks an output shape against the contract; `batch` is the input batch size.
    pub fn check_output_shape(&self, shape: &[i64], batch: i64) -> Result<(), ModelError> {
        let (ok, expected) = match self.output {
            OutputContract::PostNms => (
                shape.len() == 3 && shape[0] == batch && shape[1] >= 1 && shape[2] == 6,
                format!("[{batch}, N, 6] with N >= 1"),
            ),
            OutputContract::YoloRaw => {
                let rows = 4 + self.classes.len() as i64;
                (
                    shape.len() == 3 && shape[0] == batch && shape[1] == rows && shape[2] >= 1,
                    format!(
                        "[{batch}, {rows}, N] = [B, 4 + {} classes, N]",
                        self.classes.len()
                    ),
                )
            }
        };
        if ok {
            Ok(())
        } else {
            Err(ModelError::OutputShape {
                model: self.name.clone(),
                contract: self.output.as_str(),
                expected,
                actual: shape.to_vec(),
            })
        }
    }
}

/// A TorchScript model loaded on a device, with its manifest, checked and warmed up.
#[derive(Debug)]
pub struct LoadedModel {
    module: CModule,
    manifest: ModelManifest,
    device: Device,
    path: PathBuf,
}

impl LoadedModel {
    /// Loads `model_path` on `device`, validates `manifest_path`, runs a warm-up forward pass
    /// on a zero batch of one image and checks its output against the manifest's contract.
    pub fn load(
        model_path: &Path,
        manifest_path: &Path,
        device: Device,
    ) -> Result<Self, ModelError> {
        for path in [model_path, manifest_path] {
            if !path.exists() {
                return Err(ModelError::MissingFile {
                    path: path.to_owned(),
                });
            }
        }
        let manifest = ModelManifest::from_file(manifest_path)?;
        // Read the bytes ourselves so an I/O failure is told apart from a corrupt file.
        let bytes = std::fs::read(model_path).map_err(|source| ModelError::Io {
            path: model_path.to_owned(),
            source,
        })?;
        let mut module =
            CModule::load_data_on_device(&mut bytes.as_slice(), device).map_err(|e| {
                ModelError::Unloadable {
                    path: model_path.to_owned(),
                    message: torch_message(&e),
                }
            })?;
        module.set_eval();
        let model = Self {
            module,
            manifest,
            device,
            path: model_path.to_owned(),
        };
        let zeros = Tensor::zeros(model.manifest.input_shape(1), (Kind::Float, device));
        let _warm_up = model.forward(&zeros)?;
        Ok(model)
    }

    /// Runs the model on `batch` (`[B, 3, height, width]` float32 on any device; it is moved
    /// to the model's device) without gradient tracking and checks the output shape.
    pub fn forward(&self, batch: &Tensor) -> Result<Tensor, ModelError> {
        let shape = batch.size();
        let batch_size = shape.first().copied().unwrap_or(0);
        let expected = self.manifest.input_shape(batch_size.max(1) as usize);
        if shape.len() != 4 || batch_size < 1 || shape[1..] != expected[1..] {
            return Err(ModelError::InputShape {
                model: self.manifest.name.clone(),
                expected: format!(
                    "[B, 3, {}, {}]",
                    self.manifest.input.height, self.manifest.input.width
                ),
                actual: shape,
            });
        }
        let output = tch::no_grad(|| {
            let input = batch.to_device(self.device).to_kind(Kind::Float);
            self.module.forward_ts(&[input])
        })
        .map_err(|e| ModelError::Inference {
            model: self.manifest.name.clone(),
            message: torch_message(&e),
        })?;
        self.manifest
            .check_output_shape(&output.size(), batch_size)?;
        Ok(output)
    }

    /// The model's manifest.
    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// The TorchScript file it was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn read_to_string(path: &Path) -> Result<String, ModelError> {
    std::fs::read_to_string(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ModelError::MissingFile {
                path: path.to_owned(),
            }
        } else {
            ModelError::Io {
                path: path.to_owned(),
                source,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(output: OutputContract) -> ModelManifest {
        ModelManifest {
            name: "m".into(),
            version: "1".into(),
            input: InputSpec {
                width: 64,
                height: 32,
                format: InputFormat::Rgb,
                letterbox_fill: 114,
            },
            output,
            classes: vec!["a".into(), "b".into()],
            score_threshold: 0.25,
            iou_threshold: 0.45,
            max_detections: 100,
        }
    }

    #[test]
    fn output_shape_contracts() {
        let m = manifest(OutputContract::YoloRaw);
        assert!(m.check_output_shape(&[2, 6, 100], 2).is_ok());
        let err = m.check_output_shape(&[2, 84, 100], 2).unwrap_err();
        assert!(err.to_string().contains("[2, 6, N]"), "{err}");
        let m = manifest(OutputContract::PostNms);
        assert!(m.check_output_shape(&[1, 10, 6], 1).is_ok());
        assert!(m.check_output_shape(&[1, 6, 10], 1).is_err());
        assert!(m.check_output_shape(&[2, 10, 6], 1).is_err());
    }

    #[test]
    fn manifest_rejects_unknown_fields_and_bad_values() {
        let json = serde_json::to_value(manifest(OutputContract::PostNms)).unwrap();
        let mut extra = json.clone();
        extra["colour"] = "blue".into();
        assert!(serde_json::from_value::<ModelManifest>(extra).is_err());
        let mut bad = json;
        bad["output"] = "boxes".into();
        assert!(serde_json::from_value::<ModelManifest>(bad).is_err());
        let mut m = manifest(OutputContract::PostNms);
        m.score_threshold = 2.0;
        assert!(matches!(
            m.validate(),
            Err(ModelError::ManifestInvalid { .. })
        ));
        m = manifest(OutputContract::PostNms);
        m.classes.clear();
        assert!(m.validate().is_err());
    }
}
