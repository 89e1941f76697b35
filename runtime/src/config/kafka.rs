//! The part of a node's `[kafka]` section that every Kafka client shares: how to reach,
//! secure and join the cluster. Each node flattens [`KafkaClientConfig`] into its own
//! `[kafka]` struct (`#[serde(flatten)] pub client: KafkaClientConfig`), so the TOML keys stay
//! `kafka.bootstrap_servers`, `kafka.security_protocol`, `[kafka.tls]`, `[kafka.sasl]` and
//! `kafka.properties`, and a node only adds its own topics and tuning next to them.
//!
//! Clients are built in three layers, always in this order, so that what an operator writes
//! wins and what every node needs is set in one place:
//! 1. [`KafkaClientConfig::connection_properties`]: `bootstrap.servers` and the security
//!    settings (`security.protocol`, `ssl.*` file locations, `sasl.*` with the password read
//!    from its file or `$PANOPTES_KAFKA_PASSWORD` at that moment);
//! 2. the node's own tuned settings (acks, linger, fetch sizes, ...);
//! 3. [`KafkaClientConfig::override_properties`]: the operator's `properties` map.
//!
//! Security contract:
//! - `security_protocol` is one of `plaintext` (default), `ssl`, `sasl_plaintext`,
//!   `sasl_ssl`. Settings that the protocol would silently ignore are refused (TLS files with
//!   a non-TLS protocol, a `[kafka.sasl]` section without SASL), so an operator never
//!   believes a link is secured when it is not.
//! - TLS (`ssl`, `sasl_ssl`) needs `tls.ca_file` (the CA that signed the brokers'
//!   certificates; point it at the system bundle for a public CA); `tls.cert_file` and
//!   `tls.key_file` (mutual TLS) go together. librdkafka verifies the broker's host name.
//! - SASL (`sasl_*`) needs `sasl.mechanism` (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`),
//!   `sasl.username`, and a password from `sasl.password_file` or else the environment
//!   variable `PANOPTES_KAFKA_PASSWORD`. The password never sits in the config struct, argv
//!   or `Debug` output; `sasl.password` in `properties` is refused. OAUTHBEARER is not
//!   offered: its OIDC flow needs librdkafka built with libcurl (ours is not) and the
//!   "unsecured JWT" flow is not authentication.
//! - Every check runs in [`KafkaClientConfig::validate`] and again in
//!   `connection_properties`, which fails closed ([`KafkaConfigError`]) instead of handing
//!   out an insecure or half-filled client configuration.
//!
//! Producers add [`KafkaProducerConfig`] (flattened the same way) in layer 2: the delivery
//! guarantees every Panoptes producer shares, with the node's own `message_timeout` default.
//!
//! This crate does not link librdkafka: properties are handed out as `(key, value)` strings,
//! which `rdkafka::ClientConfig` collects (`FromIterator`/`Extend`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::secret::{self, SecretError};
use crate::tls::{TlsError, TlsFiles};

/// Environment variable holding the SASL password when `sasl.password_file` is not set.
pub const PASSWORD_ENV: &str = "PANOPTES_KAFKA_PASSWORD";

/// Parts of property keys that hold secrets (`ssl.key.password`, `sasl.oauthbearer.client.secret`,
/// `ssl.key.pem`, ...): their values are redacted from `Debug` output.
const SECRET_KEY_PARTS: &[&str] = &["password", "secret", "key.pem", "private"];

/// `security.protocol` of every client.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No TLS, no authentication (development only).
    #[default]
    Plaintext,
    /// TLS: the broker is verified against `tls.ca_file`; optional client certificate.
    Ssl,
    /// SASL authentication without TLS: the password crosses the network readable with
    /// `PLAIN`; SCRAM hides it but the data is not encrypted.
    SaslPlaintext,
    /// SASL authentication over TLS: what a production cluster should use.
    SaslSsl,
}

impl SecurityProtocol {
    /// The librdkafka value.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }

    /// Whether the connection is TLS.
    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether the client authenticates with SASL.
    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

/// `sasl.mechanism`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum SaslMechanism {
    /// Username and password sent as they are (only ever over TLS in production).
    #[serde(rename = "PLAIN")]
    Plain,
    /// Salted challenge-response with SHA-256 (RFC 5802/7677): the password never crosses.
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    /// Salted challenge-response with SHA-512.
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The librdkafka (and Kafka wire) name.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// `[kafka.sasl]`: who the node is to the cluster. The password is read from
/// `password_file` (or `$PANOPTES_KAFKA_PASSWORD`) each time a client is configured, so it
/// is never held here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SaslConfig {
    /// Required with a `sasl_*` protocol.
    pub mechanism: Option<SaslMechanism>,
    /// Required with a `sasl_*` protocol.
    pub username: Option<String>,
    /// File whose first line is the password (a Kubernetes Secret volume, mode 0600).
    pub password_file: Option<PathBuf>,
}

impl SaslConfig {
    fn is_empty(&self) -> bool {
        self.mechanism.is_none() && self.username.is_none() && self.password_file.is_none()
    }
}

/// Why the `[kafka]` security settings cannot be used. Always fatal: a client is never
/// created with a half-configured security setting.
#[derive(Debug, thiserror::Error)]
pub enum KafkaConfigError {
    /// A setting is missing or contradicts another.
    #[error("kafka.{field}: {reason}")]
    Invalid {
        /// The key, e.g. `sasl.username`.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A TLS file is missing or unreadable.
    #[error("kafka.tls: {0}")]
    Tls(#[from] TlsError),
    /// The SASL password could not be read.
    #[error("kafka.sasl: {0}")]
    Password(#[from] SecretError),
}

fn invalid(field: &'static str, reason: impl Into<String>) -> KafkaConfigError {
    KafkaConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Connection settings shared by every Kafka client of a node.
///
/// No `deny_unknown_fields` here: the node's `[kafka]` struct that flattens this one denies
/// unknown keys for the whole section (serde does not allow both). `Debug` shows file paths
/// but redacts secret-looking `properties` values.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct KafkaClientConfig {
    /// `bootstrap.servers`.
    pub bootstrap_servers: String,
    /// `security.protocol`.
    pub security_protocol: SecurityProtocol,
    /// `[kafka.tls]`: `ca_file` (required with TLS), `cert_file` + `key_file` (mutual TLS).
    pub tls: TlsFiles,
    /// `[kafka.sasl]`: mechanism, username, password file.
    pub sasl: SaslConfig,
    /// Extra librdkafka properties for every client of the node; they override everything
    /// else. Secrets do not belong here (`sasl.password` is refused).
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaClientConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            security_protocol: SecurityProtocol::Plaintext,
            tls: TlsFiles::default(),
            sasl: SaslConfig::default(),
            properties: BTreeMap::new(),
        }
    }
}

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_KEY_PARTS.iter().any(|p| k.contains(p))
}

impl fmt::Debug for KafkaClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, &str> = self
            .properties
            .iter()
            .map(|(k, v)| {
                let shown = if is_secret_key(k) { "***" } else { v.as_str() };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("KafkaClientConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("security_protocol", &self.security_protocol)
            .field("tls", &self.tls)
            .field("sasl", &self.sasl)
            .field("properties", &properties)
            .finish()
    }
}

impl KafkaClientConfig {
    /// A plaintext configuration for `bootstrap` (tools and tests).
    pub fn plaintext(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap_servers: bootstrap.into(),
            ..Self::default()
        }
    }

    /// Checks the security settings (and that the TLS files and the password can be read);
    /// call at start so that a node with a broken `[kafka]` section does not start.
    pub fn validate(&self) -> Result<(), KafkaConfigError> {
        self.connection_properties().map(|_| ())
    }

    /// What every client needs to reach the cluster: `bootstrap.servers` and the security
    /// properties, the SASL password read now. Set these first.
    pub fn connection_properties(&self) -> Result<Vec<(String, String)>, KafkaConfigError> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err(invalid("bootstrap_servers", "must not be empty"));
        }
        if let Some(k) = self
            .properties
            .keys()
            .find(|k| k.as_str() == "sasl.password" || k.as_str() == "sasl.username")
        {
            return Err(invalid(
                "properties",
                format!(
                    "{k:?} is not allowed here: set sasl.username and sasl.password_file \
                     (or ${PASSWORD_ENV})"
                ),
            ));
        }
        let protocol = self.security_protocol;
        let mut out = vec![
            (
                "bootstrap.servers".to_string(),
                self.bootstrap_servers.clone(),
            ),
            (
                "security.protocol".to_string(),
                protocol.as_str().to_string(),
            ),
        ];
        out.extend(self.tls_properties()?);
        out.extend(self.sasl_properties()?);
        Ok(out)
    }

    fn tls_properties(&self) -> Result<Vec<(String, String)>, KafkaConfigError> {
        let protocol = self.security_protocol;
        if !protocol.uses_tls() {
            if !self.tls.is_empty() {
                return Err(invalid(
                    "tls",
                    format!(
                        "TLS files are set but security_protocol = {:?} does not use TLS \
                         (use ssl or sasl_ssl)",
                        protocol.as_str()
                    ),
                ));
            }
            return Ok(Vec::new());
        }
        let Some(ca) = &self.tls.ca_file else {
            return Err(invalid(
                "tls.ca_file",
                format!(
                    "required with security_protocol = {:?}: the CA bundle that signed the \
                     brokers' certificates",
                    protocol.as_str()
                ),
            ));
        };
        self.tls.check_readable()?;
        let mut out = vec![("ssl.ca.location".to_string(), ca.display().to_string())];
        if let (Some(cert), Some(key)) = (&self.tls.cert_file, &self.tls.key_file) {
            out.push((
                "ssl.certificate.location".into(),
                cert.display().to_string(),
            ));
            out.push(("ssl.key.location".into(), key.display().to_string()));
        }
        Ok(out)
    }

    fn sasl_properties(&self) -> Result<Vec<(String, String)>, KafkaConfigError> {
        let protocol = self.security_protocol;
        if !protocol.uses_sasl() {
            if !self.sasl.is_empty() {
                return Err(invalid(
                    "sasl",
                    format!(
                        "SASL settings are set but security_protocol = {:?} does not use SASL \
                         (use sasl_ssl or sasl_plaintext)",
                        protocol.as_str()
                    ),
                ));
            }
            return Ok(Vec::new());
        }
        let need = |field| {
            invalid(
                field,
                format!("required with security_protocol = {:?}", protocol.as_str()),
            )
        };
        let mechanism = self.sasl.mechanism.ok_or_else(|| need("sasl.mechanism"))?;
        let username = match self.sasl.username.as_deref() {
            Some(u) if !u.trim().is_empty() => u,
            _ => return Err(need("sasl.username")),
        };
        let password = secret::require(
            self.sasl.password_file.as_deref(),
            PASSWORD_ENV,
            "Kafka SASL password (kafka.sasl.password_file)",
        )?;
        Ok(vec![
            ("sasl.mechanism".into(), mechanism.as_str().into()),
            ("sasl.username".into(), username.into()),
            ("sasl.password".into(), password.expose().into()),
        ])
    }

    /// A tool's connection (`--kafka-config FILE`): the `[kafka]` table of a TOML file with
    /// exactly the keys above (`bootstrap_servers`, `security_protocol`, `[kafka.tls]`,
    /// `[kafka.sasl]`, `[kafka.properties]`), then `PANOPTES_KAFKA__…` environment
    /// overrides; defaults when `path` is `None`. Validated like a node's.
    pub fn load_for_tool(path: Option<&Path>) -> Result<Self, crate::config::ConfigError> {
        #[derive(Default, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct File {
            kafka: Section,
        }
        #[derive(Default, Deserialize)]
        #[serde(default, deny_unknown_fields)]
        struct Section {
            #[serde(flatten)]
            client: KafkaClientConfig,
        }
        let file: File = crate::config::load(path, &["kafka"])?;
        file.kafka
            .client
            .validate()
            .map_err(|e| crate::config::ConfigError::Invalid(e.to_string()))?;
        Ok(file.kafka.client)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml_str;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Section {
        #[serde(flatten)]
        client: KafkaClientConfig,
        topic: String,
    }

    impl Default for Section {
        fn default() -> Self {
            Self {
                client: KafkaClientConfig::default(),
                topic: "t".into(),
            }
        }
    }

    fn props(c: &KafkaClientConfig) -> BTreeMap<String, String> {
        c.connection_properties().unwrap().into_iter().collect()
    }

    fn files() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not checked here\n").unwrap();
        let pw = dir.path().join("password");
        std::fs::write(&pw, "hunter2-secret\n").unwrap();
        (dir, ca, pw)
    }

    #[test]
    fn sasl_ssl_from_toml_maps_to_librdkafka_properties() {
        let (_dir, ca, pw) = files();
        let text = format!(
            "bootstrap_servers = \"b:1\"\nsecurity_protocol = \"sasl_ssl\"\n\
             topic = \"frames\"\n[tls]\nca_file = {ca:?}\ncert_file = {ca:?}\nkey_file = {ca:?}\n\
             [sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"ingest\"\npassword_file = {pw:?}\n"
        );
        let s: Section = from_toml_str(&text).unwrap();
        assert_eq!(s.topic, "frames");
        let p = props(&s.client);
        let ca = ca.display().to_string();
        for (k, v) in [
            ("bootstrap.servers", "b:1"),
            ("security.protocol", "sasl_ssl"),
            ("ssl.ca.location", ca.as_str()),
            ("ssl.certificate.location", ca.as_str()),
            ("ssl.key.location", ca.as_str()),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "ingest"),
            ("sasl.password", "hunter2-secret"),
        ] {
            assert_eq!(p.get(k).map(String::as_str), Some(v), "{k}");
        }
        // The password is read when clients are configured; it is never in the struct.
        let debug = format!("{:?}", s.client);
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("password_file"), "{debug}");
        assert!(s.client.validate().is_ok());
    }

    #[test]
    fn plaintext_default_and_ssl_only() {
        let p = props(&KafkaClientConfig::plaintext("h:9"));
        assert_eq!(p.len(), 2);
        assert_eq!(p["security.protocol"], "plaintext");
        let (_dir, ca, _) = files();
        let mut c = KafkaClientConfig::plaintext("h:9");
        c.security_protocol = SecurityProtocol::Ssl;
        c.tls.ca_file = Some(ca);
        let p = props(&c);
        assert_eq!(p["security.protocol"], "ssl");
        assert!(p.contains_key("ssl.ca.location"));
        assert!(!p.contains_key("ssl.certificate.location"));
        assert!(!p.keys().any(|k| k.starts_with("sasl.")));
    }

    fn err(c: &KafkaClientConfig) -> String {
        let e = c.validate().unwrap_err().to_string();
        assert_eq!(e, c.connection_properties().unwrap_err().to_string());
        e
    }

    #[test]
    fn validation_fails_closed_with_clear_messages() {
        let (dir, ca, pw) = files();
        let base = KafkaClientConfig::plaintext("h:9");

        let mut c = base.clone();
        c.security_protocol = SecurityProtocol::Ssl;
        assert!(
            err(&c).starts_with("kafka.tls.ca_file: required"),
            "{}",
            err(&c)
        );

        c.tls.ca_file = Some(ca.clone());
        c.tls.cert_file = Some(ca.clone());
        assert!(
            err(&c).contains("cert_file and key_file go together"),
            "{}",
            err(&c)
        );

        c.tls.cert_file = None;
        c.tls.ca_file = Some(dir.path().join("missing.pem"));
        assert!(err(&c).contains("cannot read CA bundle"), "{}", err(&c));

        let mut c = base.clone();
        c.tls.ca_file = Some(ca.clone());
        assert!(err(&c).contains("does not use TLS"), "{}", err(&c));

        let mut c = base.clone();
        c.sasl.username = Some("u".into());
        assert!(err(&c).contains("does not use SASL"), "{}", err(&c));

        let mut c = base.clone();
        c.security_protocol = SecurityProtocol::SaslPlaintext;
        assert!(
            err(&c).starts_with("kafka.sasl.mechanism: required"),
            "{}",
            err(&c)
        );
        c.sasl.mechanism = Some(SaslMechanism::Plain);
        assert!(
            err(&c).starts_with("kafka.sasl.username: required"),
            "{}",
            err(&c)
        );
        c.sasl.username = Some("u".into());
        // No file and (in tests) no $PANOPTES_KAFKA_PASSWORD: refused, naming both sources.
        let e = err(&c);
        assert!(
            e.contains("no secret configured") && e.contains(PASSWORD_ENV),
            "{e}"
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        c.sasl.password_file = Some(empty);
        assert!(err(&c).contains("is empty"), "{}", err(&c));
        c.sasl.password_file = Some(pw);
        assert!(c.validate().is_ok());

        c.properties.insert("sasl.password".into(), "inline".into());
        let e = err(&c);
        assert!(e.contains("not allowed") && !e.contains("inline"), "{e}");

        let mut c = base;
        c.bootstrap_servers = " ".into();
        assert!(
            err(&c).starts_with("kafka.bootstrap_servers"),
            "{}",
            err(&c)
        );
    }

    #[test]
    fn tools_load_the_kafka_table_of_a_file() {
        let (dir, ca, pw) = files();
        let path = dir.path().join("kafka.toml");
        let text = format!(
            "[kafka]\nbootstrap_servers = \"k:1\"\nsecurity_protocol = \"sasl_ssl\"\n\
             [kafka.tls]\nca_file = {ca:?}\n[kafka.sasl]\nmechanism = \"PLAIN\"\n\
             username = \"tool\"\npassword_file = {pw:?}\n"
        );
        std::fs::write(&path, text).unwrap();
        let c = KafkaClientConfig::load_for_tool(Some(&path)).unwrap();
        assert_eq!(props(&c)["sasl.username"], "tool");
        assert_eq!(
            KafkaClientConfig::load_for_tool(None).unwrap(),
            KafkaClientConfig::default()
        );
        std::fs::write(
            &path,
            "[kafka]\nbootstrap_servers = \"k:1\"\ntopic = \"x\"\n",
        )
        .unwrap();
        assert!(KafkaClientConfig::load_for_tool(Some(&path)).is_err());
        std::fs::write(&path, "[kafka]\nsecurity_protocol = \"ssl\"\n").unwrap();
        let e = KafkaClientConfig::load_for_tool(Some(&path))
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.ca_file"), "{e}");
    }

    #[test]
    fn debug_redacts_secret_properties_and_typos_are_refused() {
        let mut c = KafkaClientConfig::plaintext("h:9");
        c.properties
            .insert("ssl.key.password".into(), "keypass-value".into());
        c.properties.insert("linger.ms".into(), "7".into());
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("keypass-value") && debug.contains("\"7\""),
            "{debug}"
        );
        for bad in [
            "security_protocol = \"tls\"\n",
            "[sasl]\nmechanism = \"GSSAPI\"\n",
            "[sasl]\npassword = \"x\"\n",
            "[tls]\nca = \"x\"\n",
        ] {
            assert!(from_toml_str::<Section>(bad).is_err(), "{bad}");
        }
    }
}
