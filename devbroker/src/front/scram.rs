//! The server side of SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka uses it:
//! two `SaslAuthenticate` round trips, no channel binding.
//!
//! Contract: [`ScramServer::client_first`] answers the client-first message with a fresh
//! salt and nonce (4096 iterations, Kafka's minimum); [`ScramServer::client_final`] checks
//! the nonce, the channel-binding echo and the client proof (constant-time) and returns the
//! server-final message that proves the server knew the password too. Any mismatch is
//! [`ScramError`]; the message never contains the password or the proof. Unknown users fail
//! at the first step (a development broker need not hide which users exist).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256, Sha512};

/// Iterations of the salted password (Kafka refuses fewer than 4096).
pub const ITERATIONS: u32 = 4096;

/// The hash of a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramHash {
    /// `SCRAM-SHA-256`.
    Sha256,
    /// `SCRAM-SHA-512`.
    Sha512,
}

impl ScramHash {
    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        // Both HMACs accept keys of any length; `new_from_slice` cannot fail for them.
        match self {
            ScramHash::Sha256 => {
                let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            ScramHash::Sha512 => {
                let mut m = Hmac::<Sha512>::new_from_slice(key).expect("HMAC takes any key");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `Hi(password, salt, i)`: PBKDF2 with this hash's HMAC.
    pub fn salted_password(self, password: &str, salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            ScramHash::Sha256 => {
                let mut out = vec![0u8; 32];
                pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), salt, iterations, &mut out);
                out
            }
            ScramHash::Sha512 => {
                let mut out = vec![0u8; 64];
                pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, iterations, &mut out);
                out
            }
        }
    }
}

/// Why a SCRAM exchange failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScramError {
    /// A message did not follow the RFC's grammar.
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    /// Channel binding was asked for (not supported).
    #[error("channel binding is not supported")]
    ChannelBinding,
    /// The user is not known.
    #[error("authentication failed")]
    UnknownUser,
    /// Nonce or proof did not match: a wrong password (or a replay).
    #[error("authentication failed")]
    BadProof,
}

/// What the server keeps between the two round trips.
struct Pending {
    user: String,
    gs2_header: String,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    salted_password: Vec<u8>,
}

/// One SCRAM exchange on the server side.
pub struct ScramServer {
    hash: ScramHash,
    pending: Option<Pending>,
}

/// Reads `key=value` from `attr`.
fn attr(part: Option<&str>, key: char) -> Result<&str, ScramError> {
    let part = part.ok_or(ScramError::Malformed("missing attribute"))?;
    let mut chars = part.chars();
    if chars.next() != Some(key) || chars.next() != Some('=') {
        return Err(ScramError::Malformed("unexpected attribute"));
    }
    Ok(&part[2..])
}

/// Decodes a SASLname (`=2C` is `,`, `=3D` is `=`; any other `=` is malformed).
fn sasl_name(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError::Malformed("bad username escape")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ScramServer {
    /// A new exchange with `hash`.
    pub fn new(hash: ScramHash) -> Self {
        Self {
            hash,
            pending: None,
        }
    }

    /// The user named in the client-first message, once it was accepted.
    pub fn user(&self) -> Option<&str> {
        self.pending.as_ref().map(|p| p.user.as_str())
    }

    /// Answers the client-first message; `password_of` looks a user up.
    pub fn client_first(
        &mut self,
        message: &str,
        password_of: impl Fn(&str) -> Option<String>,
    ) -> Result<String, ScramError> {
        // gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let mut parts = message.splitn(3, ',');
        let cbind = parts.next().ok_or(ScramError::Malformed("gs2 header"))?;
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => return Err(ScramError::ChannelBinding),
            _ => return Err(ScramError::Malformed("gs2 header")),
        }
        let authzid = parts.next().ok_or(ScramError::Malformed("gs2 header"))?;
        let bare = parts
            .next()
            .ok_or(ScramError::Malformed("client-first-bare"))?;
        let gs2_header = format!("{cbind},{authzid},");
        let mut fields = bare.split(',');
        let user = sasl_name(attr(fields.next(), 'n')?)?;
        let client_nonce = attr(fields.next(), 'r')?;
        if client_nonce.is_empty() || user.is_empty() {
            return Err(ScramError::Malformed("empty user or nonce"));
        }
        let password = password_of(&user).ok_or(ScramError::UnknownUser)?;
        let mut salt = [0u8; 16];
        let mut server_nonce = [0u8; 18];
        rand::rng().fill_bytes(&mut salt);
        rand::rng().fill_bytes(&mut server_nonce);
        let nonce = format!("{client_nonce}{}", B64.encode(server_nonce));
        let server_first = format!("r={nonce},s={},i={ITERATIONS}", B64.encode(salt));
        self.pending = Some(Pending {
            user,
            gs2_header,
            client_first_bare: bare.to_string(),
            server_first: server_first.clone(),
            nonce,
            salted_password: self.hash.salted_password(&password, &salt, ITERATIONS),
        });
        Ok(server_first)
    }

    /// Checks the client-final message; returns the server-final message on success.
    pub fn client_final(&mut self, message: &str) -> Result<String, ScramError> {
        let p = self
            .pending
            .take()
            .ok_or(ScramError::Malformed("client-final before client-first"))?;
        let (without_proof, proof) = message
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("no proof"))?;
        let mut fields = without_proof.split(',');
        let cbind = B64
            .decode(attr(fields.next(), 'c')?)
            .map_err(|_| ScramError::Malformed("channel binding"))?;
        if cbind != p.gs2_header.as_bytes() {
            return Err(ScramError::Malformed("channel binding echo"));
        }
        if attr(fields.next(), 'r')? != p.nonce {
            return Err(ScramError::BadProof);
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof"))?;
        let h = self.hash;
        let auth_message = format!("{},{},{without_proof}", p.client_first_bare, p.server_first);
        let client_key = h.hmac(&p.salted_password, b"Client Key");
        let stored_key = h.hash(&client_key);
        let signature = h.hmac(&stored_key, auth_message.as_bytes());
        if proof.len() != signature.len() {
            return Err(ScramError::BadProof);
        }
        let claimed: Vec<u8> = proof.iter().zip(&signature).map(|(a, b)| a ^ b).collect();
        if !constant_time_eq(&h.hash(&claimed), &stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_key = h.hmac(&p.salted_password, b"Server Key");
        let server_signature = h.hmac(&server_key, auth_message.as_bytes());
        self.pending = Some(p);
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client side, as RFC 5802 §3 computes it (what librdkafka does).
    fn client_final(h: ScramHash, password: &str, first_bare: &str, server_first: &str) -> String {
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iterations = 0;
        for f in server_first.split(',') {
            match f.split_at(2) {
                ("r=", v) => nonce = v,
                ("s=", v) => salt = B64.decode(v).unwrap(),
                ("i=", v) => iterations = v.parse().unwrap(),
                _ => {}
            }
        }
        let salted = h.salted_password(password, &salt, iterations);
        let client_key = h.hmac(&salted, b"Client Key");
        let stored = h.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{first_bare},{server_first},{without_proof}");
        let sig = h.hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    fn users(u: &str) -> Option<String> {
        (u == "alice").then(|| "s3cret".to_string())
    }

    #[test]
    fn right_password_passes_and_wrong_one_fails() {
        for h in [ScramHash::Sha256, ScramHash::Sha512] {
            let bare = "n=alice,r=fyko+d2lbbFgONRv9qkxdawL";
            let mut s = ScramServer::new(h);
            let first = s.client_first(&format!("n,,{bare}"), users).unwrap();
            assert!(first.starts_with("r=fyko+d2lbbFgONRv9qkxdawL") && first.ends_with(",i=4096"));
            let fin = s
                .client_final(&client_final(h, "s3cret", bare, &first))
                .unwrap();
            assert!(fin.starts_with("v="));
            assert_eq!(s.user(), Some("alice"));

            let mut s = ScramServer::new(h);
            let first = s.client_first(&format!("n,,{bare}"), users).unwrap();
            let wrong = client_final(h, "guess", bare, &first);
            assert_eq!(s.client_final(&wrong), Err(ScramError::BadProof));
        }
    }

    #[test]
    fn bad_messages_are_refused() {
        let mut s = ScramServer::new(ScramHash::Sha256);
        assert_eq!(
            s.client_first("n,,n=bob,r=abc", users),
            Err(ScramError::UnknownUser)
        );
        assert_eq!(
            s.client_first("p=tls-unique,,n=alice,r=abc", users),
            Err(ScramError::ChannelBinding)
        );
        assert!(s.client_first("garbage", users).is_err());
        assert!(s.client_final("c=biws,r=x,p=AAAA").is_err());
    }
}
