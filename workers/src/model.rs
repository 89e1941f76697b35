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

use tch::{CModule, Device, Kind, Tensor};

use crate::error::{ModelError, torch_message};

pub use panoptes_schemas::model::{
    InputFormat, InputSpec, ModelManifest, ModelSpecError, OutputContract, ValidationResult,
};

/// Reading and writing manifest files (the types themselves live in
/// [`panoptes_schemas::model`], which does no I/O).
pub trait ManifestFile: Sized {
    /// Reads and validates a manifest file.
    fn from_file(path: &Path) -> Result<Self, ModelError>;
    /// Writes the manifest as pretty JSON.
    fn write(&self, path: &Path) -> std::io::Result<()>;
}

impl ManifestFile for ModelManifest {
    fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = read_to_string(path)?;
        let manifest: Self =
            serde_json::from_str(&text).map_err(|e| ModelError::ManifestParse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_json_pretty())
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

    #[test]
    fn spec_errors_become_model_errors() {
        let err: ModelError = ModelSpecError::Invalid {
            model: "m".into(),
            problem: "p".into(),
        }
        .into();
        assert!(matches!(
            err,
            ModelError::Spec(ModelSpecError::Invalid { .. })
        ));
        assert!(err.is_fatal());
    }

    #[test]
    fn manifest_file_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            ModelManifest::from_file(&path),
            Err(ModelError::ManifestParse { .. })
        ));
        assert!(matches!(
            ModelManifest::from_file(&dir.path().join("none.json")),
            Err(ModelError::MissingFile { .. })
        ));
    }
}
