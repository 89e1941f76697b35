//! The coordinator's typed configuration: identity, Redis, topics, regions, leader lease,
//! placement tuning and the operator API.
//!
//! Loaded like every Panoptes process by `panoptes_runtime::config::load` (TOML file, then
//! `PANOPTES_<SECTION>__<KEY>` variables for [`ENV_SECTIONS`]); unknown fields are errors;
//! durations are humantime strings (`"1500ms"`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use panoptes_runtime::config::RedisClientConfig;
pub use panoptes_runtime::tls::TlsFiles;
use serde::{Deserialize, Serialize};

/// Sections (and top-level keys) that `PANOPTES_*` variables may override.
pub const ENV_SECTIONS: &[&str] = &[
    "id",
    "redis_url",
    "redis_tls",
    "redis_username",
    "redis_password_file",
    "camera_key_file",
    "frames_topic",
    "frames_partitions",
    "frames_growth",
    "http",
    "api",
    "leader",
    "placement",
    "recovery",
    "tracing",
    "models",
];

/// The whole `panoptes-coordinator` configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorConfig {
    /// This coordinator's id (unique among coordinators sharing a Redis).
    pub id: String,
    /// Redis holding the coordination state (top-level `redis_url`, `redis_tls`,
    /// `redis_username`, `redis_password_file`).
    #[serde(flatten)]
    pub redis: RedisClientConfig,
    /// Camera keyring file (else `$PANOPTES_CAMERA_KEYS`): seals camera passwords in the
    /// registry; without it a camera URL with a password is refused. Format and rotation:
    /// `panoptes_coordinator_client::sealed`, `docs/security.md`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub camera_key_file: Option<PathBuf>,
    /// Frames topic (same name in every region's Kafka).
    pub frames_topic: String,
    /// Partitions of the frames topic in every region; cameras get partitions in `[0, n)`
    /// (or up to the count recorded by growth, `crate::growth`, when higher).
    pub frames_partitions: i32,
    /// Growing the frames topic when every partition is taken (off by default).
    pub frames_growth: crate::growth::FramesGrowthConfig,
    /// HTTP: `/healthz`, `/readyz`, `/metrics` and the operator API under `/v1`.
    pub http: HttpConfig,
    /// Operator API: TLS, tokens and roles, limits.
    pub api: ApiConfig,
    /// Leader lease.
    pub leader: LeaderConfig,
    /// Placement tuning.
    pub placement: PlacementConfig,
    /// Surviving a Redis that lost writes: remembered epochs, registry restore.
    pub recovery: RecoveryConfig,
    /// Degradation by priority under overload (`crate::degrade`).
    pub degrade: crate::degrade::DegradeConfig,
    /// Prices per node class, for cost per camera-hour (`crate::cost`); optional.
    pub cost: crate::cost::CostConfig,
    /// Model repository and promotion gate (`crate::api::models`, `docs/models.md`).
    pub models: crate::api::models::ModelsConfig,
    /// Regions and their Kafka. The first is the default region of new cameras.
    pub regions: Vec<RegionConfig>,
    /// OTLP trace export (off unless an endpoint is set), `panoptes_runtime::trace`.
    pub tracing: panoptes_runtime::trace::TracingConfig,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            id: format!("coordinator-{}", std::process::id()),
            redis: RedisClientConfig::default(),
            camera_key_file: None,
            frames_topic: panoptes_coordinator_client::records::default_frames_topic(),
            frames_partitions: 16,
            frames_growth: Default::default(),
            http: HttpConfig::default(),
            api: ApiConfig::default(),
            leader: LeaderConfig::default(),
            placement: PlacementConfig::default(),
            recovery: RecoveryConfig::default(),
            degrade: crate::degrade::DegradeConfig::default(),
            cost: crate::cost::CostConfig::default(),
            models: Default::default(),
            regions: vec![RegionConfig {
                name: "local".into(),
                bootstrap_servers: "127.0.0.1:9092".into(),
            }],
            tracing: Default::default(),
        }
    }
}

/// `[http]`: health, metrics and the operator API, on 127.0.0.1:7300 by default (port 0:
/// any free port, printed as `HTTP=` on stdout).
pub type HttpConfig = panoptes_runtime::config::HttpConfig<7300>;

/// `[api]`: the operator API's transport and who may use it.
///
/// Secure by default: the coordinator refuses to start without at least one token, unless
/// `insecure_no_auth = true` AND `[http] listen` is a loopback address (development only).
/// Token values come from files or environment variables ([`TokenConfig`]); the legacy
/// `token` / `token_file` pair is one more operator token named `default`.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Legacy single operator token, inline (prefer `token_file`, `[[api.tokens]]`, or
    /// `PANOPTES_API__TOKEN`). Becomes the operator token named `default`.
    pub token: Option<String>,
    /// Legacy: file holding the operator token named `default` (first line).
    pub token_file: Option<PathBuf>,
    /// Named tokens with roles.
    pub tokens: Vec<TokenConfig>,
    /// Serve the API without any authentication. Only accepted when `[http] listen` is a
    /// loopback address and no token is configured; every caller is then an operator named
    /// `anonymous`.
    pub insecure_no_auth: bool,
    /// TLS: `cert_file` + `key_file` turn HTTPS on (the whole HTTP port: API, health and
    /// metrics); `ca_file` additionally requires client certificates signed by it.
    pub tls: TlsFiles,
    /// Largest request body accepted (bytes); larger ones get `413`.
    pub max_body_bytes: usize,
    /// Most connections served at once; further ones are closed at once (and counted).
    pub max_connections: usize,
    /// Time a client has to complete the TLS handshake, and to send a request's headers.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            token: None,
            token_file: None,
            tokens: Vec::new(),
            insecure_no_auth: false,
            tls: TlsFiles::default(),
            max_body_bytes: 1 << 20,
            max_connections: 256,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("token_file", &self.token_file)
            .field("tokens", &self.tokens)
            .field("insecure_no_auth", &self.insecure_no_auth)
            .field("tls", &self.tls)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_connections", &self.max_connections)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

/// The name the legacy `token` / `token_file` pair gets.
pub const LEGACY_TOKEN_NAME: &str = "default";

impl ApiConfig {
    /// Checks what can be checked without reading secrets: token names and sources, the
    /// fail-closed rule (a token, or `insecure_no_auth` on loopback), TLS pairing, limits.
    pub fn validate(&self, listen: SocketAddr) -> Result<(), ConfigInvalid> {
        let bad = |m: String| Err(ConfigInvalid(m));
        if self.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return bad("api.token is empty: an empty token would accept anyone; set a token or remove the key".into());
        }
        if self.token.is_some() && self.token_file.is_some() {
            return bad("api.token and api.token_file are both set: keep one".into());
        }
        let legacy = self.token.is_some() || self.token_file.is_some();
        let mut names: Vec<&str> = legacy.then_some(LEGACY_TOKEN_NAME).into_iter().collect();
        for t in &self.tokens {
            let ok = (1..=64).contains(&t.name.len())
                && t.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
            if !ok {
                return bad(format!(
                    "api.tokens: name {:?}: use 1-64 letters, digits, '.', '_' or '-'",
                    t.name
                ));
            }
            if names.contains(&t.name.as_str()) {
                return bad(format!(
                    "api.tokens: name {:?} is used twice (\"{LEGACY_TOKEN_NAME}\" is the legacy api.token / api.token_file)",
                    t.name
                ));
            }
            names.push(&t.name);
            if t.token_file.is_none() && t.token_env.as_deref().is_none_or(str::is_empty) {
                return bad(format!(
                    "api.tokens[{}]: set token_file or token_env (token values never go in the config text)",
                    t.name
                ));
            }
        }
        if self.insecure_no_auth {
            if !names.is_empty() {
                return bad("api.insecure_no_auth = true but tokens are configured: remove one or the other".into());
            }
            if !listen.ip().is_loopback() {
                return bad(format!(
                    "api.insecure_no_auth = true is only allowed on a loopback address (http.listen = 127.0.0.1:PORT or [::1]:PORT), not {listen}: configure a token instead"
                ));
            }
        } else if names.is_empty() {
            return bad(format!(
                "the operator API has no token: refusing to serve it unauthenticated on {listen}. Configure [[api.tokens]] (name, role, token_file or token_env) or api.token_file; for development only, api.insecure_no_auth = true with http.listen on 127.0.0.1"
            ));
        }
        if !self.tls.is_empty() && (self.tls.cert_file.is_none() || self.tls.key_file.is_none()) {
            return bad("api.tls needs cert_file and key_file (ca_file alone only makes sense with them: it requires client certificates)".into());
        }
        if !(1024..=64 << 20).contains(&self.max_body_bytes) {
            return bad("api.max_body_bytes must be in 1024..=67108864".into());
        }
        if self.max_connections == 0 {
            return bad("api.max_connections must be at least 1".into());
        }
        if self.handshake_timeout.is_zero() {
            return bad("api.handshake_timeout must be positive".into());
        }
        Ok(())
    }

    /// Whether the API is served over TLS.
    pub fn tls_enabled(&self) -> bool {
        self.tls.cert_file.is_some()
    }
}

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads (`GET`) only.
    Viewer,
    /// Reads and writes.
    Operator,
}

impl Role {
    /// `viewer` or `operator`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[api.tokens]]` entry: a named token with a role. The value is read from
/// `token_file` (first line) or, without one, from the environment variable `token_env`;
/// never from the configuration text itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Who uses it (shown in the audit trail): letters, digits, `.`, `_`, `-`.
    pub name: String,
    /// `viewer` or `operator`.
    pub role: Role,
    /// File holding the token (a Kubernetes Secret volume, mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the token, used when `token_file` is not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_env: Option<String>,
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
    /// Rebalancing moves of a kind start at most once in this interval.
    #[serde(with = "humantime_serde")]
    pub rebalance_cooldown: Duration,
    /// Rebalancing starts new moves only while fewer than this many handovers of the kind
    /// are under way, and up to this many (at least 1). Each move pauses one item for its
    /// handover (an exactly-once partition: the old owner's release and the new owner's
    /// producer start); several at once fill a worker that joined a loaded group that many
    /// times faster.
    pub rebalance_moves: usize,
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
    /// A member dead this long that owns nothing any more is removed from the member set
    /// (it no longer shows in `panoptes status`, and rounds stop reading it).
    #[serde(with = "humantime_serde")]
    pub prune_dead_after: Duration,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(100),
            rebalance_threshold: 0.3,
            rebalance_cooldown: Duration::from_secs(3),
            rebalance_moves: 4,
            target_utilization: 0.7,
            handover_timeout: Duration::from_secs(15),
            seq_margin: Duration::from_secs(1),
            prune_dead_after: Duration::from_secs(30),
        }
    }
}

impl PlacementConfig {
    /// The options placement's pure core plans with.
    pub fn plan_options(&self) -> crate::placement::PlanOptions {
        crate::placement::PlanOptions {
            rebalance_threshold: self.rebalance_threshold,
            rebalance_cooldown_ms: self.rebalance_cooldown.as_millis() as u64,
            rebalance_moves: self.rebalance_moves,
            handover_timeout_ms: self.handover_timeout.as_millis() as u64,
        }
    }
}

/// `[recovery]`: what the coordinator does when Redis comes back without its writes
/// (`docs/coordinator.md`, "Epochs that never go backwards"). Epochs, the fencing token and
/// a copy of the registry are always remembered in memory; these settings keep them across
/// a coordinator restart and restore the registry when there is no copy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// Local file keeping the highest fencing token and epochs seen and the registry copy
    /// (JSON, written atomically on change; sealed passwords stay sealed). Unset: memory
    /// only. Give each coordinator its own file on a persistent volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_file: Option<PathBuf>,
    /// Declarative camera file (`cameras.yaml`, as `panoptes apply -f` reads it): applied
    /// when Redis holds no registry and this coordinator has no copy of one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub camera_file: Option<PathBuf>,
    /// After winning an election on an emptied Redis without remembered epochs, once a
    /// member reports epochs it held, grants wait this long so that every live member has
    /// re-registered and reported its own (default 2 s: two member lease TTLs).
    #[serde(with = "humantime_serde")]
    pub reseed_hold: Duration,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            state_file: None,
            camera_file: None,
            reseed_hold: Duration::from_secs(2),
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
    /// The camera keyring from `camera_key_file` or `$PANOPTES_CAMERA_KEYS` (`None` when
    /// neither is set); an unreadable or bad keyring is an error (fail closed).
    pub fn camera_keys(
        &self,
    ) -> Result<Option<panoptes_coordinator_client::sealed::Keyring>, ConfigInvalid> {
        panoptes_coordinator_client::sealed::Keyring::load(self.camera_key_file.as_deref())
            .map_err(|e| ConfigInvalid(e.to_string()))
    }

    /// Checks ranges and names.
    pub fn validate(&self) -> Result<(), ConfigInvalid> {
        let bad = |m: String| Err(ConfigInvalid(m));
        self.redis
            .validate("redis_url", panoptes_runtime::config::redis::ALL_SCHEMES)
            .map_err(ConfigInvalid)?;
        if self.id.is_empty() || self.id.contains(':') {
            return bad(format!("id {:?} must be non-empty without ':'", self.id));
        }
        if !(1..=10_000).contains(&self.frames_partitions) {
            return bad(format!(
                "frames_partitions = {} is out of range 1..=10000",
                self.frames_partitions
            ));
        }
        let max = self.frames_growth.max_partitions;
        if max != 0 && !(self.frames_partitions..=10_000).contains(&max) {
            return bad(format!(
                "frames_growth.max_partitions = {max} must be 0 (no growth) or within frames_partitions..=10000 ({}..=10000)",
                self.frames_partitions
            ));
        }
        if max != 0 {
            self.frames_growth
                .kafka
                .client
                .validate()
                .map_err(|e| ConfigInvalid(format!("frames_growth.{e}")))?;
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
        self.degrade.validate().map_err(ConfigInvalid)?;
        self.cost.validate().map_err(ConfigInvalid)?;
        self.models.validate().map_err(ConfigInvalid)?;
        if self.recovery.reseed_hold > Duration::from_secs(60) {
            return bad("recovery.reseed_hold must be at most 60s".into());
        }
        self.api.validate(self.http.listen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_refused() {
        let mut c = CoordinatorConfig::default();
        c.api.token_file = Some("/run/secrets/t".into());
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
    fn the_api_fails_closed() {
        let listen = |s: &str| s.parse::<SocketAddr>().unwrap();
        let api = |f: &dyn Fn(&mut ApiConfig)| {
            let mut a = ApiConfig::default();
            f(&mut a);
            a
        };
        let entry = |name: &str, file: Option<&str>, env: Option<&str>| TokenConfig {
            name: name.into(),
            role: Role::Viewer,
            token_file: file.map(PathBuf::from),
            token_env: env.map(str::to_owned),
        };
        let public = listen("0.0.0.0:7300");
        let cases: Vec<(&str, ApiConfig, SocketAddr, Option<&str>)> = vec![
            ("nothing", api(&|_| {}), public, Some("has no token")),
            (
                "nothing on loopback",
                api(&|_| {}),
                listen("127.0.0.1:7300"),
                Some("has no token"),
            ),
            (
                "empty token",
                api(&|a| a.token = Some(" ".into())),
                public,
                Some("api.token is empty"),
            ),
            (
                "legacy file",
                api(&|a| a.token_file = Some("/t".into())),
                public,
                None,
            ),
            (
                "both legacy",
                api(&|a| {
                    a.token = Some("x".into());
                    a.token_file = Some("/t".into());
                }),
                public,
                Some("both set"),
            ),
            (
                "named",
                api(&|a| a.tokens = vec![entry("ci", None, Some("CI_TOKEN"))]),
                public,
                None,
            ),
            (
                "no source",
                api(&|a| a.tokens = vec![entry("ci", None, Some(""))]),
                public,
                Some("set token_file or token_env"),
            ),
            (
                "bad name",
                api(&|a| a.tokens = vec![entry("c i", Some("/t"), None)]),
                public,
                Some("name \"c i\""),
            ),
            (
                "legacy name reused",
                api(&|a| {
                    a.token_file = Some("/t".into());
                    a.tokens = vec![entry("default", Some("/u"), None)];
                }),
                public,
                Some("used twice"),
            ),
            (
                "insecure on loopback",
                api(&|a| a.insecure_no_auth = true),
                listen("127.0.0.1:0"),
                None,
            ),
            (
                "insecure on ::1",
                api(&|a| a.insecure_no_auth = true),
                listen("[::1]:0"),
                None,
            ),
            (
                "insecure in public",
                api(&|a| a.insecure_no_auth = true),
                public,
                Some("only allowed on a loopback address"),
            ),
            (
                "insecure with tokens",
                api(&|a| {
                    a.insecure_no_auth = true;
                    a.token_file = Some("/t".into());
                }),
                listen("127.0.0.1:0"),
                Some("remove one or the other"),
            ),
            (
                "tls without key",
                api(&|a| {
                    a.token_file = Some("/t".into());
                    a.tls.ca_file = Some("/ca".into());
                }),
                public,
                Some("cert_file and key_file"),
            ),
        ];
        for (what, a, at, want) in cases {
            match (a.validate(at), want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => assert!(e.0.contains(w), "{what}: {}", e.0),
                (r, w) => panic!("{what}: got {r:?}, wanted {w:?}"),
            }
        }
        assert!(!format!("{:?}", api(&|a| a.token = Some("s3cret".into()))).contains("s3cret"));
    }

    #[test]
    fn unknown_fields_are_errors() {
        let r: Result<CoordinatorConfig, _> =
            panoptes_runtime::config::from_toml_str("[leader]\nttl = \"1s\"\nttel = 3\n");
        assert!(r.is_err());
    }
}
