//! The part of a node's `[kafka]` section that every Kafka client shares: how to reach and
//! join the cluster. Each node flattens [`KafkaClientConfig`] into its own `[kafka]` struct
//! (`#[serde(flatten)] pub client: KafkaClientConfig`), so the TOML keys stay
//! `kafka.bootstrap_servers` and `kafka.properties` and a node only adds its own topics and
//! tuning next to them.
//!
//! Clients are built in three layers, always in this order, so that what an operator writes
//! wins and what every node needs is set in one place:
//! 1. [`KafkaClientConfig::connection_properties`]: `bootstrap.servers` and the security
//!    settings;
//! 2. the node's own tuned settings (acks, linger, fetch sizes, ...);
//! 3. [`KafkaClientConfig::override_properties`]: the operator's `properties` map.
//!
//! Producers add [`KafkaProducerConfig`] (flattened the same way) in layer 2: the delivery
//! guarantees every Panoptes producer shares, with the node's own `message_timeout` default.
//!
//! This crate does not link librdkafka: properties are handed out as `(key, value)` strings,
//! which `rdkafka::ClientConfig` collects (`FromIterator`/`Extend`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

/// Connection settings shared by every Kafka client of a node.
///
/// No `deny_unknown_fields` here: the node's `[kafka]` struct that flattens this one denies
/// unknown keys for the whole section (serde does not allow both).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct KafkaClientConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    // SECURITY SETTINGS GO HERE (next issue): `security.protocol`, TLS (CA, client
    // certificate and key files) and SASL (mechanism, username, password file) as typed
    // fields with a secret-aware `Debug`, turned into librdkafka properties in
    // `connection_properties` below. Every node picks them up from its `[kafka]` section
    // without further changes. Until then they can be given through `properties`.
    /// Extra librdkafka properties for every client of the node (e.g. `security.protocol`);
    /// they override everything else.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaClientConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaClientConfig {
    /// What every client needs to reach the cluster; set these first.
    pub fn connection_properties(&self) -> Vec<(String, String)> {
        vec![("bootstrap.servers".into(), self.bootstrap_servers.clone())]
    }

    /// The operator's extra properties; set these last so they override the node's tuning.
    pub fn override_properties(&self) -> impl Iterator<Item = (String, String)> + '_ {
        self.properties.iter().map(|(k, v)| (k.clone(), v.clone()))
    }
}

/// Delivery settings of a node's producers; `DEFAULT_TIMEOUT_S` is the node's default
/// `message_timeout` in seconds (a const parameter, like the port of
/// [`HttpConfig`](super::HttpConfig)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KafkaProducerConfig<const DEFAULT_TIMEOUT_S: u64> {
    /// How long a record may wait for the broker before its delivery is reported failed.
    #[serde(with = "humantime_serde")]
    pub message_timeout: Duration,
}

impl<const DEFAULT_TIMEOUT_S: u64> Default for KafkaProducerConfig<DEFAULT_TIMEOUT_S> {
    fn default() -> Self {
        Self {
            message_timeout: Duration::from_secs(DEFAULT_TIMEOUT_S),
        }
    }
}

/// The keys as written: serde's derive does not handle const generics, so they are read
/// through this shape and the node's default filled in. No `deny_unknown_fields`: the
/// flattening section sees the other keys too and denies unknown ones itself.
#[derive(Deserialize)]
struct ProducerKeys {
    #[serde(default, with = "humantime_serde::option")]
    message_timeout: Option<Duration>,
}

impl<'de, const DEFAULT_TIMEOUT_S: u64> Deserialize<'de>
    for KafkaProducerConfig<DEFAULT_TIMEOUT_S>
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let keys = ProducerKeys::deserialize(deserializer)?;
        Ok(Self {
            message_timeout: keys
                .message_timeout
                .unwrap_or(Self::default().message_timeout),
        })
    }
}

impl<const DEFAULT_TIMEOUT_S: u64> KafkaProducerConfig<DEFAULT_TIMEOUT_S> {
    /// What every Panoptes producer sets after the connection properties: idempotent,
    /// acknowledged by all replicas, failing a record after `message_timeout`, and back
    /// within about a second of the broker returning (librdkafka waits up to 10 s between
    /// reconnects by default).
    pub fn delivery_properties(&self) -> Vec<(String, String)> {
        [
            ("enable.idempotence", "true".to_string()),
            ("acks", "all".into()),
            (
                "message.timeout.ms",
                self.message_timeout.as_millis().to_string(),
            ),
            ("reconnect.backoff.ms", "100".into()),
            ("reconnect.backoff.max.ms", "1000".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}
