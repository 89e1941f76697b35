//! Typed configuration: a TOML file, then `PANOPTES_`-prefixed environment variables on top.
//!
//! Nested keys are separated by a double underscore, so `PANOPTES_KAFKA__BOOTSTRAP_SERVERS`
//! sets `kafka.bootstrap_servers`. Config structs are expected to use
//! `#[serde(deny_unknown_fields, default)]`, so a typo in the file is an error, not a silent
//! default. Environment variables are only read for the top-level sections the caller names:
//! a `PANOPTES_` variable meant for another component must not make this one fail to start.
//!
//! The sections every node has are defined once, in the submodules: [`http`] (`[http]`),
//! [`kafka`] (the connection and producer parts of `[kafka]`) and [`redis`] (the node's
//! `redis_url`).

pub mod http;
pub mod kafka;
pub mod redis;

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::de::DeserializeOwned;

pub use http::HttpConfig;
pub use kafka::{KafkaClientConfig, KafkaProducerConfig};
pub use redis::RedisClientConfig;

/// Prefix of every environment override.
pub const ENV_PREFIX: &str = "PANOPTES_";

/// Why a configuration could not be loaded. Always fatal: a node must not start half-configured.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named on the command line does not exist or cannot be read.
    #[error("config file {path}: {reason}")]
    File {
        /// The path as given.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The merged file + environment does not match the expected structure.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// A loaded configuration whose values do not fit together (a bound, an empty name, a
/// missing secret): what each node's `validate` returns. Fatal: the node does not start.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigInvalid(pub String);

/// Loads `T` from the defaults of `T`, then `file` (if any), then the environment.
///
/// `sections` lists the top-level keys of `T` that may be overridden from the environment
/// (`PANOPTES_<SECTION>` or `PANOPTES_<SECTION>__<KEY>...`).
pub fn load<T: DeserializeOwned>(file: Option<&Path>, sections: &[&str]) -> Result<T, ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError::File {
                path: path.display().to_string(),
                reason: "no such file".into(),
            });
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    let allowed: Vec<String> = sections.iter().map(|s| s.to_ascii_lowercase()).collect();
    let env = Env::prefixed(ENV_PREFIX).split("__").filter(move |key| {
        // Keys may still be upper-case here: figment lowercases them after filtering.
        let top = key
            .as_str()
            .split('.')
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        allowed.contains(&top)
    });
    figment
        .merge(env)
        .extract()
        .map_err(|e| ConfigError::Invalid(flatten_figment_error(e)))
}

/// Loads `T` from a TOML string only (used by tests and embedded defaults).
pub fn from_toml_str<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    Figment::new()
        .merge(Toml::string(text))
        .extract()
        .map_err(|e| ConfigError::Invalid(flatten_figment_error(e)))
}

/// The errors as one line each, joined. A TOML syntax error quotes the offending source
/// line (`19 | url = "rtsp://user:pa…`), which may hold a secret cut short where no
/// redaction can recognise it: those snippet lines are dropped (the message keeps the line
/// and column), and what remains goes through [`crate::redact::redact_text`].
fn flatten_figment_error(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let text = e.to_string();
            let kept: Vec<&str> = text
                .lines()
                .filter(|l| {
                    let t = l
                        .trim_start()
                        .trim_start_matches(|c: char| c.is_ascii_digit());
                    !t.trim_start().starts_with('|')
                })
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            crate::redact::redact_text(&kept.join(": "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};
    use std::time::Duration;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Demo {
        name: String,
        kafka: Kafka,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Kafka {
        bootstrap_servers: String,
        #[serde(with = "humantime_serde")]
        linger: Duration,
    }
    impl Default for Demo {
        fn default() -> Self {
            Self {
                name: "n".into(),
                kafka: Kafka::default(),
            }
        }
    }
    impl Default for Kafka {
        fn default() -> Self {
            Self {
                bootstrap_servers: "localhost:9092".into(),
                linger: Duration::from_millis(5),
            }
        }
    }

    #[test]
    fn file_then_defaults_and_durations() {
        let d: Demo = from_toml_str("[kafka]\nlinger = \"250ms\"\n").unwrap();
        assert_eq!(d.kafka.linger, Duration::from_millis(250));
        assert_eq!(d.kafka.bootstrap_servers, "localhost:9092");
        assert_eq!(d.name, "n");
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = from_toml_str::<Demo>("[kafka]\nbootstrap_server = \"x\"\n").unwrap_err();
        assert!(err.to_string().contains("bootstrap_server"), "{err}");
    }

    #[test]
    fn bad_duration_is_an_error() {
        let err = from_toml_str::<Demo>("[kafka]\nlinger = \"soon\"\n").unwrap_err();
        assert!(err.to_string().contains("linger"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load::<Demo>(Some(Path::new("/nonexistent/panoptes.toml")), &[]).unwrap_err();
        assert!(matches!(err, ConfigError::File { .. }), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn environment_overrides_only_named_sections() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "name = \"file\"\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("PANOPTES_KAFKA__BOOTSTRAP_SERVERS", "broker:1234");
            jail.set_env("PANOPTES_OTHER_COMPONENT", "ignored");
            let d: Demo = load(Some(&path), &["kafka", "name"]).unwrap();
            assert_eq!(d.kafka.bootstrap_servers, "broker:1234");
            assert_eq!(d.name, "file");
            Ok(())
        });
    }

    // The shared sections as nodes embed them.

    /// A node's `[kafka]` section as the nodes declare theirs.
    #[derive(Debug, Default, PartialEq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    struct NodeKafka {
        #[serde(flatten)]
        client: KafkaClientConfig,
        #[serde(flatten)]
        producer: KafkaProducerConfig<30>,
        topic: String,
    }

    /// A section holding the node's Redis, as ingest's `[coordinator]` and the worker's
    /// `[assignment]` do.
    #[derive(Debug, Default, PartialEq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    struct NodeAssignment {
        #[serde(flatten)]
        redis: RedisClientConfig,
        source: String,
    }

    /// A node with the shared sections; its Redis at the top level, as the coordinator's.
    #[derive(Debug, Default, PartialEq, Deserialize, Serialize)]
    #[serde(deny_unknown_fields, default)]
    struct Node {
        #[serde(flatten)]
        redis: RedisClientConfig,
        http: HttpConfig<9101>,
        kafka: NodeKafka,
        assignment: NodeAssignment,
    }

    #[test]
    fn flattened_keys_stay_in_the_section_and_typos_are_refused() {
        let n: Node = from_toml_str(
            "redis_url = \"redis://top:1/0\"\n[kafka]\nbootstrap_servers = \"b:1\"\ntopic = \"t\"\n\
             message_timeout = \"1500ms\"\n[kafka.properties]\n\"security.protocol\" = \"ssl\"\n\
             [assignment]\nredis_url = \"rediss://a:2/1\"\nsource = \"redis\"\n",
        )
        .unwrap();
        assert_eq!(n.kafka.client.bootstrap_servers, "b:1");
        assert_eq!(n.kafka.topic, "t");
        assert_eq!(
            n.kafka.producer.message_timeout,
            Duration::from_millis(1500)
        );
        assert!(
            n.kafka
                .producer
                .delivery_properties()
                .contains(&("message.timeout.ms".into(), "1500".into()))
        );
        assert_eq!(n.redis.redis_url, "redis://top:1/0");
        assert_eq!(n.assignment.redis.redis_url, "rediss://a:2/1");
        assert_eq!(n.assignment.source, "redis");
        let props: Vec<_> = n.kafka.client.override_properties().collect();
        assert_eq!(props, vec![("security.protocol".into(), "ssl".into())]);
        assert_eq!(
            n.kafka.client.connection_properties().unwrap(),
            vec![
                ("bootstrap.servers".into(), "b:1".into()),
                ("security.protocol".into(), "plaintext".into())
            ]
        );
        for (section, typo) in [
            ("[kafka]\n", "topc"),
            ("[kafka]\n", "message_timeot"),
            ("", "redis_uri"),
            ("[assignment]\n", "redis_uri"),
        ] {
            let text = format!("{section}{typo} = \"1s\"\n");
            let err = from_toml_str::<Node>(&text).unwrap_err().to_string();
            assert!(err.contains(typo), "{text}: {err}");
        }
    }

    #[test]
    fn defaults_and_the_node_port() {
        let n: Node = from_toml_str("[http]\n").unwrap();
        assert_eq!(n.http.listen.to_string(), "127.0.0.1:9101");
        assert_eq!(n.kafka.client.bootstrap_servers, "127.0.0.1:9092");
        assert_eq!(n.kafka.producer.message_timeout, Duration::from_secs(30));
        assert_eq!(n.redis, RedisClientConfig::default());
        assert_eq!(n.assignment.redis, RedisClientConfig::default());
        assert!(from_toml_str::<Node>("[http]\nlisten = \"x\"\n").is_err());
    }

    #[test]
    fn typed_config_serialises_to_the_same_keys() {
        let mut n = Node::default();
        n.kafka
            .client
            .properties
            .insert("linger.ms".into(), "1".into());
        let text = toml::to_string(&n).unwrap();
        for key in [
            "bootstrap_servers = \"127.0.0.1:9092\"",
            "message_timeout = \"30s\"",
            "redis_url = \"redis://127.0.0.1:6379/0\"",
        ] {
            assert!(text.contains(key), "{key} in {text}");
        }
        let back: Node = from_toml_str(&text).unwrap();
        assert_eq!(back, n);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn environment_overrides_reach_the_shared_sections() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("PANOPTES_KAFKA__BOOTSTRAP_SERVERS", "broker:1234");
            jail.set_env("PANOPTES_KAFKA__TOPIC", "frames2");
            jail.set_env("PANOPTES_HTTP__LISTEN", "127.0.0.1:0");
            jail.set_env("PANOPTES_KAFKA__MESSAGE_TIMEOUT", "2s");
            jail.set_env("PANOPTES_REDIS_URL", "redis://env-top:1/0");
            jail.set_env("PANOPTES_ASSIGNMENT__REDIS_URL", "redis://env-a:2/0");
            let sections = ["kafka", "http", "redis_url", "assignment"];
            let n: Node = load(None, &sections).unwrap();
            assert_eq!(n.kafka.client.bootstrap_servers, "broker:1234");
            assert_eq!(n.kafka.topic, "frames2");
            assert_eq!(n.kafka.producer.message_timeout, Duration::from_secs(2));
            assert_eq!(n.http.listen.port(), 0);
            assert_eq!(n.redis.redis_url, "redis://env-top:1/0");
            assert_eq!(n.assignment.redis.redis_url, "redis://env-a:2/0");
            Ok(())
        });
    }
}
