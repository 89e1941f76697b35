//! Configuration of an ingest node: where to publish, HTTP port, and the cameras to pull.
//!
//! Every camera setting has a node-wide default in `[camera_defaults]` that a camera entry may
//! override. In static mode the `[[cameras]]` list is the node's desired state; in
//! coordinator mode (`[coordinator] enabled = true`) the coordinator's grants are, resolved
//! into the same [`CameraSpec`]s (see [`crate::coordinated`]) and pushed through
//! [`crate::node::IngestNode::apply`] without a restart.

use std::time::Duration;

use panoptes_runtime::config::redis::{ALL_SCHEMES, RedisClientConfig};
use panoptes_runtime::config::{KafkaClientConfig, KafkaProducerConfig};
use panoptes_runtime::redact::CameraUrl;
use panoptes_schemas::{topics, validate_camera_id};
use serde::{Deserialize, Serialize};

/// The whole `panoptes-ingest` configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// This node's identity in logs and, in coordinator mode, its member id.
    pub node_id: String,
    /// Region this node runs in.
    pub region: String,
    /// HTTP server for `/healthz`, `/readyz`, `/metrics` and `/cameras`.
    pub http: HttpConfig,
    /// The Kafka producer.
    pub kafka: KafkaConfig,
    /// Defaults for every camera.
    pub camera_defaults: CameraDefaults,
    /// Cameras this node pulls (static assignment). Must be empty in coordinator mode.
    pub cameras: Vec<CameraConfig>,
    /// Taking cameras from the coordinator at run time instead of `cameras`.
    pub coordinator: CoordinatorConfig,
    /// OTLP trace export (off unless an endpoint is set), `panoptes_runtime::trace`.
    pub tracing: panoptes_runtime::trace::TracingConfig,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            node_id: "ingest-0".into(),
            region: "local".into(),
            http: HttpConfig::default(),
            kafka: KafkaConfig::default(),
            camera_defaults: CameraDefaults::default(),
            cameras: Vec::new(),
            coordinator: CoordinatorConfig::default(),
            tracing: Default::default(),
        }
    }
}

/// Top-level sections that `PANOPTES_…` environment variables may override.
pub const ENV_SECTIONS: &[&str] = &[
    "node_id",
    "region",
    "http",
    "kafka",
    "camera_defaults",
    "coordinator",
    "tracing",
];

/// Coordinator mode: the node registers as an ingest member in Redis and runs the cameras
/// the coordinator grants it (protocol: `docs/coordination-keys.md`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordinatorConfig {
    /// Take cameras from the coordinator. The file's `cameras` list must then be empty.
    pub enabled: bool,
    /// Redis holding the coordination state (`redis_url`, e.g. `redis://10.0.0.5:6379/0`).
    #[serde(flatten)]
    pub redis: RedisClientConfig,
    /// Ingest pool this node belongs to; the coordinator places cameras within it.
    pub group: String,
    /// What this node can pull, in load units: frames per second at 640×360 (a camera's
    /// load is `fps × width × height / (640 × 360)` of its analytic box, see
    /// `CameraRecord::load`). 40 = e.g. eight 640×360 cameras at 5 fps, or one 1280×720 at 10.
    pub capacity: f64,
    /// Node class reported to the coordinator, which prices it in its `[cost]` section.
    pub node_class: String,
    /// The node's lease: the coordinator treats it as dead this long after its last renewal.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Longest time between two reads of the node's assignments (pub/sub wakes it sooner).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// On SIGTERM, how long the node keeps running while the coordinator moves its cameras
    /// away (each handed over with its next sequence number) before it stops the rest.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How long a handover waits for the moving camera's frames to be acknowledged by the
    /// broker before it releases the camera anyway (counted as `undelivered`).
    #[serde(with = "humantime_serde")]
    pub handover_flush_timeout: Duration,
    /// HTTP base URL advertised to the coordinator; default `http://<bound listen address>`.
    pub advertise_http: Option<String>,
    /// Keyring that opens the camera passwords sealed in the registry (else
    /// `$PANOPTES_CAMERA_KEYS`; format and rotation: `panoptes_coordinator_client::sealed`).
    /// Without it, a camera whose record holds a password is not started (counted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub camera_key_file: Option<std::path::PathBuf>,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            redis: RedisClientConfig::default(),
            group: "default".into(),
            capacity: 40.0,
            node_class: "ingest".into(),
            lease_ttl: Duration::from_secs(1),
            poll_interval: Duration::from_millis(500),
            drain_timeout: Duration::from_secs(10),
            handover_flush_timeout: Duration::from_secs(5),
            advertise_http: None,
            camera_key_file: None,
        }
    }
}

/// `[http]`: `/healthz`, `/readyz`, `/metrics` and `/cameras`, on 127.0.0.1:9101 by default.
pub type HttpConfig = panoptes_runtime::config::HttpConfig<9101>;

/// Kafka producer settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap_servers`, `properties` (they override the settings below) and the
    /// connection's security: the keys every node's `[kafka]` shares.
    #[serde(flatten)]
    pub client: KafkaClientConfig,
    /// Frames topic.
    pub topic: String,
    /// Largest frame record the broker accepts; bigger frames are dropped and counted.
    pub message_max_bytes: usize,
    /// Bound of the producer's local queue, in messages.
    pub queue_max_messages: u32,
    /// Bound of the producer's local queue, in KiB. With the message bound, this caps the
    /// frames held while the broker is unreachable (the memory bound of the node).
    pub queue_max_kbytes: u32,
    /// `linger.ms`.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// `message_timeout`: how long a frame may wait for the broker before it is reported
    /// failed (default 300 s).
    #[serde(flatten)]
    pub producer: KafkaProducerConfig<300>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            client: KafkaClientConfig::default(),
            topic: topics::FRAMES.into(),
            message_max_bytes: 1_000_000,
            queue_max_messages: 2_000,
            queue_max_kbytes: 64 * 1024,
            linger: Duration::from_millis(5),
            producer: KafkaProducerConfig::default(),
        }
    }
}

/// RTSP lower transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// RTP interleaved in the RTSP TCP connection: works through NAT and firewalls.
    Tcp,
    /// RTP over UDP: lower latency on a clean network.
    Udp,
    /// Let rtspsrc try UDP then TCP.
    Auto,
}

impl Transport {
    /// The value of rtspsrc's `protocols` property.
    pub fn rtspsrc_protocols(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Auto => "tcp+udp+udp-mcast",
        }
    }
}

/// Per-camera settings with node-wide defaults.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraDefaults {
    /// Frames per second published (sampling); a slower camera publishes at its own rate.
    pub fps: u32,
    /// Largest analytic width: frames are scaled down to fit, aspect ratio kept.
    pub width: u32,
    /// Largest analytic height.
    pub height: u32,
    /// JPEG quality 1..=100.
    pub jpeg_quality: u32,
    /// RTSP transport.
    pub transport: Transport,
    /// rtspsrc jitter-buffer latency.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Time allowed from start to the first frame.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Watchdog: a streaming camera that delivers no frame for this long is reconnected.
    #[serde(with = "humantime_serde")]
    pub no_data_timeout: Duration,
    /// First reconnect delay; doubles per failure up to `backoff_max` (with jitter).
    #[serde(with = "humantime_serde")]
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    #[serde(with = "humantime_serde")]
    pub backoff_max: Duration,
    /// Frames held between the encoder and the publisher; older frames are dropped first.
    pub buffer_frames: u32,
    /// Frames carry the camera's own capture time (RTCP sender reports) while it is within
    /// this of the node's clock, else their arrival time; `0s` always uses arrival.
    #[serde(with = "humantime_serde")]
    pub camera_clock_tolerance: Duration,
    /// Drop, before the decoder, frames the sampler would not keep (non-reference pictures;
    /// all but keyframes at very low rates) when the camera sends at least twice the sampling
    /// rate (`crate::decode_skip`).
    pub decode_skip: bool,
}

impl Default for CameraDefaults {
    fn default() -> Self {
        Self {
            fps: 5,
            width: 640,
            height: 360,
            jpeg_quality: 80,
            transport: Transport::Tcp,
            latency: Duration::from_millis(200),
            connect_timeout: Duration::from_secs(10),
            no_data_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(5),
            buffer_frames: 2,
            camera_clock_tolerance: Duration::from_secs(2),
            decode_skip: true,
        }
    }
}

/// One camera entry of the config file; unset fields take `[camera_defaults]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CameraConfig {
    /// Camera id: Kafka key and metric label.
    pub id: String,
    /// `rtsp://[user:password@]host[:port]/path`.
    pub url: String,
    /// Overrides `camera_defaults.fps`.
    pub fps: Option<u32>,
    /// Overrides `camera_defaults.width`.
    pub width: Option<u32>,
    /// Overrides `camera_defaults.height`.
    pub height: Option<u32>,
    /// Overrides `camera_defaults.jpeg_quality`.
    pub jpeg_quality: Option<u32>,
    /// Overrides `camera_defaults.transport`.
    pub transport: Option<Transport>,
    /// Overrides `camera_defaults.latency`.
    #[serde(with = "humantime_serde::option")]
    pub latency: Option<Duration>,
    /// Kafka partition of this camera; default: chosen by the key (camera id).
    pub partition: Option<i32>,
}

/// A fully resolved camera: what one camera pipeline needs.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraSpec {
    /// Camera id.
    pub id: String,
    /// URL with credentials split off.
    pub url: CameraUrl,
    /// Sampling rate.
    pub fps: u32,
    /// Analytic bounding box width.
    pub width: u32,
    /// Analytic bounding box height.
    pub height: u32,
    /// JPEG quality.
    pub jpeg_quality: u32,
    /// RTSP transport.
    pub transport: Transport,
    /// Jitter-buffer latency.
    pub latency: Duration,
    /// Time to the first frame.
    pub connect_timeout: Duration,
    /// No-data watchdog.
    pub no_data_timeout: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Appsink queue bound.
    pub buffer_frames: u32,
    /// Explicit partition, if any.
    pub partition: Option<i32>,
    /// First sequence number (a coordinator moving a camera hands the next one over).
    pub start_seq: u64,
    /// Largest accepted |camera clock − node clock| for camera capture times.
    pub camera_clock_tolerance: Duration,
    /// Skip decoding frames the sampler would drop.
    pub decode_skip: bool,
}

/// A camera entry that cannot be used; fatal for that entry only.
#[derive(Debug, thiserror::Error)]
pub enum CameraConfigError {
    /// Bad id.
    #[error("camera {id:?}: invalid id: {reason}")]
    Id {
        /// The id as given.
        id: String,
        /// Why.
        reason: String,
    },
    /// Bad URL (the message never contains the URL itself, which may hold a password).
    #[error("camera {id}: {source}")]
    Url {
        /// Camera id.
        id: String,
        /// Why.
        source: panoptes_runtime::redact::UrlError,
    },
    /// A numeric setting out of range.
    #[error("camera {id}: {field} = {value} is out of range ({range})")]
    Range {
        /// Camera id.
        id: String,
        /// Field name.
        field: &'static str,
        /// Value given.
        value: u64,
        /// Allowed range.
        range: &'static str,
    },
    /// Two entries share an id.
    #[error("camera {0} is listed twice")]
    Duplicate(String),
}

impl CameraConfig {
    /// Resolves this entry against the defaults and validates it.
    pub fn resolve(&self, d: &CameraDefaults) -> Result<CameraSpec, CameraConfigError> {
        validate_camera_id(&self.id).map_err(|e| CameraConfigError::Id {
            id: self.id.clone(),
            reason: e.to_string(),
        })?;
        let url = CameraUrl::parse(&self.url).map_err(|source| CameraConfigError::Url {
            id: self.id.clone(),
            source,
        })?;
        let spec = CameraSpec {
            id: self.id.clone(),
            url,
            fps: self.fps.unwrap_or(d.fps),
            width: self.width.unwrap_or(d.width),
            height: self.height.unwrap_or(d.height),
            jpeg_quality: self.jpeg_quality.unwrap_or(d.jpeg_quality),
            transport: self.transport.unwrap_or(d.transport),
            latency: self.latency.unwrap_or(d.latency),
            connect_timeout: d.connect_timeout,
            no_data_timeout: d.no_data_timeout,
            backoff_initial: d.backoff_initial,
            backoff_max: d.backoff_max.max(d.backoff_initial),
            buffer_frames: d.buffer_frames.max(1),
            partition: self.partition,
            start_seq: 0,
            camera_clock_tolerance: d.camera_clock_tolerance,
            decode_skip: d.decode_skip,
        };
        let range = |field, value: u64, lo: u64, hi: u64, range| {
            if value < lo || value > hi {
                Err(CameraConfigError::Range {
                    id: self.id.clone(),
                    field,
                    value,
                    range,
                })
            } else {
                Ok(())
            }
        };
        range("fps", spec.fps.into(), 1, 120, "1..=120")?;
        range("width", spec.width.into(), 16, 7680, "16..=7680")?;
        range("height", spec.height.into(), 16, 4320, "16..=4320")?;
        range("jpeg_quality", spec.jpeg_quality.into(), 1, 100, "1..=100")?;
        if let Some(p) = spec.partition {
            range("partition", p.max(-1) as u64, 0, 100_000, "0..=100000")?;
        }
        Ok(spec)
    }
}

/// A configuration the node refuses to start with.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Coordinator mode with cameras in the file: two sources of truth.
    #[error(
        "coordinator.enabled = true but the file lists {0} camera(s) under [[cameras]]: in \
         coordinator mode the coordinator assigns every camera; remove the [[cameras]] entries \
         (register them with the coordinator instead) or set coordinator.enabled = false"
    )]
    CamerasWithCoordinator(usize),
    /// A coordinator setting is unusable.
    #[error("coordinator.{field}: {reason}")]
    Coordinator {
        /// Setting name.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl IngestConfig {
    /// Checks settings that span sections (per-camera problems are reported by
    /// [`IngestConfig::camera_specs`] and do not stop the node).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let c = &self.coordinator;
        if !c.enabled {
            return Ok(());
        }
        if !self.cameras.is_empty() {
            return Err(ConfigError::CamerasWithCoordinator(self.cameras.len()));
        }
        let bad = |field, reason: &str| {
            Err(ConfigError::Coordinator {
                field,
                reason: reason.into(),
            })
        };
        if self.node_id.is_empty() || self.node_id.contains(':') {
            return bad("enabled", "node_id must be non-empty and without ':'");
        }
        if let Err(e) = c.redis.validate("coordinator.redis_url", ALL_SCHEMES) {
            return bad("redis_url", &e);
        }
        if c.group.is_empty() {
            return bad("group", "must not be empty");
        }
        if !(c.capacity.is_finite() && c.capacity > 0.0) {
            return bad("capacity", "must be a positive number of load units");
        }
        if c.node_class.is_empty()
            || !c
                .node_class
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        {
            return bad("node_class", "must be a non-empty [A-Za-z0-9._-] name");
        }
        if c.lease_ttl < Duration::from_millis(200) {
            return bad("lease_ttl", "must be at least 200ms");
        }
        if c.poll_interval.is_zero() {
            return bad("poll_interval", "must be positive");
        }
        Ok(())
    }

    /// Resolves all camera entries. Bad entries are returned separately so that one broken
    /// camera does not keep the others from starting.
    pub fn camera_specs(&self) -> (Vec<CameraSpec>, Vec<CameraConfigError>) {
        let mut specs: Vec<CameraSpec> = Vec::new();
        let mut errors = Vec::new();
        for c in &self.cameras {
            match c.resolve(&self.camera_defaults) {
                Ok(spec) if specs.iter().any(|s| s.id == spec.id) => {
                    errors.push(CameraConfigError::Duplicate(spec.id))
                }
                Ok(spec) => specs.push(spec),
                Err(e) => errors.push(e),
            }
        }
        (specs, errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> IngestConfig {
        panoptes_runtime::config::from_toml_str(text).unwrap()
    }

    #[test]
    fn defaults_and_overrides_resolve() {
        let c = parse(
            r#"
            [camera_defaults]
            fps = 10
            latency = "100ms"
            [[cameras]]
            id = "cam0"
            url = "rtsp://u:pw@127.0.0.1:8554/cam0"
            fps = 3
            [[cameras]]
            id = "cam1"
            url = "rtsp://127.0.0.1:8554/cam1"
            partition = 4
            "#,
        );
        let (specs, errors) = c.camera_specs();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(specs[0].fps, 3);
        assert_eq!(specs[0].latency, Duration::from_millis(100));
        assert_eq!(specs[0].url.bare(), "rtsp://127.0.0.1:8554/cam0");
        assert_eq!(specs[1].fps, 10);
        assert_eq!(specs[1].partition, Some(4));
    }

    #[test]
    fn bad_entries_are_reported_without_the_password() {
        let c = parse(
            r#"
            [[cameras]]
            id = "ok"
            url = "rtsp://127.0.0.1/x"
            [[cameras]]
            id = "bad id!"
            url = "rtsp://127.0.0.1/x"
            [[cameras]]
            id = "badurl"
            url = "http://u:topsecret@h/x"
            [[cameras]]
            id = "ok"
            url = "rtsp://127.0.0.1/y"
            [[cameras]]
            id = "fast"
            url = "rtsp://127.0.0.1/z"
            fps = 1000
            "#,
        );
        let (specs, errors) = c.camera_specs();
        assert_eq!(specs.len(), 1);
        let text: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(text.len(), 4, "{text:?}");
        assert!(text.iter().all(|t| !t.contains("topsecret")), "{text:?}");
        assert!(text.iter().any(|t| t.contains("listed twice")));
        assert!(text.iter().any(|t| t.contains("fps = 1000")));
    }

    #[test]
    fn coordinator_mode_defaults_and_rejects_file_cameras() {
        let c = parse("[coordinator]\nenabled = true\nredis_url = \"redis://127.0.0.1:1/0\"\n");
        assert!(c.coordinator.enabled);
        assert_eq!(c.coordinator.group, "default");
        assert_eq!(c.coordinator.lease_ttl, Duration::from_secs(1));
        assert_eq!(c.coordinator.poll_interval, Duration::from_millis(500));
        assert_eq!(c.coordinator.drain_timeout, Duration::from_secs(10));
        assert!((c.coordinator.capacity - 40.0).abs() < 1e-9);
        assert_eq!(c.coordinator.node_class, "ingest");
        c.validate().unwrap();
        let mut odd = c.clone();
        odd.coordinator.node_class = "a b".into();
        assert!(odd.validate().is_err());
        assert!(!parse("").coordinator.enabled);

        let c =
            parse("[coordinator]\nenabled = true\n[[cameras]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n");
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("coordinator mode") && err.contains("[[cameras]]"),
            "{err}"
        );
        // Without coordinator mode the file's cameras are fine.
        let c = parse("[[cameras]]\nid = \"a\"\nurl = \"rtsp://h/x\"\n");
        c.validate().unwrap();
        let err = panoptes_runtime::config::from_toml_str::<IngestConfig>(
            "[coordinator]\nenbled = true\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("enbled"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err =
            panoptes_runtime::config::from_toml_str::<IngestConfig>("[kafka]\ntopc = \"x\"\n")
                .unwrap_err();
        assert!(err.to_string().contains("topc"), "{err}");
    }
}
