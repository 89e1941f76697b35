//! A real `panoptes-coordinator` process on a free port, with its configuration written to a
//! temporary file, plus small helpers to drive its operator API.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::ChildProcess;
use crate::{bin_path, get_text, metric_value};

/// The token tests use for the operator API.
pub const TEST_TOKEN: &str = "test-token-7f3a";

/// Settings of a test coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorSpec {
    /// Coordinator id.
    pub id: String,
    /// Redis URL.
    pub redis_url: String,
    /// `(region, bootstrap servers)`, the first being the default region.
    pub regions: Vec<(String, String)>,
    /// Frames topic.
    pub frames_topic: String,
    /// Partitions per region frames topic.
    pub frames_partitions: i32,
    /// Extra TOML appended to the file (e.g. a `[placement]` section).
    pub extra_toml: String,
}

impl CoordinatorSpec {
    /// One region `local` on `bootstrap`.
    pub fn new(
        id: &str,
        redis_url: &str,
        bootstrap: &str,
        frames_topic: &str,
        partitions: i32,
    ) -> Self {
        Self {
            id: id.into(),
            redis_url: redis_url.into(),
            regions: vec![("local".into(), bootstrap.into())],
            frames_topic: frames_topic.into(),
            frames_partitions: partitions,
            extra_toml: String::new(),
        }
    }

    fn toml(&self) -> String {
        let mut s = format!(
            "id = {:?}\nredis_url = {:?}\nframes_topic = {:?}\nframes_partitions = {}\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n[api]\ntoken = {TEST_TOKEN:?}\n\n",
            self.id, self.redis_url, self.frames_topic, self.frames_partitions
        );
        s.push_str(&self.extra_toml);
        s.push('\n');
        for (name, bootstrap) in &self.regions {
            s.push_str(&format!(
                "\n[[regions]]\nname = {name:?}\nbootstrap_servers = {bootstrap:?}\n"
            ));
        }
        s
    }
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
    pub fn start(spec: &CoordinatorSpec) -> Result<Self> {
        let config = tempfile::Builder::new().suffix(".toml").tempfile()?;
        std::fs::write(config.path(), spec.toml())?;
        let path = config.path().to_string_lossy().to_string();
        let mut child = ChildProcess::spawn(
            &format!("coordinator-{}", spec.id),
            &bin_path("panoptes-coordinator"),
            &["--config", &path],
            &[("RUST_LOG", "info")],
        )?;
        let http = child
            .wait_for_line("HTTP=", Duration::from_secs(20))
            .context("coordinator did not start")?;
        Ok(Self {
            http,
            id: spec.id.clone(),
            child,
            _config: config,
        })
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
        crate::wait_until(&format!("{} to lead", self.id), timeout, || {
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
        let client = reqwest::blocking::Client::new();
        let url = format!("{}{path}", self.http);
        let mut req = match method {
            "GET" => client.get(&url),
            "POST" => client.post(&url),
            "PUT" => client.put(&url),
            "DELETE" => client.delete(&url),
            other => bail!("unsupported method {other}"),
        }
        .bearer_auth(TEST_TOKEN)
        .timeout(Duration::from_secs(10));
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().with_context(|| format!("{method} {url}"))?;
        let status = resp.status().as_u16();
        let text = resp.text().unwrap_or_default();
        let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok((status, json))
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
