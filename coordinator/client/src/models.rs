//! The model repository: versioned, integrity-checked TorchScript models in a directory.
//!
//! Layout (a directory; a volume in Kubernetes):
//!
//! ```text
//! <repository>/<name>/<version>/model.pt
//! <repository>/<name>/<version>/manifest.json   (name, version and sha256 set)
//! ```
//!
//! Contract:
//! - names and versions follow [`validate_model_name`] (`[A-Za-z0-9._-]{1,64}`, no leading
//!   `.`), so a name can never leave the repository (`..`, `/`) and temporary entries (which
//!   start with `.`) are never listed;
//! - [`ModelRepository::resolve`] reads the manifest, checks that its `name` and `version`
//!   are those of its path and that `sha256` is set, recomputes the SHA-256 of `model.pt` and
//!   refuses a mismatch ([`ModelRepoError::Integrity`]). Every load from a repository goes
//!   through it;
//! - [`ModelRepository::push`] copies a model in atomically (a temporary directory renamed
//!   into place), filling in `sha256`; pushing the same bytes again is a no-op, different
//!   bytes under an existing version are refused ([`ModelRepoError::Conflict`]): a version
//!   is immutable once pushed, only its validation results change;
//! - [`ModelRepository::record_validation`] replaces the result with the same (device class,
//!   golden set) or appends one, rewriting the manifest atomically (temporary file + rename).
//!   Two concurrent recorders on one version: the last rename wins.
//!
//! Blocking file I/O: call it from a blocking thread (`spawn_blocking`) in async code.

use std::cmp::Ordering;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use panoptes_schemas::model::{ModelManifest, ValidationResult, validate_model_name};
use sha2::{Digest, Sha256};

/// File name of the TorchScript model inside a version directory.
pub const MODEL_FILE: &str = "model.pt";
/// File name of the manifest inside a version directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Why a repository operation failed. Messages name the path or model at fault.
#[derive(Debug, thiserror::Error)]
pub enum ModelRepoError {
    /// The repository directory does not exist or is not a directory.
    #[error("model repository {path} does not exist or is not a directory")]
    NoRepository {
        /// The configured path.
        path: PathBuf,
    },
    /// A model name or version breaks the naming rule.
    #[error("bad model name: {0}")]
    BadName(String),
    /// No such model or version in the repository.
    #[error("model {name}@{version} is not in the repository")]
    NotFound {
        /// Model name.
        name: String,
        /// Version (`*` when the model itself is missing).
        version: String,
    },
    /// Reading or writing a file failed.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A manifest cannot be parsed, is invalid, or contradicts its place in the repository.
    #[error("manifest {path}: {problem}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// `model.pt` does not hash to the manifest's `sha256`: tampered with or corrupted.
    #[error(
        "integrity check failed for {name}@{version}: {path} has sha256 {actual}, the manifest says {expected}"
    )]
    Integrity {
        /// Model name.
        name: String,
        /// Version.
        version: String,
        /// The model file.
        path: PathBuf,
        /// The manifest's `sha256`.
        expected: String,
        /// What the file hashes to.
        actual: String,
    },
    /// The version exists with different model bytes; versions are immutable.
    #[error(
        "model {name}@{version} already exists with sha256 {existing}; refusing to overwrite it with {pushed} (push a new version)"
    )]
    Conflict {
        /// Model name.
        name: String,
        /// Version.
        version: String,
        /// SHA-256 of the stored model.
        existing: String,
        /// SHA-256 of the pushed model.
        pushed: String,
    },
}

/// A model version found in the repository and checked ([`ModelRepository::resolve`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedModel {
    /// `<repository>/<name>/<version>/model.pt`.
    pub model_path: PathBuf,
    /// `<repository>/<name>/<version>/manifest.json`.
    pub manifest_path: PathBuf,
    /// The manifest, validated, with `sha256` matching the model file.
    pub manifest: ModelManifest,
}

/// A model repository directory. Cheap to clone; holds no open files.
#[derive(Debug, Clone)]
pub struct ModelRepository {
    root: PathBuf,
}

impl ModelRepository {
    /// Opens an existing repository directory.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ModelRepoError> {
        let root = dir.into();
        if !root.is_dir() {
            return Err(ModelRepoError::NoRepository { path: root });
        }
        Ok(Self { root })
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every model with its versions (sorted, numeric parts compared as numbers: `1.9` before
    /// `1.10`), models sorted by name. Entries with invalid names (temporary directories
    /// included) and version directories without a manifest are skipped.
    pub fn list(&self) -> Result<Vec<(String, Vec<String>)>, ModelRepoError> {
        let mut models = Vec::new();
        for name in valid_subdirs(&self.root)? {
            let dir = self.root.join(&name);
            let mut versions: Vec<String> = valid_subdirs(&dir)?
                .into_iter()
                .filter(|v| dir.join(v).join(MANIFEST_FILE).is_file())
                .collect();
            versions.sort_by(|a, b| version_cmp(a, b));
            models.push((name, versions));
        }
        models.sort();
        Ok(models)
    }

    /// The directory of a version, after checking both names.
    pub fn version_dir(&self, name: &str, version: &str) -> Result<PathBuf, ModelRepoError> {
        validate_model_name("model name", name).map_err(ModelRepoError::BadName)?;
        validate_model_name("model version", version).map_err(ModelRepoError::BadName)?;
        Ok(self.root.join(name).join(version))
    }

    /// Reads and checks a version's manifest (name, version, `sha256` present) without
    /// hashing the model file: for listings. Loading goes through [`Self::resolve`].
    pub fn manifest(&self, name: &str, version: &str) -> Result<ModelManifest, ModelRepoError> {
        let dir = self.version_dir(name, version)?;
        if !dir.is_dir() {
            return Err(ModelRepoError::NotFound {
                name: name.into(),
                version: if self.root.join(name).is_dir() {
                    version.into()
                } else {
                    "*".into()
                },
            });
        }
        let path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).map_err(|source| io(&path, source))?;
        let manifest = ModelManifest::from_json(&text).map_err(|e| manifest_err(&path, e))?;
        if manifest.name != name || manifest.version != version {
            return Err(manifest_err(
                &path,
                format!(
                    "says {}@{} but lies under {name}/{version}",
                    manifest.name, manifest.version
                ),
            ));
        }
        if manifest.sha256.is_none() {
            return Err(manifest_err(
                &path,
                "has no `sha256`, required inside a repository",
            ));
        }
        Ok(manifest)
    }

    /// Finds a version, checks its manifest and the SHA-256 of its model file.
    pub fn resolve(&self, name: &str, version: &str) -> Result<ResolvedModel, ModelRepoError> {
        let manifest = self.manifest(name, version)?;
        let dir = self.version_dir(name, version)?;
        let model_path = dir.join(MODEL_FILE);
        let actual = sha256_file(&model_path)?;
        let expected = manifest.sha256.clone().unwrap_or_default();
        if actual != expected {
            return Err(ModelRepoError::Integrity {
                name: name.into(),
                version: version.into(),
                path: model_path,
                expected,
                actual,
            });
        }
        Ok(ResolvedModel {
            model_path,
            manifest_path: dir.join(MANIFEST_FILE),
            manifest,
        })
    }

    /// Copies `model_pt` in under `manifest.name` / `manifest.version`, filling in `sha256`
    /// (a `sha256` already set must match the file). Same bytes again: returns the stored
    /// version unchanged (its validation results kept). Different bytes: [`ModelRepoError::Conflict`].
    pub fn push(
        &self,
        model_pt: &Path,
        manifest: &ModelManifest,
    ) -> Result<ResolvedModel, ModelRepoError> {
        let (name, version) = (manifest.name.as_str(), manifest.version.as_str());
        let target = self.version_dir(name, version)?;
        manifest
            .validate()
            .map_err(|e| manifest_err(Path::new("(pushed manifest)"), e))?;
        let pushed = sha256_file(model_pt)?;
        if let Some(claimed) = &manifest.sha256
            && *claimed != pushed
        {
            return Err(ModelRepoError::Integrity {
                name: name.into(),
                version: version.into(),
                path: model_pt.to_owned(),
                expected: claimed.clone(),
                actual: pushed,
            });
        }
        if target.exists() {
            return self.existing(name, version, pushed);
        }
        let model_dir = self.root.join(name);
        fs::create_dir_all(&model_dir).map_err(|source| io(&model_dir, source))?;
        let tmp = model_dir.join(format!(".push-{version}-{}", unique_suffix()));
        let staged = stage(&tmp, model_pt, manifest, &pushed);
        if let Err(e) = staged {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if let Err(source) = fs::rename(&tmp, &target) {
            let _ = fs::remove_dir_all(&tmp);
            // Lost a race with another push of the same version: judge by its bytes.
            if target.exists() {
                return self.existing(name, version, pushed);
            }
            return Err(io(&target, source));
        }
        sync_dir(&model_dir);
        self.resolve(name, version)
    }

    /// [`Self::push`] with the manifest read from a JSON file.
    pub fn push_files(
        &self,
        model_pt: &Path,
        manifest_json: &Path,
    ) -> Result<ResolvedModel, ModelRepoError> {
        let text = fs::read_to_string(manifest_json).map_err(|source| io(manifest_json, source))?;
        let manifest =
            ModelManifest::from_json(&text).map_err(|e| manifest_err(manifest_json, e))?;
        self.push(model_pt, &manifest)
    }

    /// Records a validation result on a version (after an integrity check): replaces the one
    /// with the same (device class, golden set) or appends it; atomic manifest rewrite.
    pub fn record_validation(
        &self,
        name: &str,
        version: &str,
        result: ValidationResult,
    ) -> Result<ModelManifest, ModelRepoError> {
        let resolved = self.resolve(name, version)?;
        result
            .validate()
            .map_err(|p| manifest_err(&resolved.manifest_path, p))?;
        let mut manifest = resolved.manifest;
        manifest.record_validation(result);
        write_atomically(
            &resolved.manifest_path,
            manifest.to_json_pretty().as_bytes(),
        )?;
        Ok(manifest)
    }

    fn existing(
        &self,
        name: &str,
        version: &str,
        pushed: String,
    ) -> Result<ResolvedModel, ModelRepoError> {
        let stored = self.resolve(name, version)?;
        let existing = stored.manifest.sha256.clone().unwrap_or_default();
        if existing == pushed {
            Ok(stored)
        } else {
            Err(ModelRepoError::Conflict {
                name: name.into(),
                version: version.into(),
                existing,
                pushed,
            })
        }
    }
}

/// Lowercase hex SHA-256 of a file, read in 1 MiB chunks.
pub fn sha256_file(path: &Path) -> Result<String, ModelRepoError> {
    let mut file = fs::File::open(path).map_err(|source| io(path, source))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|source| io(path, source))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Orders versions segment by segment (split at `.`, `-`, `_`), numerically where both
/// segments are numbers, else as text: `1.2` < `1.10` < `2`.
pub fn version_cmp(a: &str, b: &str) -> Ordering {
    let split = |s: &str| -> Vec<String> {
        s.split(['.', '-', '_'])
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (sa, sb) = (split(a), split(b));
    for (x, y) in sa.iter().zip(&sb) {
        let ord = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            _ => x.cmp(y),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    sa.len().cmp(&sb.len()).then_with(|| a.cmp(b))
}

fn stage(
    tmp: &Path,
    model_pt: &Path,
    manifest: &ModelManifest,
    sha256: &str,
) -> Result<(), ModelRepoError> {
    fs::create_dir(tmp).map_err(|source| io(tmp, source))?;
    let model = tmp.join(MODEL_FILE);
    fs::copy(model_pt, &model).map_err(|source| io(&model, source))?;
    fs::File::open(&model)
        .and_then(|f| f.sync_all())
        .map_err(|source| io(&model, source))?;
    // The copy is what is stored: hash it again, so a file changed while copying is caught.
    let copied = sha256_file(&model)?;
    if copied != sha256 {
        return Err(ModelRepoError::Integrity {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
            path: model_pt.to_owned(),
            expected: sha256.to_owned(),
            actual: copied,
        });
    }
    let mut stored = manifest.clone();
    stored.sha256 = Some(sha256.to_owned());
    let path = tmp.join(MANIFEST_FILE);
    write_synced(&path, stored.to_json_pretty().as_bytes())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ModelRepoError> {
    let mut file = fs::File::create(path).map_err(|source| io(path, source))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| io(path, source))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ModelRepoError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".manifest-{}", unique_suffix()));
    if let Err(e) = write_synced(&tmp, bytes) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path).map_err(|source| {
        let _ = fs::remove_file(&tmp);
        io(path, source)
    })?;
    sync_dir(dir);
    Ok(())
}

/// Best effort: makes a rename durable (not supported everywhere, hence ignored).
fn sync_dir(dir: &Path) {
    let _ = fs::File::open(dir).and_then(|d| d.sync_all());
}

fn unique_suffix() -> String {
    format!("{}-{}", std::process::id(), rand::random::<u64>())
}

fn valid_subdirs(dir: &Path) -> Result<Vec<String>, ModelRepoError> {
    let entries = fs::read_dir(dir).map_err(|source| io(dir, source))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| io(dir, source))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if validate_model_name("name", &name).is_ok() && entry.path().is_dir() {
            names.push(name);
        }
    }
    Ok(names)
}

fn io(path: &Path, source: std::io::Error) -> ModelRepoError {
    ModelRepoError::Io {
        path: path.to_owned(),
        source,
    }
}

fn manifest_err(path: &Path, problem: impl ToString) -> ModelRepoError {
    ModelRepoError::Manifest {
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}

#[cfg(test)]
mod tests;
