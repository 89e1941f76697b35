//! The project's images, built by `deploy/images/build.sh` from this test build's binaries
//! (no release build, no registry), and the `docker` command line.
//!
//! Contract: [`build`] runs one build at a time on the machine (an exclusive `flock` on
//! `$PANOPTES_CACHE/images/.build.lock`): `build.sh` stages each image in a fixed folder, so
//! two test binaries building at once would mix their files. [`require_docker`] fails with a
//! clear message when the engine is not usable (never a silent skip).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The repository's `deploy/`.
pub fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// `$PANOPTES_CACHE` (default `~/.cache/panoptes`).
pub fn cache() -> PathBuf {
    std::env::var_os("PANOPTES_CACHE").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/panoptes"),
        PathBuf::from,
    )
}

/// Runs `program args` in `dir` with `env`; returns success and stdout + stderr.
pub fn run_in(
    program: &Path,
    args: &[&str],
    dir: &Path,
    env: &[(String, String)],
) -> Result<(bool, String)> {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// `docker args`; returns success and stdout + stderr.
pub fn docker(args: &[&str]) -> Result<(bool, String)> {
    run_in(Path::new("docker"), args, &deploy(), &[])
}

/// Fails unless `docker info` works.
pub fn require_docker() -> Result<()> {
    match docker(&["info"]) {
        Ok((true, _)) => Ok(()),
        Ok((false, out)) => bail!(
            "docker info failed: this test needs a usable Docker Engine (CI machines run one):\n{out}"
        ),
        Err(e) => bail!("docker cannot be run ({e:#}): this test needs Docker Engine"),
    }
}

/// Builds every image with `tag` (and `:dev`) from the binaries next to this test's
/// executable; returns how long it took (waiting for another build included).
pub fn build(tag: &str) -> Result<Duration> {
    let bin_dir = panoptes_testkit::bin_path("panoptes-worker")
        .parent()
        .context("bin dir")?
        .to_path_buf();
    let lock = cache().join("images/.build.lock");
    std::fs::create_dir_all(lock.parent().context("lock dir")?)?;
    let started = Instant::now();
    let script = deploy().join("images/build.sh");
    let (ok, out) = run_in(
        Path::new("flock"),
        &[
            lock.to_str().context("path")?,
            script.to_str().context("path")?,
            "--tag",
            tag,
            "--bin-dir",
            bin_dir.to_str().context("path")?,
        ],
        &deploy(),
        &[],
    )?;
    eprintln!("{out}");
    if !ok {
        bail!("deploy/images/build.sh failed:\n{out}");
    }
    Ok(started.elapsed())
}
