//! The development Kafka broker (`panoptes-devbroker`, librdkafka's mock cluster) as a child
//! process, and the unique topics a test creates on it. [`DevBroker::start_secured`] puts
//! the broker's secure front (TLS and/or SASL) in front of it; [`DevBroker::client`] hands
//! out the shared client configuration for it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use panoptes_runtime::config::KafkaClientConfig;
use panoptes_runtime::tls::TlsFiles;

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

    /// Starts a broker whose fronts answer CreatePartitions for growable topics
    /// ([`DevBroker::create_growable_topic`]).
    pub fn start_growable(brokers: u32) -> Result<Self> {
        Self::start_with_args(&[
            "--brokers",
            &brokers.to_string(),
            "--exit-on-stdin-eof",
            "--grow",
        ])
    }

    /// Starts a broker behind TLS (the PKI's server certificate) and SASL with `users`
    /// (`(name, password)`), written to the PKI's folder as the broker's users file.
    pub fn start_sasl_ssl(
        brokers: u32,
        pki: &crate::tls::TestPki,
        users: &[(&str, &str)],
    ) -> Result<Self> {
        let file = pki.path("sasl-users");
        let lines: String = users.iter().map(|(u, p)| format!("{u}:{p}\n")).collect();
        std::fs::write(&file, lines)?;
        Self::start_secured(
            brokers,
            &BrokerSecurity {
                tls: Some(pki.server()),
                sasl_users_file: Some(file),
                sasl_mechanisms: None,
            },
        )
    }

    /// Starts a broker with `brokers` brokers and the default topics behind its secure front:
    /// TLS when `security.tls` is set, SASL when `security.sasl_users_file` is.
    pub fn start_secured(brokers: u32, security: &BrokerSecurity) -> Result<Self> {
        let mut args: Vec<String> = vec![
            "--brokers".into(),
            brokers.to_string(),
            "--exit-on-stdin-eof".into(),
        ];
        let path = |p: &PathBuf| p.display().to_string();
        if let Some(tls) = &security.tls {
            let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) else {
                anyhow::bail!("BrokerSecurity.tls needs cert_file and key_file");
            };
            args.extend([
                "--tls-cert".into(),
                path(cert),
                "--tls-key".into(),
                path(key),
            ]);
            if let Some(ca) = &tls.ca_file {
                args.extend(["--tls-client-ca".into(), path(ca)]);
            }
        }
        if let Some(users) = &security.sasl_users_file {
            args.extend(["--sasl-users-file".into(), path(users)]);
        }
        if let Some(m) = &security.sasl_mechanisms {
            args.extend(["--sasl-mechanisms".into(), m.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::start_with_args(&args)
    }

    /// A plaintext client configuration for this broker; set its security fields for a
    /// secured one.
    pub fn client(&self) -> KafkaClientConfig {
        KafkaClientConfig::plaintext(self.bootstrap.clone())
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

    /// Creates a topic with `partitions` partitions that may grow to `max` through
    /// CreatePartitions (a broker from [`DevBroker::start_growable`]).
    pub fn create_growable_topic(&self, name: &str, partitions: u32, max: u32) -> Result<()> {
        let body =
            serde_json::json!({ "name": name, "partitions": partitions, "max_partitions": max });
        post_json(&format!("{}/topics", self.control), &body)
    }

    /// Creates a fresh frames topic with `partitions` partitions; returns its name.
    pub fn frames_topic(&self, partitions: u32) -> Result<String> {
        let topic = unique_name("frames");
        self.create_topic(&topic, partitions)?;
        Ok(topic)
    }

    /// Creates fresh topics: frames and detections with `partitions` partitions, dead
    /// letters and shadow detections with one.
    pub fn create_topics(&self, partitions: u32) -> Result<Topics> {
        let t = Topics::unique();
        self.create_topics_named(&t, partitions)?;
        Ok(t)
    }

    /// Creates the topics `t` (frames and detections with `partitions` partitions, dead
    /// letters and shadow detections with one), e.g. the same names on every region's broker.
    pub fn create_topics_named(&self, t: &Topics, partitions: u32) -> Result<()> {
        self.create_topics_growing(t, partitions, partitions)
    }

    /// [`DevBroker::create_topics_named`] with a frames topic that may grow to `frames_max`
    /// partitions (when above `partitions`; a broker from [`DevBroker::start_growable`]).
    pub fn create_topics_growing(
        &self,
        t: &Topics,
        partitions: u32,
        frames_max: u32,
    ) -> Result<()> {
        if frames_max > partitions {
            self.create_growable_topic(&t.frames, partitions, frames_max)?;
        } else {
            self.create_topic(&t.frames, partitions)?;
        }
        self.create_topic(&t.detections, partitions)?;
        self.create_topic(&t.dlq, 1)?;
        self.create_topic(&t.shadow, 1)
    }

    /// Calls the control API: `method path` with an optional JSON body; status and body.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
        crate::http::request(&self.control, method, path, body.map(str::to_string), None)
    }

    /// Makes the next Produce request fail with OUT_OF_ORDER_SEQUENCE_NUMBER: while it is the
    /// only one in flight, librdkafka raises a fatal idempotence error on that producer.
    pub fn fail_next_produce_fatally(&self) -> Result<()> {
        let (status, body) = self.api(
            "POST",
            "/errors/produce",
            Some(r#"{"errors":["out_of_order_sequence_number"]}"#),
        )?;
        anyhow::ensure!(status == 200, "POST /errors/produce: {status} {body}");
        Ok(())
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

/// How [`DevBroker::start_secured`] secures the broker (the files stay the caller's, e.g. a
/// [`crate::tls::TestPki`]).
#[derive(Debug, Clone, Default)]
pub struct BrokerSecurity {
    /// The fronts' certificate and key (TLS on); with `ca_file`, client certificates are
    /// required and must chain to it.
    pub tls: Option<TlsFiles>,
    /// `user:password` lines (SASL on).
    pub sasl_users_file: Option<PathBuf>,
    /// Mechanisms offered, comma-separated (default: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
    pub sasl_mechanisms: Option<String>,
}

/// The topics of one test or stack.
#[derive(Debug, Clone)]
pub struct Topics {
    /// Frames.
    pub frames: String,
    /// Detections.
    pub detections: String,
    /// Dead letters.
    pub dlq: String,
    /// Shadow detections.
    pub shadow: String,
}

impl Topics {
    /// Fresh names, unique to this test process.
    pub fn unique() -> Self {
        Self {
            frames: unique_name("frames"),
            detections: unique_name("detections"),
            dlq: unique_name("dlq"),
            shadow: unique_name("shadow"),
        }
    }
}
