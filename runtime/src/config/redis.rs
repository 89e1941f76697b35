//! How a node reaches the Redis that holds the coordination state. Each node flattens
//! [`RedisClientConfig`] into the section where its Redis settings live
//! (`#[serde(flatten)] pub redis: RedisClientConfig`), so the keys stay where they were: the
//! coordinator's top-level `redis_url`, ingest's `coordinator.redis_url` and the worker's
//! `assignment.redis_url`, with the same `PANOPTES_` overrides.
//!
//! This crate does not link the Redis client: nodes open connections themselves, with
//! [`RedisClientConfig::redis_url`].

use serde::{Deserialize, Serialize};

/// Schemes for Redis over TCP: plain (`redis://`) and TLS (`rediss://`).
pub const TCP_SCHEMES: &[&str] = &["redis://", "rediss://"];

/// Every scheme the Redis client opens: TCP, TLS and Unix sockets.
pub const ALL_SCHEMES: &[&str] = &["redis://", "rediss://", "unix://", "redis+unix://"];

/// Connection settings shared by every Redis client of a node.
///
/// No `deny_unknown_fields` here: the node's struct that flattens this one denies unknown
/// keys for the whole section (serde does not allow both).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct RedisClientConfig {
    /// Redis URL, e.g. `redis://10.0.0.5:6379/0`.
    pub redis_url: String,
    // SECURITY SETTINGS GO HERE (next issue): TLS (CA, client certificate and key files) and
    // the ACL user and password file, as typed fields with a secret-aware `Debug`, applied
    // where nodes open their connections. Every node picks them up from the section that
    // flattens this struct without further changes.
}

impl Default for RedisClientConfig {
    fn default() -> Self {
        Self {
            redis_url: "redis://127.0.0.1:6379/0".into(),
        }
    }
}

impl RedisClientConfig {
    /// Whether `redis_url` starts with one of the `accepted` schemes ([`TCP_SCHEMES`] or
    /// [`ALL_SCHEMES`], whichever the node supports).
    pub fn has_scheme(&self, accepted: &[&str]) -> bool {
        accepted.iter().any(|s| self.redis_url.starts_with(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        let url = |u: &str| RedisClientConfig {
            redis_url: u.into(),
        };
        assert!(url("redis://h:1/0").has_scheme(TCP_SCHEMES));
        assert!(url("rediss://h:1/0").has_scheme(TCP_SCHEMES));
        assert!(!url("unix:///tmp/r.sock").has_scheme(TCP_SCHEMES));
        assert!(url("unix:///tmp/r.sock").has_scheme(ALL_SCHEMES));
        assert!(url("redis+unix:///tmp/r.sock").has_scheme(ALL_SCHEMES));
        assert!(!url("http://h:1").has_scheme(ALL_SCHEMES));
        assert!(RedisClientConfig::default().has_scheme(TCP_SCHEMES));
    }
}
