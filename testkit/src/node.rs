//! A Panoptes node (`panoptes-ingest`, `panoptes-worker`, `panoptes-coordinator`) as a child
//! process started from its *typed* configuration: the config struct is serialized to TOML
//! (`toml::to_string`) into a temporary file and passed as `--config`, so a test states
//! settings in the same types the node parses. The node prints `HTTP=<base url>` when it
//! serves; [`Node::start`] waits for that line.

use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::basics::{bin_path, wait_until};
use crate::http::{get_json, get_text, metric_value};
use crate::process::ChildProcess;

/// A running node.
pub struct Node {
    /// Member id (or any name given at start).
    pub id: String,
    /// Region of a member (from its config; empty for other processes).
    pub region: String,
    /// HTTP base URL (`http://127.0.0.1:<port>`).
    pub http: String,
    /// The process.
    pub proc: ChildProcess,
    _config: tempfile::NamedTempFile,
}

impl Node {
    /// Writes `config` as TOML and starts binary `bin` on it with the extra `env`; waits up
    /// to `timeout` for its `HTTP=` line.
    pub fn start(
        id: &str,
        bin: &str,
        config: &impl Serialize,
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Self> {
        let toml = toml::to_string(config).context("serializing the node's config")?;
        Self::start_toml(id, bin, &toml, env, timeout)
    }

    /// Starts binary `bin` on a config file holding `toml` verbatim (for configurations the
    /// types cannot express, e.g. a file the node must refuse).
    pub fn start_toml(
        id: &str,
        bin: &str,
        toml: &str,
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Self> {
        let (mut proc, config) = spawn_toml(id, bin, toml, env)?;
        let http = proc
            .wait_for_line("HTTP=", timeout)
            .with_context(|| format!("{bin} {id} did not start"))?;
        Ok(Self {
            id: id.into(),
            region: String::new(),
            http,
            proc,
            _config: config,
        })
    }

    /// `/metrics` text ("" if unreachable).
    pub fn metrics(&self) -> String {
        get_text(&format!("{}/metrics", self.http))
            .map(|(_, t)| t)
            .unwrap_or_default()
    }

    /// One metric series' value.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics(), series)
    }

    /// `GET <path>` as JSON (`Null` if unreachable or not JSON).
    pub fn get_json(&self, path: &str) -> serde_json::Value {
        get_json(&format!("{}{path}", self.http))
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        wait_until(&format!("{} ready", self.id), timeout, || {
            get_text(&format!("{}/readyz", self.http)).filter(|(s, _)| *s == 200)
        })
        .map(|_| ())
    }

    /// An ingest node's `GET /cameras`.
    pub fn cameras(&self) -> serde_json::Value {
        self.get_json("/cameras")
    }

    /// An ingest node's status of camera `id`.
    pub fn camera(&self, id: &str) -> serde_json::Value {
        self.get_json(&format!("/cameras/{id}"))
    }

    /// Waits until an ingest node streams camera `id`.
    pub fn wait_streaming(&self, id: &str, timeout: Duration) -> Result<()> {
        wait_until(&format!("{id} streaming"), timeout, || {
            (self.camera(id)["state"] == "streaming").then_some(())
        })
    }
}

/// Spawns `bin` on `config` (as TOML) without waiting for it to serve (e.g. for a config it
/// must refuse); the file lives as long as the returned handle.
pub fn spawn(
    name: &str,
    bin: &str,
    config: &impl Serialize,
    env: &[(&str, &str)],
) -> Result<(ChildProcess, tempfile::NamedTempFile)> {
    let toml = toml::to_string(config).context("serializing the node's config")?;
    spawn_toml(name, bin, &toml, env)
}

/// Spawns `bin` on a `config` it must refuse: waits up to 20 s for it to exit and returns
/// its log (stdout and stderr). Fails if it is still running then.
pub fn expect_refusal(name: &str, bin: &str, config: &impl Serialize) -> Result<String> {
    let (mut proc, _file) = spawn(name, bin, config, &[("RUST_BACKTRACE", "0")])?;
    wait_until("the node refuses to start", Duration::from_secs(20), || {
        (!proc.is_running()).then_some(())
    })?;
    Ok(proc.log_text())
}

/// Spawns `bin --config <file holding toml>`; the file lives as long as the returned handle.
pub fn spawn_toml(
    name: &str,
    bin: &str,
    toml: &str,
    env: &[(&str, &str)],
) -> Result<(ChildProcess, tempfile::NamedTempFile)> {
    let config = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(config.path(), toml)?;
    let path = config.path().to_str().context("utf-8 path")?.to_string();
    let proc = ChildProcess::spawn(name, &bin_path(bin), &["--config", &path], env)?;
    Ok((proc, config))
}
