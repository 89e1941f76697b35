//! How a node reaches the Redis that holds the coordination state. Each node flattens
//! [`RedisClientConfig`] into the section where its Redis settings live
//! (`#[serde(flatten)] pub redis: RedisClientConfig`), so the keys stay where they were: the
//! coordinator's top level, ingest's `[coordinator]` and the worker's `[assignment]`, with
//! the same `PANOPTES_` overrides.
//!
//! Contract:
//! - `redis_url` names the server (`redis://` plain TCP, `rediss://` TLS, or a Unix socket);
//!   it carries no credentials: a user or password in the URL is refused (they would end up
//!   in config dumps and logs).
//! - `redis_tls` holds the PEM files of the TLS link: `ca_file` (required with `rediss://`,
//!   the only roots trusted) and optionally `cert_file` + `key_file` (mutual TLS). TLS files
//!   with a plain `redis://` URL are refused rather than ignored (fail closed).
//! - `redis_username` names the ACL user; its password comes from `redis_password_file`, or
//!   else from `$PANOPTES_REDIS_PASSWORD` ([`PASSWORD_ENV`]). A user without a password is
//!   refused; a password without a user authenticates as Redis's `default` user.
//! - `Debug` shows paths and the user, never a password.
//!
//! This crate does not link the Redis client: `panoptes_coordinator_client::RedisLink::open`
//! turns this configuration into a connected client, in every node and tool.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::redact::Secret;
use crate::secret::{self, SecretError};
use crate::tls::TlsFiles;

/// Schemes for Redis over TCP: plain (`redis://`) and TLS (`rediss://`).
pub const TCP_SCHEMES: &[&str] = &["redis://", "rediss://"];

/// Every scheme the Redis client opens: TCP, TLS and Unix sockets.
pub const ALL_SCHEMES: &[&str] = &["redis://", "rediss://", "unix://", "redis+unix://"];

/// Environment variable holding the Redis password when no `redis_password_file` is set.
pub const PASSWORD_ENV: &str = "PANOPTES_REDIS_PASSWORD";

/// Connection settings shared by every Redis client of a node.
///
/// No `deny_unknown_fields` here: the node's struct that flattens this one denies unknown
/// keys for the whole section (serde does not allow both).
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default)]
pub struct RedisClientConfig {
    /// Redis URL, e.g. `redis://10.0.0.5:6379/0` or `rediss://redis.internal:6380/0`.
    pub redis_url: String,
    /// TLS files (`[redis_tls]`, `[coordinator.redis_tls]`, `[assignment.redis_tls]`):
    /// `ca_file` (required with `rediss://`), `cert_file` + `key_file` for mutual TLS.
    #[serde(skip_serializing_if = "TlsFiles::is_empty")]
    pub redis_tls: TlsFiles,
    /// ACL user this node authenticates as (`None`: Redis's `default` user).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_username: Option<String>,
    /// File whose first line is the password (else `$PANOPTES_REDIS_PASSWORD`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_password_file: Option<PathBuf>,
}

impl Default for RedisClientConfig {
    fn default() -> Self {
        Self {
            redis_url: "redis://127.0.0.1:6379/0".into(),
            redis_tls: TlsFiles::default(),
            redis_username: None,
            redis_password_file: None,
        }
    }
}

impl std::fmt::Debug for RedisClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL is refused at validation when it holds credentials; redact anyway, since
        // Debug may run before validation.
        f.debug_struct("RedisClientConfig")
            .field("redis_url", &crate::redact::redact_text(&self.redis_url))
            .field("redis_tls", &self.redis_tls)
            .field("redis_username", &self.redis_username)
            .field("redis_password_file", &self.redis_password_file)
            .finish()
    }
}

impl From<&str> for RedisClientConfig {
    /// A plain URL without TLS or ACL user (tests and development).
    fn from(url: &str) -> Self {
        Self {
            redis_url: url.into(),
            ..Self::default()
        }
    }
}

impl From<&String> for RedisClientConfig {
    fn from(url: &String) -> Self {
        Self::from(url.as_str())
    }
}

impl From<&RedisClientConfig> for RedisClientConfig {
    fn from(c: &RedisClientConfig) -> Self {
        c.clone()
    }
}

impl RedisClientConfig {
    /// Whether `redis_url` starts with one of the `accepted` schemes ([`TCP_SCHEMES`] or
    /// [`ALL_SCHEMES`], whichever the node supports).
    pub fn has_scheme(&self, accepted: &[&str]) -> bool {
        accepted.iter().any(|s| self.redis_url.starts_with(s))
    }

    /// Whether the link is TLS (`rediss://`).
    pub fn is_tls(&self) -> bool {
        self.redis_url.starts_with("rediss://")
    }

    /// The start-up check every node runs on its Redis settings (`key` names the URL's key
    /// in the node's config for the message, e.g. `coordinator.redis_url`): the scheme is one
    /// of `accepted`, the URL holds no credentials and no `#insecure`, TLS files go with
    /// `rediss://` (and `rediss://` has a CA), the files are readable, a user has a password.
    /// Fails closed: every misfit is an error, none is ignored.
    pub fn validate(&self, key: &str, accepted: &[&str]) -> Result<(), String> {
        if !self.has_scheme(accepted) {
            return Err(format!(
                "{key} must start with one of {}",
                accepted.join(", ")
            ));
        }
        let after_scheme = self.redis_url.split_once("://").map_or("", |(_, r)| r);
        let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or("");
        if authority.contains('@') {
            return Err(format!(
                "{key} must not hold a user or password: use redis_username and \
                 redis_password_file (or ${PASSWORD_ENV})"
            ));
        }
        if self.redis_url.contains('#') {
            return Err(format!(
                "{key}: URL fragments (#insecure) are refused: TLS always verifies the server"
            ));
        }
        if self.is_tls() {
            if self.redis_tls.ca_file.is_none() {
                return Err(format!(
                    "{key} is rediss:// but redis_tls.ca_file is not set (the CA that signed \
                     the Redis server's certificate)"
                ));
            }
        } else if !self.redis_tls.is_empty() {
            return Err(format!(
                "redis_tls files are set but {key} is not rediss://: refusing to connect \
                 without TLS"
            ));
        }
        self.redis_tls
            .check_readable()
            .map_err(|e| format!("redis_tls: {e}"))?;
        match &self.redis_username {
            Some(u) if u.is_empty() || u.chars().any(|c| c.is_whitespace()) => {
                return Err(format!(
                    "redis_username {u:?} must be non-empty without spaces"
                ));
            }
            Some(_)
                if self.redis_password_file.is_none()
                    && std::env::var_os(PASSWORD_ENV).is_none() =>
            {
                return Err(format!(
                    "redis_username is set but no password: set redis_password_file or \
                     ${PASSWORD_ENV}"
                ));
            }
            _ => {}
        }
        if let Some(path) = &self.redis_password_file {
            std::fs::metadata(path)
                .map_err(|e| format!("redis_password_file {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// The password: the first line of `redis_password_file`, else `$PANOPTES_REDIS_PASSWORD`,
    /// else `None`. An empty or unreadable source is an error (never an empty password).
    pub fn password(&self) -> Result<Option<Secret>, SecretError> {
        secret::lookup(
            self.redis_password_file.as_deref(),
            PASSWORD_ENV,
            "Redis password",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes() {
        let url = |u: &str| RedisClientConfig::from(u);
        assert!(url("redis://h:1/0").has_scheme(TCP_SCHEMES));
        assert!(url("rediss://h:1/0").has_scheme(TCP_SCHEMES));
        assert!(!url("unix:///tmp/r.sock").has_scheme(TCP_SCHEMES));
        assert!(url("unix:///tmp/r.sock").has_scheme(ALL_SCHEMES));
        assert!(url("redis+unix:///tmp/r.sock").has_scheme(ALL_SCHEMES));
        assert!(!url("http://h:1").has_scheme(ALL_SCHEMES));
        assert!(RedisClientConfig::default().has_scheme(TCP_SCHEMES));
    }

    #[test]
    fn validation_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "x").unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let ok = |c: &RedisClientConfig| c.validate("redis_url", ALL_SCHEMES);
        let plain = RedisClientConfig::from("redis://127.0.0.1:6379/0");
        ok(&plain).unwrap();
        let tls = RedisClientConfig {
            redis_url: "rediss://redis.internal:6380/0".into(),
            redis_tls: TlsFiles {
                ca_file: Some(ca.clone()),
                ..TlsFiles::default()
            },
            redis_username: Some("worker-1".into()),
            redis_password_file: Some(pw.clone()),
        };
        ok(&tls).unwrap();
        assert_eq!(tls.password().unwrap().unwrap().expose(), "s3cret");
        let refused = [
            (
                RedisClientConfig {
                    redis_tls: TlsFiles::default(),
                    ..tls.clone()
                },
                "ca_file",
            ),
            (
                RedisClientConfig {
                    redis_url: "redis://redis.internal:6380/0".into(),
                    ..tls.clone()
                },
                "not rediss",
            ),
            (
                RedisClientConfig {
                    redis_url: "rediss://redis.internal:6380/0#insecure".into(),
                    ..tls.clone()
                },
                "#insecure",
            ),
            (
                RedisClientConfig::from("redis://u:hunter2@h:1/0"),
                "must not hold a user",
            ),
            (RedisClientConfig::from("http://h:1"), "must start with"),
            (
                RedisClientConfig {
                    redis_password_file: Some(dir.path().join("missing")),
                    ..tls.clone()
                },
                "redis_password_file",
            ),
            (
                RedisClientConfig {
                    redis_tls: TlsFiles {
                        ca_file: Some(dir.path().join("nope.pem")),
                        ..TlsFiles::default()
                    },
                    ..tls.clone()
                },
                "redis_tls",
            ),
        ];
        for (c, want) in refused {
            let e = ok(&c).unwrap_err();
            assert!(e.contains(want), "{c:?}: {e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        assert!(
            !format!("{:?}", RedisClientConfig::from("redis://u:hunter2@h/0")).contains("hunter2")
        );
        // A user without any password source (the variable is not set in tests).
        if std::env::var_os(PASSWORD_ENV).is_none() {
            let c = RedisClientConfig {
                redis_password_file: None,
                ..tls
            };
            assert!(ok(&c).unwrap_err().contains("no password"));
        }
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the error type
    fn security_settings_come_from_the_file_or_the_environment() {
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        struct Section {
            #[serde(flatten)]
            redis: RedisClientConfig,
        }
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        struct Node {
            assignment: Section,
        }
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "node.toml",
                "[assignment]\nredis_url = \"rediss://r:6380/0\"\n\
                 [assignment.redis_tls]\nca_file = \"/etc/ca.pem\"\n",
            )?;
            jail.set_env("PANOPTES_ASSIGNMENT__REDIS_USERNAME", "worker-3");
            jail.set_env("PANOPTES_ASSIGNMENT__REDIS_PASSWORD_FILE", "/run/pw");
            jail.set_env("PANOPTES_ASSIGNMENT__REDIS_TLS__CERT_FILE", "/etc/c.pem");
            let n: Node =
                crate::config::load(Some(std::path::Path::new("node.toml")), &["assignment"])
                    .unwrap();
            let r = &n.assignment.redis;
            assert_eq!(r.redis_url, "rediss://r:6380/0");
            assert_eq!(
                r.redis_tls.ca_file.as_deref(),
                Some(std::path::Path::new("/etc/ca.pem"))
            );
            assert_eq!(
                r.redis_tls.cert_file.as_deref(),
                Some(std::path::Path::new("/etc/c.pem"))
            );
            assert_eq!(r.redis_username.as_deref(), Some("worker-3"));
            assert_eq!(
                r.redis_password_file.as_deref(),
                Some(std::path::Path::new("/run/pw"))
            );
            Ok(())
        });
    }

    #[test]
    fn serialises_without_empty_security_keys() {
        let text = toml::to_string(&RedisClientConfig::default()).unwrap();
        assert_eq!(text.trim(), "redis_url = \"redis://127.0.0.1:6379/0\"");
    }
}
