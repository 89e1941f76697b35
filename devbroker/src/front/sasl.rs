//! SASL on the secure front: the users it knows, the mechanisms it offers (PLAIN,
//! SCRAM-SHA-256, SCRAM-SHA-512), and one connection's authentication as the sequence of
//! `SaslAuthenticate` payloads the client sends.
//!
//! Contract:
//! - Users come from a file of `user:password` lines (blank lines and `#` comments skipped;
//!   the password is everything after the first `:`), given by path, never on argv. The
//!   file is read once at start; its contents never reach logs or `Debug`.
//! - [`Authenticator::step`] consumes one client message and answers [`Step::Continue`]
//!   (send these bytes, expect another message), [`Step::Done`] (authenticated as this
//!   user, send these final bytes) or [`Step::Failed`] (a reason for the log; the client
//!   only learns "authentication failed").

use std::collections::BTreeMap;
use std::path::Path;

use crate::front::scram::{ScramHash, ScramServer};

/// A SASL mechanism the front offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Mechanism {
    /// `PLAIN` (RFC 4616).
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

impl Mechanism {
    /// Every mechanism, in the order offered.
    pub const ALL: [Mechanism; 3] = [
        Mechanism::Plain,
        Mechanism::ScramSha256,
        Mechanism::ScramSha512,
    ];

    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// The mechanism with this wire name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl std::str::FromStr for Mechanism {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s).ok_or_else(|| {
            format!("unknown SASL mechanism {s:?} (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")
        })
    }
}

/// The users the front accepts. `Debug` lists names only.
#[derive(Clone, Default)]
pub struct Users(BTreeMap<String, String>);

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Why the users file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    /// The file cannot be read.
    #[error("SASL users file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A line is not `user:password` (the line number only, never its text).
    #[error("SASL users file {path}: line {line} is not user:password with both non-empty")]
    Line {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
    },
    /// No user at all.
    #[error("SASL users file {0} lists no user")]
    Empty(String),
}

impl Users {
    /// Reads `user:password` lines from `path`.
    pub fn from_file(path: &Path) -> Result<Self, UsersError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| UsersError::Read {
            path: shown.clone(),
            reason: e.to_string(),
        })?;
        let mut users = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match line.split_once(':') {
                Some((u, p)) if !u.is_empty() && !p.is_empty() => {
                    users.insert(u.to_string(), p.to_string());
                }
                _ => {
                    return Err(UsersError::Line {
                        path: shown,
                        line: i + 1,
                    });
                }
            }
        }
        if users.is_empty() {
            return Err(UsersError::Empty(shown));
        }
        Ok(Self(users))
    }

    /// The password of `user`.
    fn password(&self, user: &str) -> Option<&str> {
        self.0.get(user).map(String::as_str)
    }
}

/// The answer to one client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send these bytes and wait for the next message.
    Continue(Vec<u8>),
    /// Authenticated as `user`; send these bytes.
    Done {
        /// The authenticated user.
        user: String,
        /// The last server message (empty for PLAIN).
        reply: Vec<u8>,
    },
    /// Authentication failed, for this reason (logged, not sent).
    Failed(String),
}

enum State {
    Plain,
    Scram(ScramServer, bool),
}

/// One connection's authentication.
pub struct Authenticator<'u> {
    users: &'u Users,
    state: State,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl<'u> Authenticator<'u> {
    /// Starts an exchange with `mechanism` against `users`.
    pub fn new(mechanism: Mechanism, users: &'u Users) -> Self {
        let state = match mechanism {
            Mechanism::Plain => State::Plain,
            Mechanism::ScramSha256 => State::Scram(ScramServer::new(ScramHash::Sha256), false),
            Mechanism::ScramSha512 => State::Scram(ScramServer::new(ScramHash::Sha512), false),
        };
        Self { users, state }
    }

    /// Consumes one client message.
    pub fn step(&mut self, message: &[u8]) -> Step {
        match &mut self.state {
            State::Plain => self.plain(message),
            State::Scram(server, first_done) => {
                let Ok(text) = std::str::from_utf8(message) else {
                    return Step::Failed("SCRAM message is not UTF-8".into());
                };
                let users = self.users;
                if !*first_done {
                    *first_done = true;
                    match server.client_first(text, |u| users.password(u).map(str::to_string)) {
                        Ok(reply) => Step::Continue(reply.into_bytes()),
                        Err(e) => Step::Failed(format!("SCRAM client-first: {e}")),
                    }
                } else {
                    match server.client_final(text) {
                        Ok(reply) => Step::Done {
                            user: server.user().unwrap_or_default().to_string(),
                            reply: reply.into_bytes(),
                        },
                        Err(e) => Step::Failed(format!(
                            "SCRAM client-final for {:?}: {e}",
                            server.user().unwrap_or_default()
                        )),
                    }
                }
            }
        }
    }

    /// `[authzid] NUL authcid NUL passwd`.
    fn plain(&self, message: &[u8]) -> Step {
        let parts: Vec<&[u8]> = message.split(|&b| b == 0).collect();
        let [authzid, user, password] = parts.as_slice() else {
            return Step::Failed("PLAIN message is not authzid\\0user\\0password".into());
        };
        let user = String::from_utf8_lossy(user).into_owned();
        if !authzid.is_empty() && *authzid != user.as_bytes() {
            return Step::Failed(format!("PLAIN: {user:?} may not act for another identity"));
        }
        match self.users.password(&user) {
            Some(expected) if constant_time_eq(expected.as_bytes(), password) => Step::Done {
                user,
                reply: Vec::new(),
            },
            Some(_) => Step::Failed(format!("PLAIN: wrong password for {user:?}")),
            None => Step::Failed(format!("PLAIN: unknown user {user:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_and_plain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "# comment\n\nalice:pa:ss\n bob:x \n").unwrap();
        let users = Users::from_file(&path).unwrap();
        assert_eq!(format!("{users:?}"), r#"{"alice", "bob"}"#);
        let step = |m: &[u8]| Authenticator::new(Mechanism::Plain, &users).step(m);
        assert!(matches!(step(b"\0alice\0pa:ss"), Step::Done { user, .. } if user == "alice"));
        assert!(matches!(step(b"bob\0bob\0x"), Step::Done { .. }));
        for bad in [
            &b"\0alice\0wrong"[..],
            b"\0carol\0x",
            b"bob\0alice\0pa:ss",
            b"alice",
        ] {
            assert!(matches!(step(bad), Step::Failed(_)), "{bad:?}");
        }
        std::fs::write(&path, "alice\n").unwrap();
        let e = Users::from_file(&path).unwrap_err().to_string();
        assert!(e.contains("line 1") && !e.contains("alice"), "{e}");
        std::fs::write(&path, "# none\n").unwrap();
        assert!(Users::from_file(&path).is_err());
        assert_eq!("SCRAM-SHA-512".parse(), Ok(Mechanism::ScramSha512));
        assert!("GSSAPI".parse::<Mechanism>().is_err());
    }
}
