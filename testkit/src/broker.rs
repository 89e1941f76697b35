//! The development Kafka broker (`panoptes-devbroker`, librdkafka's mock cluster) as a child
//! process, and the unique topics a test creates on it.

use std::time::Duration;

use anyhow::Result;

use crate::basics::{bin_path, unique_name};
use crate::http::post_json;
use crate::process::ChildProcess;

/// The development broker, as a process.
pub struct DevBroker {
    /// `bootstrap.servers` of the mock cluster.
    pub bootstrap: String,
    /// Base URL of its control API (`http://host:port`).
    pub control: String,
    /// The process.
    pub child: ChildProcess,
}

impl DevBroker {
    /// Starts a broker with `brokers` brokers and the default topics; it exits when its
    /// stdin closes, so it dies with the test even if the test process is killed.
    pub fn start(brokers: u32) -> Result<Self> {
        Self::start_with_args(&["--brokers", &brokers.to_string(), "--exit-on-stdin-eof"])
    }

    /// Starts a broker with exactly the given command-line arguments.
    pub fn start_with_args(args: &[&str]) -> Result<Self> {
        let mut child =
            ChildProcess::spawn("devbroker", &bin_path("panoptes-devbroker"), args, &[])?;
        let bootstrap = child.wait_for_line("BOOTSTRAP=", Duration::from_secs(20))?;
        let control = child.wait_for_line("CONTROL=", Duration::from_secs(5))?;
        Ok(Self {
            bootstrap,
            control: control.trim_end_matches('/').to_string(),
            child,
        })
    }

    /// Creates a topic.
    pub fn create_topic(&self, name: &str, partitions: u32) -> Result<()> {
        let body = serde_json::json!({ "name": name, "partitions": partitions });
        post_json(&format!("{}/topics", self.control), &body)
    }

    /// Creates a fresh frames topic with `partitions` partitions; returns its name.
    pub fn frames_topic(&self, partitions: u32) -> Result<String> {
        let topic = unique_name("frames");
        self.create_topic(&topic, partitions)?;
        Ok(topic)
    }

    /// Creates fresh topics: frames and detections with `partitions` partitions, dead
    /// letters with one.
    pub fn create_topics(&self, partitions: u32) -> Result<Topics> {
        let t = Topics::unique();
        self.create_topics_named(&t, partitions)?;
        Ok(t)
    }

    /// Creates the topics `t` (frames and detections with `partitions` partitions, dead
    /// letters with one), e.g. the same names on every region's broker.
    pub fn create_topics_named(&self, t: &Topics, partitions: u32) -> Result<()> {
        self.create_topic(&t.frames, partitions)?;
        self.create_topic(&t.detections, partitions)?;
        self.create_topic(&t.dlq, 1)
    }

    /// Calls the control API: `method path` with an optional JSON body; status and body.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        crate::http::request(&self.control, method, path, body.map(str::to_string), None)
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

/// The three topics of one test or stack.
#[derive(Debug, Clone)]
pub struct Topics {
    /// Frames.
    pub frames: String,
    /// Detections.
    pub detections: String,
    /// Dead letters.
    pub dlq: String,
}

impl Topics {
    /// Fresh names, unique to this test process.
    pub fn unique() -> Self {
        Self {
            frames: unique_name("frames"),
            detections: unique_name("detections"),
            dlq: unique_name("dlq"),
        }
    }
}
