//! Camera passwords at rest: sealed with an AEAD under a keyring that coordinators and
//! ingest nodes hold and workers do not.
//!
//! Contract:
//! - Cipher: ChaCha20-Poly1305 (RFC 8439), 256-bit keys, a fresh random 96-bit nonce per
//!   seal. The associated data binds a sealed value to its camera id, so a value copied into
//!   another camera's record does not open.
//! - Sealed text: `v1:<key id>:<base64(nonce ‖ ciphertext ‖ tag)>`. The key id says which key
//!   opens it, so keys can rotate: a [`Keyring`] has one primary key (seals) and any number
//!   of older keys (open only).
//! - Keyring text (a file, or `$PANOPTES_CAMERA_KEYS`): entries `<id>:<base64 of 32 bytes>`
//!   separated by newlines, commas or spaces; the first entry is the primary; `#` starts a
//!   comment line. Ids are 1–32 of `[A-Za-z0-9_-]`. A new key: `openssl rand -base64 32`.
//! - Failures are typed ([`SealError`]): a malformed value, an unknown key id, or a value that
//!   does not authenticate (tampered, wrong key, other camera). None panics; none shows key
//!   material or plaintext.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use panoptes_runtime::redact::Secret;

/// Environment variable holding the keyring text when no key file is configured.
pub const KEYS_ENV: &str = "PANOPTES_CAMERA_KEYS";

const VERSION: &str = "v1";
const AAD_PREFIX: &[u8] = b"panoptes/camera-password/v1\0";
const NONCE_LEN: usize = 12;

/// Why a value could not be sealed or opened, or a keyring loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The keyring text or file is unusable.
    #[error("camera keyring: {0}")]
    Keyring(String),
    /// A password must be sealed or opened but no keyring is configured.
    #[error(
        "camera credentials need the camera keyring: set camera_key_file or ${KEYS_ENV} \
         (coordinators and ingest nodes)"
    )]
    NoKeyring,
    /// The value is not sealed text of a known version.
    #[error("sealed value is malformed")]
    Malformed,
    /// Sealed under a key this keyring does not hold (rotated out, or another deployment's).
    #[error("sealed under unknown key id {0:?}")]
    UnknownKey(String),
    /// The value does not authenticate: tampered, wrong key, or another camera's value.
    #[error("sealed value does not authenticate under key {0:?} (tampered or wrong key)")]
    Forged(String),
}

impl SealError {
    /// A short label for metrics (`reason`).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Keyring(_) => "keyring",
            Self::NoKeyring => "no_keyring",
            Self::Malformed => "malformed",
            Self::UnknownKey(_) => "unknown_key",
            Self::Forged(_) => "forged",
        }
    }
}

/// The keys: one primary (seals and opens) and older ones (open only).
#[derive(Clone)]
pub struct Keyring {
    /// `(id, cipher)`, primary first.
    keys: Vec<(String, ChaCha20Poly1305)>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        write!(f, "Keyring(primary {:?}, ids {ids:?})", self.primary_id())
    }
}

fn valid_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Keyring {
    /// Parses keyring text (see the module doc). At least one key; ids unique.
    pub fn parse(text: &str) -> Result<Self, SealError> {
        let mut keys: Vec<(String, ChaCha20Poly1305)> = Vec::new();
        let entries = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(|l| l.split([',', ' ', '\t']))
            .filter(|e| !e.is_empty());
        for (i, entry) in entries.enumerate() {
            let (id, b64) = entry.split_once(':').ok_or_else(|| {
                SealError::Keyring(format!("entry {} is not <id>:<base64 key>", i + 1))
            })?;
            if !valid_id(id) {
                return Err(SealError::Keyring(format!(
                    "key id {id:?}: use 1-32 of letters, digits, '-', '_'"
                )));
            }
            let bytes = STANDARD
                .decode(b64)
                .map_err(|_| SealError::Keyring(format!("key {id:?} is not base64")))?;
            if bytes.len() != 32 {
                return Err(SealError::Keyring(format!(
                    "key {id:?} has {} bytes, not 32",
                    bytes.len()
                )));
            }
            if keys.iter().any(|(k, _)| k == id) {
                return Err(SealError::Keyring(format!("key id {id:?} is listed twice")));
            }
            let cipher = ChaCha20Poly1305::new(Key::from_slice(&bytes));
            keys.push((id.to_string(), cipher));
        }
        if keys.is_empty() {
            return Err(SealError::Keyring("no key".into()));
        }
        Ok(Self { keys })
    }

    /// Loads the keyring from `file` if given, else from `$PANOPTES_CAMERA_KEYS`; `Ok(None)`
    /// when neither is set. An unreadable or bad source is an error (fail closed).
    pub fn load(file: Option<&Path>) -> Result<Option<Self>, SealError> {
        let text = match file {
            Some(p) => std::fs::read_to_string(p)
                .map_err(|e| SealError::Keyring(format!("{}: {e}", p.display())))?,
            None => match std::env::var(KEYS_ENV) {
                Ok(t) => t,
                Err(_) => return Ok(None),
            },
        };
        Self::parse(&text).map(Some)
    }

    /// The id of the key that seals.
    pub fn primary_id(&self) -> &str {
        &self.keys[0].0
    }

    /// Whether `id` is one of the keys.
    pub fn has(&self, id: &str) -> bool {
        self.keys.iter().any(|(k, _)| k == id)
    }

    /// Seals `plaintext` for camera `camera` under the primary key.
    pub fn seal(&self, camera: &str, plaintext: &str) -> String {
        let (id, cipher) = &self.keys[0];
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = aad(camera);
        let ct = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("ChaCha20-Poly1305 encryption of a short message cannot fail");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ct);
        format!("{VERSION}:{id}:{}", STANDARD.encode(blob))
    }

    /// Opens a value sealed for camera `camera`.
    pub fn open(&self, camera: &str, sealed: &str) -> Result<Secret, SealError> {
        let id = key_id(sealed).ok_or(SealError::Malformed)?;
        let b64 = &sealed[VERSION.len() + id.len() + 2..];
        let cipher = self
            .keys
            .iter()
            .find(|(k, _)| k == id)
            .map(|(_, c)| c)
            .ok_or_else(|| SealError::UnknownKey(id.to_string()))?;
        let blob = STANDARD.decode(b64).map_err(|_| SealError::Malformed)?;
        if blob.len() < NONCE_LEN + 16 {
            return Err(SealError::Malformed);
        }
        let (nonce, ct) = blob.split_at(NONCE_LEN);
        let aad = aad(camera);
        let pt = cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| SealError::Forged(id.to_string()))?;
        String::from_utf8(pt)
            .map(Secret::new)
            .map_err(|_| SealError::Forged(id.to_string()))
    }
}

/// The key id of sealed text (`None`: not sealed text of a known version).
pub fn key_id(sealed: &str) -> Option<&str> {
    let rest = sealed.strip_prefix(VERSION)?.strip_prefix(':')?;
    let (id, _) = rest.split_once(':')?;
    valid_id(id).then_some(id)
}

fn aad(camera: &str) -> Vec<u8> {
    let mut a = AAD_PREFIX.to_vec();
    a.extend_from_slice(camera.as_bytes());
    a
}

/// Splits the password off a URL: `(url without the password, password)`; the password as
/// written in the URL (percent-encoded). `None` when the URL has no (non-empty) password.
/// Works on the text itself, so [`join_password`] gives back the exact input.
pub fn split_password(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..end];
    let at = authority.rfind('@')?;
    let (user, password) = authority[..at].split_once(':')?;
    if password.is_empty() {
        return None;
    }
    let bare = format!("{scheme}://{user}{}{}", &authority[at..], &rest[end..]);
    Some((bare, password.to_string()))
}

/// Puts `password` back into a URL split by [`split_password`].
pub fn join_password(bare: &str, password: &str) -> Option<String> {
    let (scheme, rest) = bare.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..end].rfind('@')?;
    Some(format!(
        "{scheme}://{}:{password}{}",
        &rest[..at],
        &rest[at..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> String {
        STANDARD.encode([b; 32])
    }

    #[test]
    fn seals_and_opens_and_never_leaks() {
        let ring = Keyring::parse(&format!("k1:{}", key(1))).unwrap();
        let s = ring.seal("cam-1", "hunter2");
        assert!(s.starts_with("v1:k1:"), "{s}");
        assert!(!s.contains("hunter2"));
        assert_eq!(ring.open("cam-1", &s).unwrap().expose(), "hunter2");
        // A fresh nonce every time.
        assert_ne!(ring.seal("cam-1", "hunter2"), s);
        assert!(!format!("{ring:?}").contains(&key(1)));
    }

    #[test]
    fn tampering_wrong_key_and_other_cameras_are_refused() {
        let ring = Keyring::parse(&format!("k1:{}", key(1))).unwrap();
        let s = ring.seal("cam-1", "hunter2");
        // Another camera's record.
        assert_eq!(ring.open("cam-2", &s), Err(SealError::Forged("k1".into())));
        // Every flipped byte of nonce, ciphertext or tag.
        let blob = STANDARD.decode(&s[6..]).unwrap();
        for i in 0..blob.len() {
            let mut b = blob.clone();
            b[i] ^= 0x40;
            let t = format!("v1:k1:{}", STANDARD.encode(&b));
            assert_eq!(
                ring.open("cam-1", &t),
                Err(SealError::Forged("k1".into())),
                "byte {i}"
            );
        }
        // Same id, different key material.
        let other = Keyring::parse(&format!("k1:{}", key(2))).unwrap();
        assert_eq!(other.open("cam-1", &s), Err(SealError::Forged("k1".into())));
        // Unknown id, malformed values.
        let k9 = Keyring::parse(&format!("k9:{}", key(1))).unwrap();
        assert_eq!(
            k9.open("cam-1", &s),
            Err(SealError::UnknownKey("k1".into()))
        );
        for bad in [
            "",
            "v1",
            "v1:k1",
            "v1:k1:!!",
            "v2:k1:AAAA",
            "v1:k1:AAAA",
            "hunter2",
        ] {
            assert!(
                matches!(
                    ring.open("cam-1", bad),
                    Err(SealError::Malformed | SealError::UnknownKey(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn rotation_keeps_old_values_readable() {
        let old = Keyring::parse(&format!("k1:{}", key(1))).unwrap();
        let sealed_old = old.seal("cam-1", "pw-old");
        // New primary k2, k1 kept for opening.
        let rotated = Keyring::parse(&format!("k2:{}\nk1:{}\n", key(2), key(1))).unwrap();
        assert_eq!(rotated.primary_id(), "k2");
        assert_eq!(
            rotated.open("cam-1", &sealed_old).unwrap().expose(),
            "pw-old"
        );
        // Re-sealing moves it to k2; k1 can then be dropped.
        let resealed = rotated.seal(
            "cam-1",
            rotated.open("cam-1", &sealed_old).unwrap().expose(),
        );
        assert_eq!(key_id(&resealed), Some("k2"));
        let only_new = Keyring::parse(&format!("k2:{}", key(2))).unwrap();
        assert_eq!(
            only_new.open("cam-1", &resealed).unwrap().expose(),
            "pw-old"
        );
        assert_eq!(
            only_new.open("cam-1", &sealed_old),
            Err(SealError::UnknownKey("k1".into()))
        );
    }

    #[test]
    fn bad_keyrings_are_clear_errors() {
        for (text, want) in [
            ("", "no key"),
            ("# only a comment\n", "no key"),
            ("k1", "not <id>:<base64 key>"),
            ("k 1:AAAA", "not <id>"),
            ("k1:***", "not base64"),
            ("k1:AAAA", "not 32"),
            (&format!("k1:{},k1:{}", key(1), key(2)), "twice"),
            (&format!("a/b:{}", key(1)), "key id"),
        ] {
            let e = Keyring::parse(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let ring = Keyring::parse(&format!("# primary\nk2:{}, k1:{}", key(2), key(1))).unwrap();
        assert!(ring.has("k1") && ring.has("k2") && !ring.has("k3"));
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        assert!(matches!(
            Keyring::load(Some(&missing)),
            Err(SealError::Keyring(_))
        ));
    }

    proptest::proptest! {
        /// Any password seals and opens for its camera, and only for it; any URL that has a
        /// password splits into a URL without it and joins back to the exact input.
        #[test]
        fn sealing_and_splitting_round_trip(
            camera in "[A-Za-z0-9._-]{1,64}",
            password in "\\PC{1,64}",
            user in "[a-z0-9%._-]{0,12}",
            pw_in_url in "[A-Za-z0-9%!$&'()*+,;=._~:-]{1,24}",
            rest in "(/[^@ ]{0,20})?",
        ) {
            let ring = Keyring::parse(&format!("k1:{}", key(7))).unwrap();
            let s = ring.seal(&camera, &password);
            let opened = ring.open(&camera, &s).unwrap();
            proptest::prop_assert_eq!(opened.expose(), password.as_str());
            let other = format!("{camera}x");
            proptest::prop_assert!(ring.open(&other, &s).is_err());
            let url = format!("rtsp://{user}:{pw_in_url}@h.example:554{rest}");
            let (bare, pw) = split_password(&url).unwrap();
            proptest::prop_assert_eq!(&pw, &pw_in_url);
            let in_clear = format!(":{pw_in_url}@");
            proptest::prop_assert!(!bare.contains(&in_clear));
            proptest::prop_assert_eq!(join_password(&bare, &pw), Some(url));
        }

        /// Arbitrary text never panics the opener and never opens.
        #[test]
        fn garbage_never_opens(text in "\\PC{0,120}") {
            let ring = Keyring::parse(&format!("k1:{}", key(7))).unwrap();
            proptest::prop_assert!(ring.open("cam", &text).is_err());
            let _ = split_password(&text);
            let _ = Keyring::parse(&text);
        }
    }

    #[test]
    fn urls_split_and_join_exactly() {
        for url in [
            "rtsp://u:p%40ss@10.0.0.1:554/cam?x=1",
            "rtsp://u:pw@h",
            "rtsps://admin:a:b@h/p#f",
        ] {
            let (bare, pw) = split_password(url).unwrap();
            assert!(!bare.contains(&pw), "{bare}");
            assert_eq!(join_password(&bare, &pw).as_deref(), Some(url));
        }
        assert_eq!(
            split_password("rtsp://u:pw@h/x"),
            Some(("rtsp://u@h/x".into(), "pw".into()))
        );
        for none in [
            "rtsp://h/x",
            "rtsp://u@h/x",
            "rtsp://u:@h/x",
            "rtsp://h/a:b@c",
            "nourl",
        ] {
            assert_eq!(split_password(none), None, "{none}");
        }
    }
}
