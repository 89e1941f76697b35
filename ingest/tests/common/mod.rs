//! Helpers shared by the ingest integration tests: a real broker, a real camera simulator and
//! the real `panoptes-ingest` binary, each a child process on free ports.

#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context, Result};
use panoptes_testkit::{CamSim, ChildProcess, DevBroker, bin_path, get_text, unique_name};

/// One camera entry for the ingest config.
pub struct Cam<'a> {
    pub id: &'a str,
    pub url: String,
    pub fps: u32,
    pub width: u32,
    pub height: u32,
    pub partition: Option<i32>,
}

/// The ingest node under test.
pub struct Ingest {
    pub proc: ChildProcess,
    pub http: String,
    _config: tempfile::NamedTempFile,
}

impl Ingest {
    /// Writes a config and starts `panoptes-ingest` with debug logging. `extra_toml` is
    /// inserted inside the `[kafka]` section, so it may add Kafka keys, then other sections.
    pub fn start(bootstrap: &str, topic: &str, cams: &[Cam<'_>], extra_toml: &str) -> Result<Self> {
        let mut toml = format!(
            "node_id = \"{}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{topic}\"\n{extra_toml}\n",
            unique_name("ingest")
        );
        for c in cams {
            toml.push_str(&format!(
                "[[cameras]]\nid = \"{}\"\nurl = \"{}\"\nfps = {}\nwidth = {}\nheight = {}\n",
                c.id, c.url, c.fps, c.width, c.height
            ));
            if let Some(p) = c.partition {
                toml.push_str(&format!("partition = {p}\n"));
            }
        }
        let config = tempfile::Builder::new().suffix(".toml").tempfile()?;
        std::fs::write(config.path(), toml)?;
        let path = config.path().to_str().context("utf-8 path")?.to_string();
        let mut proc = ChildProcess::spawn(
            "ingest",
            &bin_path("panoptes-ingest"),
            &["--config", &path],
            &[("RUST_LOG", "debug"), ("GST_DEBUG", "2")],
        )?;
        let http = proc.wait_for_line("HTTP=", Duration::from_secs(20))?;
        Ok(Self {
            proc,
            http,
            _config: config,
        })
    }

    /// Starts `panoptes-ingest` in coordinator mode as member `node_id`, with no cameras
    /// in its file. `extra_toml` is appended after the `[coordinator]` section's keys, so it
    /// may add coordinator keys, then other sections.
    pub fn start_coordinated(
        bootstrap: &str,
        topic: &str,
        node_id: &str,
        redis_url: &str,
        extra_toml: &str,
    ) -> Result<Self> {
        let toml = format!(
            "node_id = \"{node_id}\"\n[http]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = \"{bootstrap}\"\ntopic = \"{topic}\"\n[coordinator]\nenabled = true\nredis_url = \"{redis_url}\"\n{extra_toml}\n"
        );
        Self::start_with_toml(&toml)
    }

    fn start_with_toml(toml: &str) -> Result<Self> {
        let config = tempfile::Builder::new().suffix(".toml").tempfile()?;
        std::fs::write(config.path(), toml)?;
        let path = config.path().to_str().context("utf-8 path")?.to_string();
        let mut proc = ChildProcess::spawn(
            "ingest",
            &bin_path("panoptes-ingest"),
            &["--config", &path],
            &[("RUST_LOG", "debug"), ("GST_DEBUG", "2")],
        )?;
        let http = proc.wait_for_line("HTTP=", Duration::from_secs(20))?;
        Ok(Self {
            proc,
            http,
            _config: config,
        })
    }

    /// `GET /cameras` as JSON.
    pub fn cameras(&self) -> serde_json::Value {
        get_text(&format!("{}/cameras", self.http))
            .and_then(|(_, t)| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// One camera's status object.
    pub fn camera(&self, id: &str) -> serde_json::Value {
        get_text(&format!("{}/cameras/{id}", self.http))
            .and_then(|(_, t)| serde_json::from_str(&t).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// `/metrics` text.
    pub fn metrics(&self) -> String {
        get_text(&format!("{}/metrics", self.http))
            .map(|(_, t)| t)
            .unwrap_or_default()
    }

    /// Waits until camera `id` is streaming.
    pub fn wait_streaming(&self, id: &str, timeout: Duration) -> Result<()> {
        panoptes_testkit::wait_until(&format!("{id} streaming"), timeout, || {
            (self.camera(id)["state"] == "streaming").then_some(())
        })
    }
}

/// Broker + a fresh topic with `partitions` partitions.
pub fn broker_with_topic(partitions: u32) -> Result<(DevBroker, String)> {
    let broker = DevBroker::start(1)?;
    let topic = unique_name("frames");
    broker.create_topic(&topic, partitions)?;
    Ok((broker, topic))
}

/// Camera simulator with the given `--camera` specs.
pub fn camsim(specs: &[&str]) -> Result<CamSim> {
    let mut args = Vec::new();
    for s in specs {
        args.push("--camera");
        args.push(*s);
    }
    CamSim::start(&args)
}

pub mod leader;
