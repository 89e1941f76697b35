//! Test harness shared by the integration tests of every Panoptes crate.
//!
//! Everything here starts *real* components as child processes, on free ports, and kills them
//! when the handle is dropped: the development Kafka broker (`panoptes-devbroker`), the
//! camera simulator (`panoptes-camsim`), `redis-server`, and Panoptes nodes. Topic names are unique per test,
//! so tests run in parallel. Binaries are looked up next to the test executable; they exist
//! when the tests run through `cargo test --workspace` / `cargo nextest run --workspace`.

pub mod coordinator;
pub mod kafka;
pub mod process;
pub mod redis;
pub mod sys;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};

pub use coordinator::{Coordinator, CoordinatorSpec};
pub use process::ChildProcess;
pub use redis::RedisServer;

/// Path of a workspace binary built beside the running test.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Tests run from target/<profile>/deps/, binaries from target/<profile>/.
    let here = exe.parent().expect("exe dir");
    let path = [here.join(name), here.parent().unwrap_or(here).join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| here.join(name));
    assert!(
        path.is_file(),
        "{} not found: build the workspace binaries first (`cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// A name unique to this test process and call, e.g. for topics.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// The development broker, as a process.
pub struct DevBroker {
    /// `bootstrap.servers` of the mock cluster.
    pub bootstrap: String,
    /// Base URL of its control API.
    pub control: String,
    child: ChildProcess,
}

impl DevBroker {
    /// Starts a broker with `brokers` brokers and the default topics.
    pub fn start(brokers: u32) -> Result<Self> {
        let mut child = ChildProcess::spawn(
            "devbroker",
            &bin_path("panoptes-devbroker"),
            &["--brokers", &brokers.to_string(), "--exit-on-stdin-eof"],
            &[],
        )?;
        let bootstrap = child.wait_for_line("BOOTSTRAP=", Duration::from_secs(20))?;
        let control = child.wait_for_line("CONTROL=", Duration::from_secs(5))?;
        Ok(Self {
            bootstrap,
            control,
            child,
        })
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        let body = serde_json::json!({ "name": name, "partitions": partitions });
        post_json(&format!("{}/topics", self.control), &body)
    }

    /// Takes every broker down (connections refused, data kept).
    pub fn all_down(&self) -> Result<()> {
        post_json(&format!("{}/down", self.control), &serde_json::json!({}))
    }

    /// Brings every broker back.
    pub fn all_up(&self) -> Result<()> {
        post_json(&format!("{}/up", self.control), &serde_json::json!({}))
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// The camera simulator, as a process.
pub struct CamSim {
    /// `rtsp://127.0.0.1:<port>`.
    pub rtsp: String,
    /// Base URL of its control API.
    pub control: String,
    child: ChildProcess,
}

impl CamSim {
    /// Starts `panoptes-camsim` with `args` (e.g. `--camera id=cam0,fps=10`).
    pub fn start(args: &[&str]) -> Result<Self> {
        let mut all = vec!["--listen", "127.0.0.1:0", "--control", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut child = ChildProcess::spawn("camsim", &bin_path("panoptes-camsim"), &all, &[])?;
        let rtsp = child.wait_for_line("RTSP=", Duration::from_secs(20))?;
        let control = child.wait_for_line("CONTROL=", Duration::from_secs(5))?;
        Ok(Self {
            rtsp,
            control,
            child,
        })
    }

    /// URL of camera `id`, optionally with credentials.
    pub fn url(&self, id: &str, creds: Option<(&str, &str)>) -> String {
        match creds {
            None => format!("{}/{id}", self.rtsp),
            Some((u, p)) => format!(
                "{}/{id}",
                self.rtsp
                    .replacen("rtsp://", &format!("rtsp://{u}:{p}@"), 1)
            ),
        }
    }

    /// Applies a fault: `stall`, `drop`, `stop` or `resume`.
    pub fn fault(&self, id: &str, action: &str) -> Result<()> {
        post_json(
            &format!("{}/cameras/{id}/{action}", self.control),
            &serde_json::json!({}),
        )
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// POSTs `body` and fails on a non-2xx answer.
pub fn post_json(url: &str, body: &serde_json::Value) -> Result<()> {
    let resp = reqwest::blocking::Client::new()
        .post(url)
        .json(body)
        .timeout(Duration::from_secs(10))
        .send()
        .with_context(|| format!("POST {url}"))?;
    if !resp.status().is_success() {
        bail!(
            "POST {url}: {} {}",
            resp.status(),
            resp.text().unwrap_or_default()
        );
    }
    Ok(())
}

/// GETs a URL as text (any status); `None` if the server cannot be reached.
pub fn get_text(url: &str) -> Option<(u16, String)> {
    let resp = reqwest::blocking::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().unwrap_or_default()))
}

/// Value of one Prometheus series (exact `name{labels}` text as rendered), summed if repeated.
pub fn metric_value(metrics_text: &str, series: &str) -> Option<f64> {
    let mut found = None;
    for line in metrics_text.lines() {
        let value = line
            .strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '));
        if let Some(v) = value.and_then(|v| v.trim().parse::<f64>().ok()) {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// Polls `f` every 100 ms until it returns `Some`, or fails after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if std::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
