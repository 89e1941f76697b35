//! Configuration of a worker node: identity, HTTP, Kafka, owned partitions, model, batching,
//! staleness and delivery mode.
//!
//! Loaded like every Panoptes node by `panoptes_runtime::config::load` (a TOML file, then
//! `PANOPTES_<SECTION>__<KEY>` variables for the sections in [`ENV_SECTIONS`]). Every struct
//! denies unknown fields, so a typo is an error at start, and durations are humantime strings
//! (`"20ms"`, `"2s"`).

use std::path::PathBuf;
use std::time::Duration;

use panoptes_runtime::config::redis::{ALL_SCHEMES, RedisClientConfig};
use panoptes_runtime::config::{KafkaClientConfig, KafkaProducerConfig};
use panoptes_schemas::topics;
use serde::{Deserialize, Serialize};

/// The whole `panoptes-worker` configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// This worker's identity, written into every detection record.
    pub worker_id: String,
    /// Region this worker runs in.
    pub region: String,
    /// Worker group (`source = "coordinator"`): the coordinator places a camera's partition
    /// only on workers of the camera's group.
    pub group: String,
    /// HTTP server for `/healthz`, `/readyz` and `/metrics`.
    pub http: HttpConfig,
    /// Kafka consumer and producers.
    pub kafka: KafkaConfig,
    /// Frames partitions this worker owns (static assignment); empty = all of them.
    pub partitions: Vec<i32>,
    /// Assignment epoch of the static assignment (ignored with `[assignment] source = "redis"`).
    pub epoch: u64,
    /// Where partition ownership and epochs come from.
    pub assignment: AssignmentConfig,
    /// The model to run.
    pub model: ModelConfig,
    /// Dynamic batching.
    pub batching: BatchingConfig,
    /// What to do with frames older than their deadline.
    pub staleness: StalenessConfig,
    /// Frames of one partition in flight (consumed, not yet acknowledged/committed) before
    /// the partition is paused. Bounds the worker's memory.
    pub partition_queue: usize,
    /// Threads decoding JPEG and letterboxing.
    pub decode_threads: usize,
    /// Bounds on what a frame may claim, checked before decoding.
    pub decode: DecodeConfig,
    /// Delivery semantics.
    pub delivery: DeliveryMode,
    /// How often consumed offsets are committed (at-least-once) or transactions are
    /// committed (exactly-once).
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// OTLP trace export (off unless an endpoint is set), `panoptes_runtime::trace`.
    pub tracing: panoptes_runtime::trace::TracingConfig,
    /// Drift per camera ([`crate::drift`]).
    pub drift: crate::drift::DriftConfig,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: "worker-0".into(),
            region: "local".into(),
            group: "default".into(),
            http: HttpConfig::default(),
            kafka: KafkaConfig::default(),
            partitions: Vec::new(),
            epoch: 1,
            assignment: AssignmentConfig::default(),
            model: ModelConfig::default(),
            batching: BatchingConfig::default(),
            staleness: StalenessConfig::default(),
            partition_queue: 64,
            decode_threads: 2,
            decode: DecodeConfig::default(),
            delivery: DeliveryMode::AtLeastOnce,
            commit_interval: Duration::from_millis(200),
            tracing: Default::default(),
            drift: Default::default(),
        }
    }
}

/// Top-level sections that `PANOPTES_…` environment variables may override.
pub const ENV_SECTIONS: &[&str] = &[
    "worker_id",
    "region",
    "group",
    "http",
    "kafka",
    "partitions",
    "epoch",
    "assignment",
    "model",
    "batching",
    "staleness",
    "partition_queue",
    "decode_threads",
    "decode",
    "delivery",
    "commit_interval",
    "tracing",
    "drift",
];

pub use panoptes_runtime::config::ConfigInvalid;

impl WorkerConfig {
    /// Checks values serde cannot (bounds, non-empty names).
    pub fn validate(&self) -> Result<(), ConfigInvalid> {
        let bad = |s: String| Err(ConfigInvalid(s));
        // The [kafka] security settings (TLS files, SASL user and password) fail closed.
        if let Err(e) = self.kafka.client.validate() {
            return bad(e.to_string());
        }
        if self.worker_id.trim().is_empty() || self.worker_id.contains(char::is_whitespace) {
            return bad(format!(
                "worker_id {:?} is empty or has spaces",
                self.worker_id
            ));
        }
        if self.batching.max_batch == 0 || self.batching.max_batch > 256 {
            return bad(format!(
                "batching.max_batch {} outside 1..=256",
                self.batching.max_batch
            ));
        }
        if self.partition_queue == 0 {
            return bad("partition_queue must be at least 1".into());
        }
        if self.decode_threads == 0 || self.decode_threads > 64 {
            return bad(format!(
                "decode_threads {} outside 1..=64",
                self.decode_threads
            ));
        }
        let max_side = u64::from(panoptes_schemas::MAX_DIMENSION);
        if self.decode.max_frame_pixels == 0 || self.decode.max_frame_pixels > max_side * max_side {
            return bad(format!(
                "decode.max_frame_pixels {} outside 1..={}",
                self.decode.max_frame_pixels,
                max_side * max_side
            ));
        }
        if let Some(p) = self.partitions.iter().find(|p| **p < 0) {
            return bad(format!("partition {p} is negative"));
        }
        if self.epoch == 0 {
            return bad("epoch must be at least 1".into());
        }
        if self.assignment.source == AssignmentSource::Coordinator {
            if !self.partitions.is_empty() {
                return bad(
                    "assignment.source = \"coordinator\" takes partitions from the coordinator: \
                     leave partitions empty"
                        .into(),
                );
            }
            if self.worker_id.contains(':') || self.group.trim().is_empty() {
                return bad("coordinator mode needs a worker_id without ':' and a group".into());
            }
            let a = &self.assignment;
            if a.lease_ttl < Duration::from_millis(200) || a.lease_ttl > Duration::from_secs(60) {
                return bad(format!(
                    "assignment.lease_ttl {:?} outside [200ms, 60s]",
                    a.lease_ttl
                ));
            }
            if a.poll_interval.is_zero() || a.poll_interval > Duration::from_secs(60) {
                return bad(format!(
                    "assignment.poll_interval {:?} outside (0, 60s]",
                    a.poll_interval
                ));
            }
            if a.capacity.is_some_and(|c| !(c > 0.0 && c.is_finite())) {
                return bad("assignment.capacity must be positive".into());
            }
            if a.node_class.as_deref().is_some_and(|c| {
                c.is_empty()
                    || !c
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
            }) {
                return bad("assignment.node_class must be a non-empty [A-Za-z0-9._-] name".into());
            }
        }
        if self.assignment.source != AssignmentSource::Static {
            if self.assignment.source == AssignmentSource::Redis && self.partitions.is_empty() {
                return bad("assignment.source = \"redis\" needs explicit partitions".into());
            }
            self.assignment
                .redis
                .validate("assignment.redis_url", ALL_SCHEMES)
                .map_err(ConfigInvalid)?;
        }
        if self.assignment.check_timeout.is_zero()
            || self.assignment.check_timeout > Duration::from_secs(10)
        {
            return bad(format!(
                "assignment.check_timeout {:?} outside (0, 10s]",
                self.assignment.check_timeout
            ));
        }
        parse_device(&self.model.device).map_err(ConfigInvalid)?;
        self.drift.validate().map_err(ConfigInvalid)?;
        self.model
            .validate(self.follows_rollout())
            .map_err(ConfigInvalid)?;
        Ok(())
    }

    /// The node class reported to the coordinator: `assignment.node_class`, else `cuda` for a
    /// CUDA `model.device`, else `cpu`.
    pub fn node_class(&self) -> String {
        match &self.assignment.node_class {
            Some(c) => c.clone(),
            None if self.model.device.starts_with("cuda") => "cuda".into(),
            None => "cpu".into(),
        }
    }

    /// Whether the worker follows its group's rollout record (a model repository, Redis
    /// reachable through the assignment source, and a group).
    pub fn follows_rollout(&self) -> bool {
        self.model.repository.is_some()
            && self.assignment.source != AssignmentSource::Static
            && !self.group.trim().is_empty()
    }
}

/// Assignment source names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AssignmentSource {
    /// `partitions` + `epoch` from this file.
    Static,
    /// The coordinator's records in Redis (`docs/coordination-keys.md`), read at start for
    /// the configured partitions.
    Redis,
    /// Partitions granted at run time by the coordinator: the worker is a member (lease,
    /// load, capacity) and follows its grants, moves and takeovers without restarting.
    Coordinator,
}

/// Where partition ownership and epochs come from.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AssignmentConfig {
    /// `static`, `redis` or `coordinator`.
    pub source: AssignmentSource,
    /// Redis (`redis_url`, `redis://host:port/db`), used with `redis` and `coordinator`.
    #[serde(flatten)]
    pub redis: RedisClientConfig,
    /// Bound on one Redis round trip (connect, read, write); a check that does not answer
    /// in time fails closed.
    #[serde(with = "humantime_serde")]
    pub check_timeout: Duration,
    /// Coordinator mode: capacity reported to the coordinator, in load units (frames/s at
    /// 640×360). Unset: measured at start (timed forward passes at `max_batch`).
    pub capacity: Option<f64>,
    /// Coordinator mode: the node class reported to the coordinator, which prices it in its
    /// `[cost]` section. Unset: `cuda` when `model.device` is a CUDA device, else `cpu`.
    pub node_class: Option<String>,
    /// Coordinator mode: the member lease TTL (renewed every quarter of it).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Coordinator mode: longest time between two reads of the grants.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Coordinator mode: longest graceful handover of one partition (stop intake, finish,
    /// commit, release); past it the partition is dropped without release.
    #[serde(with = "humantime_serde")]
    pub handover_timeout: Duration,
    /// Coordinator mode: on SIGTERM, how long the worker keeps serving while the coordinator
    /// moves its partitions away, before the ordered shutdown.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for AssignmentConfig {
    fn default() -> Self {
        Self {
            source: AssignmentSource::Static,
            redis: RedisClientConfig::default(),
            check_timeout: Duration::from_millis(500),
            capacity: None,
            node_class: None,
            lease_ttl: Duration::from_secs(1),
            poll_interval: Duration::from_millis(500),
            handover_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(15),
        }
    }
}

/// `[http]`: `/healthz`, `/readyz` and `/metrics`, on 127.0.0.1:9201 by default.
pub type HttpConfig = panoptes_runtime::config::HttpConfig<9201>;

/// Kafka settings shared by the consumer and the producers.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap_servers`, `properties` (extra librdkafka properties for every client;
    /// they override the settings below) and the connection's security: the keys every
    /// node's `[kafka]` shares.
    #[serde(flatten)]
    pub client: KafkaClientConfig,
    /// Frames topic (input).
    pub frames_topic: String,
    /// Detections topic (output).
    pub detections_topic: String,
    /// Dead-letter topic (output).
    pub dlq_topic: String,
    /// Shadow detections topic (output while a shadow model runs, [`crate::shadow`]).
    pub shadow_topic: String,
    /// Consumer group whose committed offsets mark progress.
    pub group_id: String,
    /// `message_timeout`: how long a record may wait for the broker before delivery is
    /// reported failed (default 30 s).
    #[serde(flatten)]
    pub producer: KafkaProducerConfig<30>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            client: KafkaClientConfig::default(),
            frames_topic: topics::FRAMES.into(),
            detections_topic: topics::DETECTIONS.into(),
            dlq_topic: topics::FRAMES_DLQ.into(),
            shadow_topic: topics::DETECTIONS_SHADOW.into(),
            group_id: "panoptes-workers".into(),
            producer: KafkaProducerConfig::default(),
        }
    }
}

/// Which model and where it runs: one file (`path`, `manifest`), or a version of `name`
/// in a model `repository` (`<repository>/<name>/<version>/{model.pt,manifest.json}`,
/// SHA-256 checked before every load), which the worker hot-swaps as the group's rollout
/// record (`panoptes:rollout:<group>`) changes ([`crate::swap`]).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// TorchScript file (single-file mode; ignored with `repository`).
    pub path: PathBuf,
    /// JSON manifest; defaults to `path` with the extension `.json`.
    pub manifest: Option<PathBuf>,
    /// Model repository directory (a volume in Kubernetes). Needs `name`.
    pub repository: Option<PathBuf>,
    /// Model name in the repository.
    pub name: Option<String>,
    /// Version to start with. Unset: the `active` version of the group's rollout record,
    /// read at start (Redis or coordinator assignment); no record and no version is an
    /// error at start. Later rollout changes swap it either way.
    pub version: Option<String>,
    /// `cpu` or `cuda:N`.
    pub device: String,
    /// libtorch intra-op threads (0 = libtorch's default).
    pub intra_op_threads: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("models/reference-detector.pt"),
            manifest: None,
            repository: None,
            name: None,
            version: None,
            device: "cpu".into(),
            intra_op_threads: 1,
        }
    }
}

impl ModelConfig {
    /// Checks the repository fields: `repository` needs a valid `name`; a `version`, if
    /// set, must be valid; without Redis (`follows_rollout` false) the version is required.
    pub fn validate(&self, follows_rollout: bool) -> Result<(), String> {
        use panoptes_schemas::model::validate_model_name;
        let Some(repo) = &self.repository else {
            if self.name.is_some() || self.version.is_some() {
                return Err("model.name and model.version need model.repository".into());
            }
            return Ok(());
        };
        if repo.as_os_str().is_empty() {
            return Err("model.repository is empty".into());
        }
        let name = self
            .name
            .as_deref()
            .ok_or("model.repository needs model.name")?;
        validate_model_name("model.name", name)?;
        match &self.version {
            Some(v) => validate_model_name("model.version", v),
            None if follows_rollout => Ok(()),
            None => Err(
                "model.repository without Redis (assignment.source = \"static\" or no \
                         group) needs model.version: there is no rollout record to start from"
                    .into(),
            ),
        }
    }

    /// The manifest path, explicit or derived from the model path.
    pub fn manifest_path(&self) -> PathBuf {
        self.manifest
            .clone()
            .unwrap_or_else(|| self.path.with_extension("json"))
    }
}

/// Parses a configured device: `cpu` / `cuda` / `cuda:N`.
pub fn parse_device(s: &str) -> Result<tch::Device, String> {
    match s.trim() {
        "cpu" => Ok(tch::Device::Cpu),
        "cuda" => Ok(tch::Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .map(tch::Device::Cuda)
            .ok_or_else(|| format!("device {other:?} is neither \"cpu\" nor \"cuda:N\"")),
    }
}

/// Dynamic batching.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// Largest batch.
    pub max_batch: usize,
    /// Longest time the oldest frame of a batch waits for the batch to fill.
    #[serde(with = "humantime_serde")]
    pub max_wait: Duration,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            max_batch: 8,
            max_wait: Duration::from_millis(20),
        }
    }
}

/// Default of `[decode] max_frame_pixels`: a 4K UHD frame, 3840×2160. Frames are published
/// at the analytic resolution (640×360 by default, at most 3840×2160 as the coordinator's
/// registry accepts) and the model sees 640×640 or so, so nothing larger is ever useful;
/// decoding a frame costs `3 × pixels` bytes of scratch per decode thread (25 MB here).
pub const DEFAULT_MAX_FRAME_PIXELS: u64 = 3840 * 2160;

/// `[decode]`: bounds on what a frame may claim, checked against its envelope and JPEG header
/// before anything is allocated for its pixels (`docs/security.md`, hostile input).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Largest frame accepted, in pixels (width × height of the envelope, which the JPEG
    /// header must match). A decode thread holds at most `3 ×` this many bytes of scratch.
    /// Frames above it are dead-lettered `too_large`. Default: 3840×2160 (4K UHD).
    pub max_frame_pixels: u64,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            max_frame_pixels: DEFAULT_MAX_FRAME_PIXELS,
        }
    }
}

/// Staleness policy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StalePolicy {
    /// Frames older than `max_age` at dequeue get a `skipped_stale` record, no inference.
    Skip,
    /// Every frame is inferred, however old.
    Lossless,
}

/// What to do with old frames.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StalenessConfig {
    /// The policy.
    pub policy: StalePolicy,
    /// Age (capture → dequeue) beyond which a frame is stale.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

impl Default for StalenessConfig {
    fn default() -> Self {
        Self {
            policy: StalePolicy::Skip,
            max_age: Duration::from_secs(2),
        }
    }
}

/// Delivery semantics of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Idempotent producer; offsets committed once everything before them is acknowledged.
    /// A crash re-processes the uncommitted tail (duplicates, never loss).
    AtLeastOnce,
    /// One Kafka transaction per owned partition carries the records and the input offsets.
    ExactlyOnce,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c: WorkerConfig = panoptes_runtime::config::from_toml_str(
            "worker_id = \"w1\"\npartitions = [0, 2]\ndelivery = \"exactly_once\"\n\
             [batching]\nmax_wait = \"5ms\"\n[staleness]\npolicy = \"lossless\"\n",
        )
        .unwrap();
        assert_eq!(c.partitions, vec![0, 2]);
        assert_eq!(c.batching.max_batch, 8);
        assert_eq!(c.batching.max_wait, Duration::from_millis(5));
        assert_eq!(c.staleness.policy, StalePolicy::Lossless);
        assert_eq!(c.staleness.max_age, Duration::from_secs(2));
        assert_eq!(c.delivery, DeliveryMode::ExactlyOnce);
        assert_eq!(c.epoch, 1);
        assert_eq!(c.assignment.source, AssignmentSource::Static);
        c.validate().unwrap();
        let r: WorkerConfig = panoptes_runtime::config::from_toml_str(
            "partitions = [1]\n[assignment]\nsource = \"redis\"\nredis_url = \"redis://h:1\"\n\
             check_timeout = \"200ms\"\n",
        )
        .unwrap();
        assert_eq!(r.assignment.source, AssignmentSource::Redis);
        assert_eq!(r.assignment.check_timeout, Duration::from_millis(200));
        r.validate().unwrap();
        let mut all = r.clone();
        all.partitions.clear();
        assert!(all.validate().is_err(), "redis needs explicit partitions");
        let co: WorkerConfig = panoptes_runtime::config::from_toml_str(
            "group = \"g1\"\n[assignment]\nsource = \"coordinator\"\nlease_ttl = \"2s\"\n\
             poll_interval = \"250ms\"\ncapacity = 40.0\ndrain_timeout = \"5s\"\n",
        )
        .unwrap();
        assert_eq!(co.assignment.source, AssignmentSource::Coordinator);
        assert_eq!(co.assignment.lease_ttl, Duration::from_secs(2));
        assert_eq!(co.assignment.poll_interval, Duration::from_millis(250));
        assert_eq!(co.assignment.capacity, Some(40.0));
        assert_eq!(co.assignment.handover_timeout, Duration::from_secs(10));
        assert_eq!(co.group, "g1");
        co.validate().unwrap();
        assert_eq!(co.node_class(), "cpu");
        let mut gpu = co.clone();
        gpu.model.device = "cuda:1".into();
        assert_eq!(gpu.node_class(), "cuda");
        gpu.assignment.node_class = Some("a100".into());
        assert_eq!(gpu.node_class(), "a100");
        gpu.validate().unwrap();
        gpu.assignment.node_class = Some("two words".into());
        assert!(gpu.validate().is_err());
        let mut with_parts = co.clone();
        with_parts.partitions = vec![1];
        assert!(with_parts.validate().is_err());
        assert_eq!(
            c.model.manifest_path(),
            PathBuf::from("models/reference-detector.json")
        );
    }

    #[test]
    fn repository_mode_is_checked() {
        let mut c = WorkerConfig::default();
        c.model.name = Some("m".into());
        assert!(c.validate().is_err(), "name without repository");
        c.model.repository = Some(PathBuf::from("/models"));
        assert!(c.validate().is_err(), "static needs a version");
        c.model.version = Some("1.0".into());
        c.validate().unwrap();
        c.model.version = Some("../x".into());
        assert!(c.validate().is_err());
        c.model.version = None;
        c.partitions = vec![0];
        c.group = "g".into();
        c.assignment.source = AssignmentSource::Redis;
        c.assignment.redis = RedisClientConfig::from("redis://h:1");
        assert!(c.follows_rollout());
        c.validate().unwrap();
        c.model.name = None;
        assert!(c.validate().is_err(), "repository needs a name");
    }

    #[test]
    fn devices_parse() {
        assert_eq!(parse_device("cpu"), Ok(tch::Device::Cpu));
        assert_eq!(parse_device("cuda:1"), Ok(tch::Device::Cuda(1)));
        assert!(parse_device("gpu").is_err());
        assert!(parse_device("cuda:x").is_err());
    }

    #[test]
    fn typos_and_bad_values_are_rejected() {
        assert!(
            panoptes_runtime::config::from_toml_str::<WorkerConfig>("[batching]\nmax_bach = 3\n")
                .is_err()
        );
        let mut c = WorkerConfig::default();
        c.batching.max_batch = 0;
        assert!(c.validate().is_err());
        let mut c = WorkerConfig::default();
        c.model.device = "tpu".into();
        assert!(c.validate().is_err());
    }
}
