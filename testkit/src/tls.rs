//! A throw-away PKI for tests of real TLS handshakes: a CA, a server certificate for
//! `localhost` and `127.0.0.1`, a client certificate signed by the same CA, and a second,
//! unrelated CA (the "wrong CA" a client must refuse). Files are PEM in a temporary folder
//! that lives as long as the [`TestPki`].

use std::path::{Path, PathBuf};

use anyhow::Context;
use panoptes_runtime::tls::TlsFiles;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// Certificates and keys written to a temporary folder.
pub struct TestPki {
    dir: tempfile::TempDir,
}

struct Authority {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn authority(name: &str) -> anyhow::Result<Authority> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Authority { cert, key })
}

fn leaf(ca: &Authority, name: &str) -> anyhow::Result<(String, String)> {
    let mut params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca.cert, &ca.key)?;
    Ok((cert.pem(), key.serialize_pem()))
}

impl TestPki {
    /// Generates the CA, the server and client certificates and the unrelated CA.
    pub fn generate() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("temporary folder for the test PKI")?;
        let ca = authority("panoptes test CA")?;
        let other = authority("some other CA")?;
        let (server_cert, server_key) = leaf(&ca, "panoptes test server")?;
        let (client_cert, client_key) = leaf(&ca, "panoptes test client")?;
        let files = [
            ("ca.pem", ca.cert.pem()),
            ("other-ca.pem", other.cert.pem()),
            ("server.pem", server_cert),
            ("server.key", server_key),
            ("client.pem", client_cert),
            ("client.key", client_key),
        ];
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text)
                .with_context(|| format!("writing {name}"))?;
        }
        Ok(Self { dir })
    }

    /// The folder holding every file.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A file of the PKI by name (`ca.pem`, `other-ca.pem`, `server.pem`, `server.key`,
    /// `client.pem`, `client.key`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The CA that signed the server and client certificates.
    pub fn ca(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// A CA that signed nothing here: a client trusting only it must refuse the server.
    pub fn other_ca(&self) -> PathBuf {
        self.path("other-ca.pem")
    }

    /// Server side, without client certificates.
    pub fn server(&self) -> TlsFiles {
        TlsFiles {
            ca_file: None,
            cert_file: Some(self.path("server.pem")),
            key_file: Some(self.path("server.key")),
        }
    }

    /// Server side requiring client certificates signed by [`TestPki::ca`].
    pub fn server_mutual(&self) -> TlsFiles {
        TlsFiles {
            ca_file: Some(self.ca()),
            ..self.server()
        }
    }

    /// Client side trusting [`TestPki::ca`], without a client certificate.
    pub fn client(&self) -> TlsFiles {
        TlsFiles {
            ca_file: Some(self.ca()),
            cert_file: None,
            key_file: None,
        }
    }

    /// Client side with the client certificate (mutual TLS).
    pub fn client_mutual(&self) -> TlsFiles {
        TlsFiles {
            ca_file: Some(self.ca()),
            cert_file: Some(self.path("client.pem")),
            key_file: Some(self.path("client.key")),
        }
    }

    /// Client side trusting only the unrelated CA.
    pub fn client_wrong_ca(&self) -> TlsFiles {
        TlsFiles {
            ca_file: Some(self.other_ca()),
            cert_file: None,
            key_file: None,
        }
    }
}
