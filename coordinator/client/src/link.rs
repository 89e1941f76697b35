//! [`RedisLink`]: the one way every Panoptes process opens Redis (coordinator, ingest nodes,
//! workers, test harness, load tools).
//!
//! Contract:
//! - [`RedisLink::open`] validates the [`RedisClientConfig`] (it fails closed: see
//!   `panoptes_runtime::config::redis`), reads the TLS files and the password once, installs
//!   the ring rustls provider, and keeps a `redis::Client` that every later
//!   [`RedisLink::connect`] uses. A rotated password or certificate takes effect when the
//!   process restarts.
//! - `rediss://` links trust only `redis_tls.ca_file` (never the system roots) and present
//!   `cert_file` + `key_file` when both are set (mutual TLS).
//! - With `redis_username` every connection authenticates as that ACL user (`AUTH user
//!   password`); Redis then enforces the user's command, key and channel rules on every call,
//!   including each `redis.call` inside our Lua scripts.
//! - Neither `Debug` nor any error shows the password.

use std::time::Duration;

use panoptes_runtime::config::RedisClientConfig;
use panoptes_runtime::config::redis::ALL_SCHEMES;
use panoptes_runtime::redact::redact_text;
use redis::{ConnectionAddr, IntoConnectionInfo};

use crate::CoordError;

/// An opened (not yet connected) Redis client with its TLS and ACL settings. Cheap to clone.
#[derive(Clone)]
pub struct RedisLink {
    client: redis::Client,
    shown: String,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisLink({})", self.shown)
    }
}

impl RedisLink {
    /// Validates `cfg` and builds the client (no connection is made yet). Errors are
    /// [`CoordError::Invalid`] (fatal: fix the configuration).
    pub fn open(cfg: &RedisClientConfig) -> Result<Self, CoordError> {
        panoptes_runtime::tls::install_crypto_provider();
        cfg.validate("redis_url", ALL_SCHEMES)
            .map_err(CoordError::Invalid)?;
        let bad = |e: redis::RedisError| {
            CoordError::Invalid(format!(
                "redis_url {}: {}",
                redact_text(&cfg.redis_url),
                redact_text(&e.to_string())
            ))
        };
        let mut info = cfg.redis_url.as_str().into_connection_info().map_err(bad)?;
        if let Some(user) = &cfg.redis_username {
            info.redis.username = Some(user.clone());
        }
        if let Some(pw) = cfg
            .password()
            .map_err(|e| CoordError::Invalid(e.to_string()))?
        {
            info.redis.password = Some(pw.expose().to_string());
        }
        let client = match &info.addr {
            ConnectionAddr::TcpTls { .. } => {
                let certs = tls_certificates(cfg)?;
                redis::Client::build_with_tls(info, certs).map_err(bad)?
            }
            _ => redis::Client::open(info).map_err(bad)?,
        };
        let user = cfg.redis_username.as_deref().unwrap_or("default");
        Ok(Self {
            client,
            shown: format!("{} as {user}", redact_text(&cfg.redis_url)),
        })
    }

    /// A link for a bare URL (no TLS files, no ACL user): tests and development tools.
    pub fn url(url: &str) -> Result<Self, CoordError> {
        Self::open(&RedisClientConfig::from(url))
    }

    /// Opens a synchronous connection with connect, read and write timeouts of `timeout`.
    /// A refused login (wrong password, unknown user) or a failed TLS handshake is
    /// [`CoordError::Unavailable`] like any other connection failure, with Redis's reason.
    pub fn connect(&self, timeout: Duration) -> Result<redis::Connection, CoordError> {
        let c = self
            .client
            .get_connection_with_timeout(timeout)
            .map_err(|e| CoordError::Unavailable(redact_text(&e.to_string())))?;
        c.set_read_timeout(Some(timeout))?;
        c.set_write_timeout(Some(timeout))?;
        Ok(c)
    }

    /// The `redis::Client` (for callers that manage connections themselves).
    pub fn client(&self) -> &redis::Client {
        &self.client
    }

    /// The URL (redacted) and the user, for logs.
    pub fn describe(&self) -> &str {
        &self.shown
    }
}

/// The CA (and client certificate and key, for mutual TLS) as PEM bytes.
fn tls_certificates(cfg: &RedisClientConfig) -> Result<redis::TlsCertificates, CoordError> {
    let read = |what: &str, p: &std::path::Path| {
        std::fs::read(p)
            .map_err(|e| CoordError::Invalid(format!("redis_tls.{what} {}: {e}", p.display())))
    };
    let files = &cfg.redis_tls;
    let ca = files.ca_file.as_deref().ok_or_else(|| {
        CoordError::Invalid("redis_tls.ca_file is required with rediss://".into())
    })?;
    // Parse here so a bad file is a clear start-up error, not a handshake failure later.
    panoptes_runtime::tls::load_certs(ca).map_err(|e| CoordError::Invalid(e.to_string()))?;
    let client_tls = match (files.cert_file.as_deref(), files.key_file.as_deref()) {
        (Some(cert), Some(key)) => {
            panoptes_runtime::tls::load_certs(cert)
                .map_err(|e| CoordError::Invalid(e.to_string()))?;
            panoptes_runtime::tls::load_key(key).map_err(|e| CoordError::Invalid(e.to_string()))?;
            Some(redis::ClientTlsConfig {
                client_cert: read("cert_file", cert)?,
                client_key: read("key_file", key)?,
            })
        }
        (None, None) => None,
        _ => {
            return Err(CoordError::Invalid(
                "redis_tls: cert_file and key_file go together".into(),
            ));
        }
    };
    Ok(redis::TlsCertificates {
        client_tls,
        root_cert: Some(read("ca_file", ca)?),
    })
}
