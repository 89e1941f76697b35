//! Keeping credentials out of logs, metrics, traces and API answers.
//!
//! Camera URLs look like `rtsp://user:password@host/path`. The password is needed to talk to
//! the camera and nowhere else: [`CameraUrl`] splits it off once, and everything that prints
//! the URL prints [`CameraUrl::redacted`].

use std::fmt;

use url::Url;

/// Why a camera URL was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UrlError {
    /// Not a URL at all. The message never echoes the input, which may hold a password.
    #[error("camera URL is not a valid URL ({0})")]
    Parse(String),
    /// A URL with a scheme we cannot pull from.
    #[error("camera URL scheme {0:?} is not supported (use rtsp:// or rtsps://)")]
    Scheme(String),
    /// No host part.
    #[error("camera URL has no host")]
    NoHost,
}

/// A secret string: its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The value itself; call only where it is handed to the peer that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// An RTSP camera URL with its credentials split off.
#[derive(Clone, PartialEq, Eq)]
pub struct CameraUrl {
    /// The URL without user and password.
    bare: String,
    user: Option<String>,
    password: Option<Secret>,
}

impl CameraUrl {
    /// Parses `rtsp://[user[:password]@]host[:port]/path`.
    pub fn parse(s: &str) -> Result<Self, UrlError> {
        let mut url = Url::parse(s).map_err(|e| UrlError::Parse(e.to_string()))?;
        match url.scheme() {
            "rtsp" | "rtsps" | "rtspt" => {}
            other => return Err(UrlError::Scheme(other.to_string())),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(UrlError::NoHost);
        }
        let user = Some(percent_decode(url.username())).filter(|u| !u.is_empty());
        let password = url.password().map(|p| Secret::new(percent_decode(p)));
        // Cannot fail for URLs with a host.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(Self {
            bare: url.to_string(),
            user,
            password,
        })
    }

    /// The URL without credentials, as handed to the RTSP client (credentials go separately).
    pub fn bare(&self) -> &str {
        &self.bare
    }

    /// User name, if the URL had one.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Password, if the URL had one.
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// The URL for logs and APIs: `rtsp://user:***@host/path`.
    pub fn redacted(&self) -> String {
        match (&self.user, &self.password) {
            (None, None) => self.bare.clone(),
            (user, _) => {
                let userinfo = format!("{}:***@", user.as_deref().unwrap_or(""));
                match self.bare.split_once("://") {
                    Some((scheme, rest)) => format!("{scheme}://{userinfo}{rest}"),
                    None => self.bare.clone(),
                }
            }
        }
    }
}

impl fmt::Debug for CameraUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CameraUrl({})", self.redacted())
    }
}

impl fmt::Display for CameraUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Replaces the password of any `scheme://user:password@` inside free text with `***`.
/// A last line of defence for error strings that come from libraries.
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // `'` is allowed in a password (RFC 3986 sub-delims), so it does not end the
        // authority: a quoted URL ('rtsp://u:p@h') still ends at the space after it.
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '/' || c == '"')
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                let user = userinfo.split(':').next().unwrap_or("");
                out.push_str(user);
                if userinfo.contains(':') {
                    out.push_str(":***");
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_redacts_credentials() {
        let u = CameraUrl::parse("rtsp://alice:s3cr%40t@10.0.0.7:8554/cam1?x=1").unwrap();
        assert_eq!(u.bare(), "rtsp://10.0.0.7:8554/cam1?x=1");
        assert_eq!(u.user(), Some("alice"));
        assert_eq!(u.password().unwrap().expose(), "s3cr@t");
        assert_eq!(u.redacted(), "rtsp://alice:***@10.0.0.7:8554/cam1?x=1");
        assert!(!format!("{u:?} {u}").contains("s3cr"));
    }

    #[test]
    fn plain_url_stays_plain() {
        let u = CameraUrl::parse("rtsp://127.0.0.1:8554/cam0").unwrap();
        assert_eq!(u.redacted(), "rtsp://127.0.0.1:8554/cam0");
        assert!(u.password().is_none());
    }

    #[test]
    fn rejects_bad_urls_without_echoing_them() {
        let err = CameraUrl::parse("http://u:pw123@h/x").unwrap_err();
        assert_eq!(err, UrlError::Scheme("http".into()));
        let err = CameraUrl::parse("rtsp//u:pw123@").unwrap_err();
        assert!(!err.to_string().contains("pw123"));
    }

    #[test]
    fn redacts_free_text() {
        let t = redact_text("could not open rtsp://bob:hunter2@cam.local:554/s1 (401)");
        assert_eq!(t, "could not open rtsp://bob:***@cam.local:554/s1 (401)");
        assert_eq!(redact_text("no urls here"), "no urls here");
        assert_eq!(
            redact_text("open 'rtsp://u:it's@h/x' (401)"),
            "open 'rtsp://u:***@h/x' (401)"
        );
        assert_eq!(
            redact_text("rtsp://h/p and rtsp://u:p@h"),
            "rtsp://h/p and rtsp://u:***@h"
        );
    }

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("x1y2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
    }
}
