//! A real `panoptes-coordinator` process on a free port, started from its typed
//! configuration ([`panoptes_coordinator::config::CoordinatorConfig`], feature
//! `coordinator`), plus small helpers to drive its operator API (plain HTTP; a coordinator
//! serving TLS is reached with `panoptes_coordinator::cli::Client` and the test CA).

use std::time::Duration;

use anyhow::{Context, Result, bail};
use panoptes_coordinator::config::{CoordinatorConfig, RegionConfig};

use crate::http::{get_text, metric_value, request_json};
use crate::node::spawn_toml;
use crate::process::ChildProcess;

/// The token tests use for the operator API.
pub const TEST_TOKEN: &str = "test-token-7f3a";

/// A test coordinator's configuration: `id`, Redis, one region `local` on `bootstrap`, the
/// frames topic with `partitions` partitions, HTTP on a free port and [`TEST_TOKEN`] as the
/// legacy operator token (`api.token`, named `default`). Change fields (regions, `[leader]`,
/// `[placement]`, `[api]`) before [`Coordinator::start`].
pub fn config(
    id: &str,
    redis_url: &str,
    bootstrap: &str,
    frames_topic: &str,
    partitions: i32,
) -> CoordinatorConfig {
    let mut c = CoordinatorConfig {
        id: id.into(),
        redis: redis_url.into(),
        frames_topic: frames_topic.into(),
        frames_partitions: partitions,
        regions: vec![RegionConfig {
            name: "local".into(),
            bootstrap_servers: bootstrap.into(),
        }],
        ..CoordinatorConfig::default()
    };
    c.http.listen = crate::basics::FREE_PORT.parse().expect("socket address");
    c.api.token = Some(TEST_TOKEN.into());
    c
}

/// A running coordinator.
pub struct Coordinator {
    /// `http://127.0.0.1:<port>`.
    pub http: String,
    /// Its id.
    pub id: String,
    /// The process.
    pub child: ChildProcess,
    _config: tempfile::NamedTempFile,
}

impl Coordinator {
    /// Starts a coordinator and waits for its HTTP line.
    pub fn start(config: &CoordinatorConfig) -> Result<Self> {
        Self::start_env(config, &[])
    }

    /// [`Coordinator::start`] with extra environment variables (e.g. tokens named by
    /// `api.tokens[].token_env`).
    pub fn start_env(config: &CoordinatorConfig, env: &[(&str, &str)]) -> Result<Self> {
        let toml = toml::to_string(config).context("serializing the coordinator's config")?;
        let mut vars = vec![
            ("RUST_LOG", "info"),
            (
                panoptes_coordinator_client::sealed::KEYS_ENV,
                crate::redis::TEST_CAMERA_KEYS,
            ),
        ];
        vars.extend_from_slice(env);
        let (mut child, file) = spawn_toml(
            &format!("coordinator-{}", config.id),
            "panoptes-coordinator",
            &toml,
            &vars,
        )?;
        let http = child
            .wait_for_line("HTTP=", Duration::from_secs(20))
            .context("coordinator did not start")?;
        Ok(Self {
            http,
            id: config.id.clone(),
            child,
            _config: file,
        })
    }

    /// Starts a coordinator on `config` that must refuse to start: waits up to `timeout` for
    /// it to exit and returns its exit code and stderr. Fails if it starts serving instead.
    pub fn expect_refusal(config: &CoordinatorConfig, timeout: Duration) -> Result<(i32, String)> {
        let toml = toml::to_string(config).context("serializing the coordinator's config")?;
        let (mut child, _file) = spawn_toml(
            &format!("coordinator-{}", config.id),
            "panoptes-coordinator",
            &toml,
            &[("RUST_LOG", "info")],
        )?;
        let status = crate::basics::wait_until("the coordinator to exit", timeout, || {
            child.try_wait().ok().flatten()
        })?;
        let stderr = child.log_text();
        if child
            .wait_for_line("HTTP=", Duration::from_millis(1))
            .is_ok()
        {
            bail!("the coordinator served before exiting; stderr:\n{stderr}");
        }
        Ok((status.code().unwrap_or(-1), stderr))
    }

    /// The value of a metric series, if the coordinator answers.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, text) = get_text(&format!("{}/metrics", self.http))?;
        metric_value(&text, series)
    }

    /// Whether it leads now (from its metrics).
    pub fn is_leader(&self) -> bool {
        self.metric("panoptes_coordinator_is_leader") == Some(1.0)
    }

    /// Waits until it leads.
    pub fn wait_leader(&self, timeout: Duration) -> Result<()> {
        crate::basics::wait_until(&format!("{} to lead", self.id), timeout, || {
            self.is_leader().then_some(())
        })
    }

    /// Calls the operator API with the test token; returns status and body.
    pub fn api(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<(u16, serde_json::Value)> {
        request_json(
            &self.http,
            method,
            path,
            body.map(serde_json::Value::to_string),
            Some(TEST_TOKEN),
        )
    }

    /// Registers a camera (POST /v1/cameras) and fails on a non-2xx answer.
    pub fn add_camera(&self, camera: &serde_json::Value) -> Result<serde_json::Value> {
        let (status, body) = self.api("POST", "/v1/cameras", Some(camera))?;
        if !(200..300).contains(&status) {
            bail!("adding camera {camera}: {status} {body}");
        }
        Ok(body)
    }
}
