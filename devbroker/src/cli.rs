//! Command-line arguments of `panoptes-devbroker`.
//!
//! Where clients reach the brokers: by default the mock's own listeners (127.0.0.1, random
//! ports, plaintext). `--listen`, `--advertise-host` and `--front-port` put a front
//! ([`crate::front`], a plain relay unless TLS/SASL is asked for too) before each broker on
//! that address and fixed ports, advertising that host, which is what a broker in a container
//! needs (other containers reach it by its service name). [`Args::front_listen`] and
//! [`Args::advertised_host`] are the pure part of that choice.

use std::net::{IpAddr, SocketAddr};
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

    /// Let topic NAME grow to MAX partitions through Kafka's CreatePartitions (repeatable):
    /// the mock holds MAX partitions from the start and the fronts show only those created
    /// so far ([`crate::front::growth`]). NAME must be a topic created at start; puts a front
    /// before each broker.
    #[arg(long = "growable", value_name = "NAME:MAX")]
    pub growable: Vec<TopicSpec>,
    /// Serve CreatePartitions for growable topics (implied by `--growable`): puts a front
    /// before each broker, so topics created later through the control API with
    /// `max_partitions` can grow too.
    #[arg(long)]
    pub grow: bool,
    /// Partition count of the default frames and detections topics.
    #[arg(
        long,
        default_value_t = 16,
        value_parser = clap::value_parser!(i32).range(1..=i64::from(topics::MAX_PARTITIONS))
    )]
    pub default_partitions: i32,

    /// Address the brokers' client listeners (fronts) bind, e.g. `0.0.0.0` in a container.
    /// Unset: loopback (the mock's own listeners, or the secure fronts on loopback).
    #[arg(long, value_name = "IP")]
    pub listen: Option<IpAddr>,

    /// Host name the brokers advertise to clients (metadata, coordinator answers), e.g. the
    /// container's service name. Unset: the listen address. Needed with an unspecified
    /// `--listen` (`0.0.0.0`, `::`), which no client can connect to.
    #[arg(long, value_name = "HOST")]
    pub advertise_host: Option<String>,

    /// First front port: broker `i` (1-based) listens on `PORT + i - 1`. 0: free ports.
    #[arg(long, value_name = "PORT", default_value_t = 0)]
    pub front_port: u16,

    /// Answer a consumer's waiting Fetch as soon as records are produced (as Kafka does)
    /// instead of after its whole `fetch.wait.max.ms` (what the mock does): puts a front
    /// before each broker (a plain relay unless TLS/SASL is asked for too).
    #[arg(long)]
    pub prompt_fetch: bool,
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

    /// Whether clients go through fronts (secure ones, or plain relays on the asked address,
    /// ports or advertised host) instead of the mock's own listeners.
    pub fn fronted(&self) -> bool {
        self.secured()
            || self.prompt_fetch
            || self.grows()
            || self.listen.is_some()
            || self.advertise_host.is_some()
            || self.front_port != 0
    }

    /// Whether the fronts serve CreatePartitions (`--grow` or `--growable`).
    pub fn grows(&self) -> bool {
        self.grow || !self.growable.is_empty()
    }

    /// The address broker `id` (1-based)'s front binds, given its mock listener `upstream`:
    /// `--listen` (else the upstream's loopback address) and `--front-port + id - 1` (else
    /// a free port). Errors: a port past 65535, or an unspecified listen address without
    /// `--advertise-host` (the brokers would advertise an address nobody can reach).
    pub fn front_listen(&self, id: u8, upstream: SocketAddr) -> anyhow::Result<SocketAddr> {
        let ip = self.listen.unwrap_or(upstream.ip());
        if ip.is_unspecified() && self.advertise_host.is_none() {
            anyhow::bail!(
                "--listen {ip} needs --advertise-host: clients cannot connect to {ip}; give the name they reach this host by"
            );
        }
        let port = match self.front_port {
            0 => 0,
            first => {
                let port = u32::from(first) + u32::from(id) - 1;
                u16::try_from(port).map_err(|_| {
                    anyhow::anyhow!(
                        "--front-port {first} with {} brokers runs past port 65535",
                        self.brokers
                    )
                })?
            }
        };
        Ok(SocketAddr::new(ip, port))
    }

    /// The host a front bound at `bound` is advertised under: `--advertise-host`, else the
    /// bound address.
    pub fn advertised_host(&self, bound: SocketAddr) -> String {
        self.advertise_host
            .clone()
            .unwrap_or_else(|| bound.ip().to_string())
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

    /// The growable topics as `(name, created with, maximum)`: each must be one of
    /// [`Args::topics_to_create`] with a maximum at least its created count, and be named once.
    pub fn growable_topics(&self) -> anyhow::Result<Vec<(String, i32, i32)>> {
        let created = self.topics_to_create()?;
        let mut out: Vec<(String, i32, i32)> = Vec::new();
        for g in &self.growable {
            let Some(t) = created.iter().find(|t| t.name == g.name) else {
                anyhow::bail!(
                    "--growable {}: no such topic is created at start (add --topic {}:N)",
                    g.name,
                    g.name
                );
            };
            if g.partitions < t.partitions {
                anyhow::bail!(
                    "--growable {}:{}: the topic starts with {} partitions, more than that maximum",
                    g.name,
                    g.partitions,
                    t.partitions
                );
            }
            if out.iter().any(|o| o.0 == g.name) {
                anyhow::bail!("--growable {} given twice", g.name);
            }
            out.push((g.name.clone(), t.partitions, g.partitions));
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

    #[test]
    fn default_is_the_mocks_own_loopback_listeners() {
        let a = Args::parse_from(["x"]);
        assert!(!a.fronted());
        let upstream: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        assert_eq!(
            a.front_listen(1, upstream).unwrap(),
            "127.0.0.1:0".parse().unwrap()
        );
        assert_eq!(
            a.advertised_host("127.0.0.1:40002".parse().unwrap()),
            "127.0.0.1"
        );
    }

    #[test]
    fn container_listeners_on_fixed_ports_advertise_the_service_name() {
        let a = Args::parse_from([
            "x",
            "--listen",
            "0.0.0.0",
            "--advertise-host",
            "broker-a",
            "--front-port",
            "19092",
        ]);
        assert!(a.fronted() && !a.secured());
        let upstream: SocketAddr = "127.0.0.1:40001".parse().unwrap();
        let third = a.front_listen(3, upstream).unwrap();
        assert_eq!(third, "0.0.0.0:19094".parse().unwrap());
        assert_eq!(a.advertised_host(third), "broker-a");

        // 0.0.0.0 advertised would send clients nowhere: refused.
        let a = Args::parse_from(["x", "--listen", "0.0.0.0"]);
        let err = a.front_listen(1, upstream).unwrap_err().to_string();
        assert!(err.contains("--advertise-host"), "{err}");
        // Ports past 65535 are refused, not wrapped.
        let a = Args::parse_from(["x", "--brokers", "3", "--front-port", "65534"]);
        assert!(a.front_listen(2, upstream).is_ok());
        assert!(a.front_listen(3, upstream).is_err());
    }
}
