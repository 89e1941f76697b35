//! The coordinator's typed configuration: identity, Redis, topics, regions, leader lease,
//! placement tuning and the operator API.
//!
//! Loaded like every Panoptes process by `panoptes_runtime::config::load` (TOML file, then
//! `PANOPTES_<SECTION>__<KEY>` variables for [`ENV_SECTIONS`]); unknown fields are errors;
//! durations are humantime strings (`"1500ms"`).

use std::path::PathBuf;
use std::time::Duration;

pub use panoptes_runtime::config::RedisClientConfig;
use serde::{Deserialize, Serialize};

/// Sections (and top-level keys) that `PANOPTES_*` variables may override.
pub const ENV_SECTIONS: &[&str] = &[
    "id",
    "redis_url",
    "frames_topic",
    "frames_partitions",
    "http",
    "api",
    "leader",
    "placement",
];

/// The whole `panoptes-coordinator` configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorConfig {
    /// This coordinator's id (unique among coordinators sharing a Redis).
    pub id: String,
    /// Redis holding the coordination state (top-level `redis_url`).
    #[serde(flatten)]
    pub redis: RedisClientConfig,
    /// Frames topic (same name in every region's Kafka).
    pub frames_topic: String,
    /// Partitions of the frames topic in every region; cameras get partitions in `[0, n)`.
    pub frames_partitions: i32,
    /// HTTP: `/healthz`, `/readyz`, `/metrics` and the operator API under `/v1`.
    pub http: HttpConfig,
    /// Operator API authentication.
    pub api: ApiConfig,
    /// Leader lease.
    pub leader: LeaderConfig,
    /// Placement tuning.
    pub placement: PlacementConfig,
    /// Regions and their Kafka. The first is the default region of new cameras.
    pub regions: Vec<RegionConfig>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            id: format!("coordinator-{}", std::process::id()),
            redis: RedisClientConfig::default(),
            frames_topic: panoptes_coordinator_client::records::default_frames_topic(),
            frames_partitions: 16,
            http: HttpConfig::default(),
            api: ApiConfig::default(),
            leader: LeaderConfig::default(),
            placement: PlacementConfig::default(),
            regions: vec![RegionConfig {
                name: "local".into(),
                bootstrap_servers: "127.0.0.1:9092".into(),
            }],
        }
    }
}

/// `[http]`: health, metrics and the operator API, on 127.0.0.1:7300 by default (port 0:
/// any free port, printed as `HTTP=` on stdout).
pub type HttpConfig = panoptes_runtime::config::HttpConfig<7300>;

/// Operator API authentication: a bearer token, given inline or (better) in a file.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// The token (prefer `token_file` or `PANOPTES_API__TOKEN`).
    pub token: Option<String>,
    /// File holding the token (first line).
    pub token_file: Option<PathBuf>,
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// Leader lease.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaderConfig {
    /// Lease TTL: a dead leader is replaced within about this long (renewed every TTL/3).
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_millis(1500),
        }
    }
}

/// Placement tuning.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacementConfig {
    /// How often the leader reads the state and acts (it also wakes on members' messages).
    #[serde(with = "humantime_serde")]
    pub tick: Duration,
    /// A rebalancing move must narrow the gap between two members' utilisations (assigned
    /// load / capacity) by at least this fraction of the most moving one item could narrow
    /// it: equal members holding 8–0 or 3–1 items rebalance, 2–1 do not.
    pub rebalance_threshold: f64,
    /// At most one rebalancing move per kind in this interval.
    #[serde(with = "humantime_serde")]
    pub rebalance_cooldown: Duration,
    /// Utilisation the desired-replicas figure aims at.
    pub target_utilization: f64,
    /// A handover not released within this long is forced (the item is granted to its
    /// target at a higher epoch; the old owner's commits are then rejected by the epoch).
    #[serde(with = "humantime_serde")]
    pub handover_timeout: Duration,
    /// A camera whose ingest node died restarts at the last reported sequence number plus
    /// its fps times (the report's age plus this margin): frames that may have been
    /// published in between are never numbered twice (the rest shows as a gap).
    #[serde(with = "humantime_serde")]
    pub seq_margin: Duration,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(100),
            rebalance_threshold: 0.3,
            rebalance_cooldown: Duration::from_secs(3),
            target_utilization: 0.7,
            handover_timeout: Duration::from_secs(15),
            seq_margin: Duration::from_secs(1),
        }
    }
}

/// One region.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    /// Region name (letters, digits, `-`, `_`).
    pub name: String,
    /// Its Kafka bootstrap servers.
    pub bootstrap_servers: String,
}

pub use panoptes_runtime::config::ConfigInvalid;

impl CoordinatorConfig {
    /// Checks ranges and names.
    pub fn validate(&self) -> Result<(), ConfigInvalid> {
        let bad = |m: String| Err(ConfigInvalid(m));
        if self.id.is_empty() || self.id.contains(':') {
            return bad(format!("id {:?} must be non-empty without ':'", self.id));
        }
        if !(1..=10_000).contains(&self.frames_partitions) {
            return bad(format!(
                "frames_partitions = {} is out of range 1..=10000",
                self.frames_partitions
            ));
        }
        if self.regions.is_empty() {
            return bad("at least one [[regions]] entry is needed".into());
        }
        for (i, r) in self.regions.iter().enumerate() {
            let ok = !r.name.is_empty()
                && r.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !ok {
                return bad(format!(
                    "region name {:?}: use letters, digits, '-' and '_'",
                    r.name
                ));
            }
            if self.regions[..i].iter().any(|o| o.name == r.name) {
                return bad(format!("region {} is listed twice", r.name));
            }
        }
        if self.leader.ttl < Duration::from_millis(300) {
            return bad("leader.ttl must be at least 300ms".into());
        }
        if self.placement.tick.is_zero() || self.placement.tick > self.leader.ttl / 2 {
            return bad("placement.tick must be positive and at most half of leader.ttl".into());
        }
        if !(0.05..=1.0).contains(&self.placement.target_utilization) {
            return bad("placement.target_utilization must be in 0.05..=1.0".into());
        }
        Ok(())
    }

    /// The API token, from `api.token` or the first line of `api.token_file`.
    pub fn api_token(&self) -> Result<Option<String>, ConfigInvalid> {
        if let Some(t) = &self.api.token {
            return Ok(Some(t.trim().to_string()).filter(|t| !t.is_empty()));
        }
        match &self.api.token_file {
            None => Ok(None),
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigInvalid(format!("api.token_file {}: {e}", p.display())))?;
                Ok(text
                    .lines()
                    .next()
                    .map(|l| l.trim().to_string())
                    .filter(|t| !t.is_empty()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_refused() {
        let c = CoordinatorConfig::default();
        c.validate().unwrap();
        let mut bad = c.clone();
        bad.regions.push(bad.regions[0].clone());
        assert!(bad.validate().unwrap_err().0.contains("twice"));
        let mut bad = c.clone();
        bad.frames_partitions = 0;
        assert!(bad.validate().is_err());
        let mut bad = c;
        bad.placement.tick = Duration::from_secs(5);
        assert!(bad.validate().is_err());
    }

    #[test]
    fn unknown_fields_are_errors() {
        let r: Result<CoordinatorConfig, _> =
            panoptes_runtime::config::from_toml_str("[leader]\nttl = \"1s\"\nttel = 3\n");
        assert!(r.is_err());
    }
}
