//! Command-line arguments of `panoptes-devbroker`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

use crate::front::sasl::Mechanism;
use crate::topics::{self, TopicSpec};

/// Development Kafka broker: librdkafka's mock cluster with a JSON control API.
///
/// Prints `BOOTSTRAP=<servers>` and `CONTROL=http://<addr>` to stdout when ready; logs to
/// stderr. In memory only, about 5 MB retained per partition, no transactional fencing and
/// no read-committed isolation: for development and tests, never production.
#[derive(Debug, Clone, Parser)]
#[command(name = "panoptes-devbroker", version)]
pub struct Args {
    /// Number of brokers in the mock cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u8).range(1..=32))]
    pub brokers: u8,

    /// Extra topic to create, as NAME:PARTITIONS (repeatable). Overrides the partition
    /// count of a default topic with the same name.
    #[arg(long = "topic", value_name = "NAME:PARTITIONS")]
    pub topics: Vec<TopicSpec>,

    /// Partition count of the default frames and detections topics.
    #[arg(
        long,
        default_value_t = 16,
        value_parser = clap::value_parser!(i32).range(1..=i64::from(topics::MAX_PARTITIONS))
    )]
    pub default_partitions: i32,

    /// Address for the control HTTP API (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub control: SocketAddr,

    /// Do not create the default `panoptes.*` topics.
    #[arg(long)]
    pub no_default_topics: bool,

    /// Exit when stdin reaches end of file (for test harnesses holding the pipe).
    #[arg(long)]
    pub exit_on_stdin_eof: bool,

    /// Secure front: PEM certificate chain the brokers present (turns TLS on; needs
    /// `--tls-key`). Clients then use `security.protocol = ssl` (or `sasl_ssl`).
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// Secure front: private key of `--tls-cert`.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Secure front: CA bundle that client certificates must chain to (mutual TLS).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// Secure front: file of `user:password` lines; turns SASL on (`sasl_ssl` with TLS,
    /// `sasl_plaintext` without).
    #[arg(long, value_name = "FILE")]
    pub sasl_users_file: Option<PathBuf>,

    /// Secure front: SASL mechanisms offered, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512",
        requires = "sasl_users_file"
    )]
    pub sasl_mechanisms: Vec<Mechanism>,
}

impl Args {
    /// Whether a secure front (TLS and/or SASL) is asked for.
    pub fn secured(&self) -> bool {
        self.tls_cert.is_some() || self.sasl_users_file.is_some()
    }

    /// The topics to create at start, in order: the defaults (unless disabled), then every
    /// `--topic`. A `--topic` naming a default topic replaces its partition count; the same
    /// name given twice with different partition counts is an error.
    pub fn topics_to_create(&self) -> anyhow::Result<Vec<TopicSpec>> {
        let mut out: Vec<TopicSpec> = if self.no_default_topics {
            Vec::new()
        } else {
            topics::default_topics(self.default_partitions)
        };
        let defaults = out.len();
        for t in &self.topics {
            match out.iter().position(|o| o.name == t.name) {
                Some(i) if i < defaults => out[i].partitions = t.partitions,
                Some(i) if out[i].partitions != t.partitions => anyhow::bail!(
                    "--topic {} given twice with different partition counts ({} and {})",
                    t.name,
                    out[i].partitions,
                    t.partitions
                ),
                Some(_) => {}
                None => out.push(t.clone()),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let a = Args::parse_from(["x"]);
        assert_eq!(a.brokers, 3);
        let t = a.topics_to_create().unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t[0].partitions, 16);
        assert_eq!(
            t[3],
            TopicSpec {
                name: "panoptes.frames.dlq".into(),
                partitions: 4
            }
        );

        let a = Args::parse_from([
            "x",
            "--default-partitions",
            "8",
            "--topic",
            "panoptes.frames:2",
            "--topic",
            "other:5",
        ]);
        let t = a.topics_to_create().unwrap();
        assert_eq!(t[0].partitions, 2);
        assert_eq!(t[1].partitions, 8);
        assert_eq!(
            t[4],
            TopicSpec {
                name: "other".into(),
                partitions: 5
            }
        );

        let a = Args::parse_from([
            "x",
            "--no-default-topics",
            "--topic",
            "a:1",
            "--topic",
            "a:2",
        ]);
        assert!(a.topics_to_create().is_err());
        assert!(Args::try_parse_from(["x", "--topic", "bad name:1"]).is_err());
        assert!(Args::try_parse_from(["x", "--brokers", "0"]).is_err());
    }
}
