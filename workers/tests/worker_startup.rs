//! A missing, corrupt or wrong-shaped model stops `panoptes-worker` at start with a clear
//! message and a non-zero exit status, before it touches Kafka.

mod common;

use std::path::Path;
use std::process::Command;

use anyhow::Result;
use panoptes_testkit::bin_path;
use panoptes_workers::{ManifestFile, OutputContract};

/// Runs the worker against an unreachable broker with the given model files; returns
/// (exit success, stderr).
fn run_worker(model: &Path, manifest: &Path) -> Result<(bool, String)> {
    run_worker_on(model, manifest, "cpu")
}

fn run_worker_on(model: &Path, manifest: &Path, device: &str) -> Result<(bool, String)> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("worker.toml");
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = \"127.0.0.1:1\"\n\
             [model]\npath = \"{}\"\nmanifest = \"{}\"\ndevice = \"{device}\"\n",
            model.display(),
            manifest.display()
        ),
    )?;
    let out = Command::new(bin_path("panoptes-worker"))
        .arg("--config")
        .arg(&config)
        .output()?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn bad_models_stop_the_worker_at_start() -> Result<()> {
    let models = common::models();
    let reference = &models.reference;
    let dir = tempfile::tempdir()?;

    // Missing model file.
    let missing = dir.path().join("nope.pt");
    let (ok, err) = run_worker(&missing, &reference.manifest_path)?;
    assert!(!ok);
    assert!(
        err.contains("does not exist") && err.contains("nope.pt"),
        "{err}"
    );

    // Corrupt model file.
    let corrupt = dir.path().join("corrupt.pt");
    std::fs::write(&corrupt, b"this is not a TorchScript archive")?;
    let (ok, err) = run_worker(&corrupt, &reference.manifest_path)?;
    assert!(!ok);
    assert!(err.contains("not a loadable TorchScript model"), "{err}");

    // Right file, manifest promising another output contract: the warm-up catches it.
    let mut manifest = reference.manifest.clone();
    manifest.output = OutputContract::YoloRaw;
    let wrong = dir.path().join("wrong.json");
    manifest.write(&wrong)?;
    let (ok, err) = run_worker(&reference.model_path, &wrong)?;
    assert!(!ok);
    assert!(err.contains("contradicts the manifest"), "{err}");
    Ok(())
}

/// A GPU device where libtorch's CUDA backend cannot be loaded (development and CI machines
/// have no CUDA runtime beyond libcudart) stops the worker at start with the loader's reason.
#[test]
fn unusable_cuda_device_stops_the_worker_at_start() -> Result<()> {
    let models = common::models();
    let reference = &models.reference;
    let (ok, err) = run_worker_on(&reference.model_path, &reference.manifest_path, "cuda:0")?;
    assert!(!ok);
    assert!(
        err.contains("device cuda:0 is not usable") && err.contains("libtorch_cuda.so"),
        "{err}"
    );
    Ok(())
}
