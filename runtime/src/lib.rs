//! Shared runtime of every Panoptes process.
//!
//! Each binary (`panoptes-ingest`, `panoptes-worker`, `panoptes-coordinator`) does the same
//! few things around its real work, and they live here so that they behave the same everywhere:
//!
//! - [`node`]: the `main` of every node binary (command line, config, telemetry, shutdown,
//!   exit status);
//! - [`config`]: typed configuration from a TOML file plus `PANOPTES_` environment overrides,
//!   and the sections every node shares ([`config::HttpConfig`], [`config::KafkaClientConfig`],
//!   [`config::RedisClientConfig`]);
//! - [`telemetry`]: `tracing` subscriber set-up (text or JSON logs);
//! - [`trace`]: OpenTelemetry spans exported over OTLP (config, sampler, bounded export);
//! - [`metrics`]: creating and registering metrics in a process's explicit registry;
//! - [`health`]: the HTTP server with `/healthz`, `/readyz` and `/metrics`;
//! - [`kafka_link`]: librdkafka's own errors classified (auth, tls, fatal, ...), counted and
//!   turned into readiness;
//! - [`shutdown`]: one `CancellationToken` tree cancelled on SIGINT/SIGTERM;
//! - [`redact`]: keeping credentials in URLs out of logs, metrics and traces;
//! - [`secret`]: secrets from files or environment variables, failing closed;
//! - [`tls`]: TLS material from PEM files and the rustls configs built from it;
//! - `kafka_poll` (feature `kafka`): producers whose events are served without busy-waiting.
//!
//! This crate deliberately links neither GStreamer, nor librdkafka, nor libtorch (rustls
//! with the ring provider is its only cryptography); only its `kafka` feature, which the
//! nodes that talk to Kafka turn on, brings in librdkafka.

pub mod config;
pub mod health;
pub mod kafka_link;
#[cfg(feature = "kafka")]
pub mod kafka_poll;
pub mod metrics;
pub mod node;
pub mod redact;
pub mod secret;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace;

pub use tokio_util::sync::CancellationToken;
