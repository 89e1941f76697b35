//! TLS material from files, and the rustls configurations every link builds from it.
//!
//! Contract:
//! - Certificates and keys are PEM files named in config ([`TlsFiles`]); their contents never
//!   reach argv, logs or `Debug` output (only the paths do).
//! - One crypto provider (ring) is compiled in; [`install_crypto_provider`] makes it the
//!   process default so that libraries building their own rustls configs (the Redis client)
//!   find it. Every node and tool calls it once at start; calling it again is harmless.
//! - A server with a `ca_file` requires and verifies client certificates (mutual TLS);
//!   without one it accepts any client at the TLS layer (authentication is then the
//!   application's: a token, SASL or an ACL password).
//! - A client verifies the server against `ca_file` only; there is no "accept anything"
//!   switch. A client `cert_file` + `key_file` pair is presented for mutual TLS.
//!
//! librdkafka does TLS with its own OpenSSL and takes the same [`TlsFiles`] paths as
//! `ssl.*` properties (see `config::kafka`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

/// PEM files of one TLS endpoint (either side).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFiles {
    /// CA bundle that verifies the peer: the server's for a client (required), the clients'
    /// for a server (optional; set, it makes client certificates mandatory).
    pub ca_file: Option<PathBuf>,
    /// Certificate chain this side presents (required for a server; mutual TLS for a client).
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file` (keep it mode 0600).
    pub key_file: Option<PathBuf>,
}

/// Why TLS material could not be turned into a configuration. All are fatal: retrying with
/// the same files gives the same answer.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed as PEM.
    #[error("TLS: cannot read {what} from {path}: {reason}")]
    Read {
        /// Which piece (certificate, key, CA bundle).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A file was read but held nothing of the expected kind.
    #[error("TLS: {path} holds no {what}")]
    Empty {
        /// Which piece.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A required file is not configured.
    #[error("TLS: {0} is required")]
    Missing(&'static str),
    /// `cert_file` without `key_file` or the other way round.
    #[error("TLS: cert_file and key_file go together")]
    Unpaired,
    /// rustls refused the material (key does not match the certificate, bad CA, ...).
    #[error("TLS: {0}")]
    Rustls(String),
}

impl TlsFiles {
    /// Whether nothing is configured.
    pub fn is_empty(&self) -> bool {
        self.ca_file.is_none() && self.cert_file.is_none() && self.key_file.is_none()
    }

    /// Every configured file exists and is readable (a start-up check with a clear message).
    pub fn check_readable(&self) -> Result<(), TlsError> {
        for (what, path) in [
            ("CA bundle", &self.ca_file),
            ("certificate", &self.cert_file),
            ("private key", &self.key_file),
        ] {
            if let Some(path) = path {
                std::fs::metadata(path).map_err(|e| read_error(what, path, e))?;
            }
        }
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(TlsError::Unpaired);
        }
        Ok(())
    }
}

/// Makes ring the process-wide rustls crypto provider (idempotent).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is all we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read_error(what: &'static str, path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Read {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read_error("certificates", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error("certificates", path, e))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what: "certificate",
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: "private key",
            path: path.to_path_buf(),
        },
        other => read_error("private key", path, other),
    })
}

fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Rustls(format!("CA bundle {}: {e}", path.display())))?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration: `cert_file` + `key_file` required; `ca_file` turns on mandatory
/// client certificates. `alpn` lists the protocols offered (e.g. `b"http/1.1"`).
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let cert = files
        .cert_file
        .as_deref()
        .ok_or(TlsError::Missing("cert_file"))?;
    let key = files
        .key_file
        .as_deref()
        .ok_or(TlsError::Missing("key_file"))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match files.ca_file.as_deref() {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Rustls(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client configuration: `ca_file` required; `cert_file` + `key_file` for mutual TLS.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let ca = files
        .ca_file
        .as_deref()
        .ok_or(TlsError::Missing("ca_file"))?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(root_store(ca)?);
    let config = match (files.cert_file.as_deref(), files.key_file.as_deref()) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Rustls(e.to_string()))?,
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(TlsError::Unpaired),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_unpaired_files_are_clear_errors() {
        let none = TlsFiles::default();
        assert!(none.is_empty());
        assert!(matches!(
            server_config(&none, &[]),
            Err(TlsError::Missing("cert_file"))
        ));
        assert!(matches!(
            client_config(&none),
            Err(TlsError::Missing("ca_file"))
        ));
        let half = TlsFiles {
            cert_file: Some("/nonexistent/c.pem".into()),
            ..TlsFiles::default()
        };
        assert!(matches!(half.check_readable(), Err(TlsError::Read { .. })));
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a pem\n").unwrap();
        assert!(matches!(load_certs(&empty), Err(TlsError::Empty { .. })));
        assert!(matches!(load_key(&empty), Err(TlsError::Empty { .. })));
        let unpaired = TlsFiles {
            cert_file: Some(empty.clone()),
            ..TlsFiles::default()
        };
        assert!(matches!(unpaired.check_readable(), Err(TlsError::Unpaired)));
    }
}
