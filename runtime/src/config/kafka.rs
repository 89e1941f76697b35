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
//! This crate does not link librdkafka: properties are handed out as `(key, value)` strings,
//! which `rdkafka::ClientConfig` collects (`FromIterator`/`Extend`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
