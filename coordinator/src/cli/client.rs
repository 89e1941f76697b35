//! The HTTP client of the operator CLI: one call per request, the server's error message
//! turned into [`CliError::Server`]. `https://` URLs are verified against the CA given with
//! `--ca-file` only (rustls, ring); there is no switch that skips verification.

use std::time::Duration;

use panoptes_runtime::redact::Secret;
use panoptes_runtime::tls::{self, TlsFiles};
use serde_json::Value;

/// Why a command failed: printed as `error: ...`, exit code 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with an error status.
    #[error("{message} (HTTP {status})")]
    Server {
        /// HTTP status.
        status: u16,
        /// The server's `error` message.
        message: String,
    },
    /// Anything else (network, file, parse).
    #[error("{0}")]
    Other(String),
}

/// Any displayable failure as [`CliError::Other`].
pub(crate) fn other(e: impl std::fmt::Display) -> CliError {
    CliError::Other(e.to_string())
}

/// An API client.
pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: Option<Secret>,
}

impl Client {
    /// A client for the API at `base` (`http://127.0.0.1:7300`, or `https://...` with
    /// `tls.ca_file`; `tls.cert_file` + `tls.key_file` for mutual TLS).
    pub fn new(base: &str, token: Option<Secret>, tls: &TlsFiles) -> Result<Self, CliError> {
        let base = base.trim_end_matches('/').to_string();
        let url = reqwest::Url::parse(&base)
            .map_err(|e| CliError::Other(format!("--url {base}: {e}")))?;
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5));
        match url.scheme() {
            "https" => {
                if tls.ca_file.is_none() {
                    return Err(CliError::Other(
                        "an https:// URL needs --ca-file (or $PANOPTES_API_CA_FILE): the CA that signed the coordinator's certificate".into(),
                    ));
                }
                tls::install_crypto_provider();
                let config = tls::client_config(tls).map_err(other)?;
                builder = builder.use_preconfigured_tls((*config).clone());
            }
            "http" => {
                if !tls.is_empty() {
                    return Err(CliError::Other(format!(
                        "TLS files are given (--ca-file, --cert-file, --key-file or $PANOPTES_API_*_FILE) but --url {base} is plain http: use https://"
                    )));
                }
                let host = url.host_str().unwrap_or("").trim_matches(['[', ']']);
                let loopback = host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if token.is_some() && !loopback {
                    eprintln!(
                        "warning: sending the API token over plain HTTP to {base}; use https:// with --ca-file"
                    );
                }
            }
            other => {
                return Err(CliError::Other(format!(
                    "--url {base}: scheme {other:?} is not http or https"
                )));
            }
        }
        Ok(Self {
            http: builder.build().map_err(other)?,
            base,
            token,
        })
    }

    /// Sends one request; the JSON answer, or the server's error message.
    pub fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.expose());
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().map_err(|e| {
            CliError::Other(format!(
                "cannot reach the coordinator at {}: {e}",
                self.base
            ))
        })?;
        let status = resp.status();
        let text = resp.text().map_err(other)?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        let message = value
            .get("error")
            .and_then(Value::as_str)
            .map_or_else(|| value.to_string(), str::to_owned);
        Err(CliError::Server {
            status: status.as_u16(),
            message,
        })
    }
}

/// One path segment, percent-encoded where it is not URL-safe.
pub(crate) fn path_seg(s: &str) -> String {
    // Camera ids and node ids are restricted to URL-safe characters by the server; encode
    // anything else rather than build a wrong path.
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
