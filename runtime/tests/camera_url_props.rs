//! Property-based tests of camera URL handling (`panoptes_runtime::redact`): parsing any
//! string never panics, and no error, redacted form, `Debug` or `Display` of a camera URL
//! ever shows the password it carried; `redact_text` hides the password of any URL inside
//! free text.

use panoptes_runtime::redact::{CameraUrl, redact_text};
use proptest::prelude::*;

/// A password: long enough not to occur by chance in the rest of a generated URL.
fn password() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!$&'()*+,;=~_.%-]{8,24}".prop_filter("has a letter", |p| {
        p.chars().any(|c| c.is_ascii_uppercase())
    })
}

/// Everything a camera URL can show, together.
fn shown(u: &CameraUrl) -> String {
    format!("{} {u} {u:?} {}", u.redacted(), u.bare())
}

proptest! {
    #[test]
    fn arbitrary_strings_never_panic(s in ".{0,120}") {
        match CameraUrl::parse(&s) {
            Ok(u) => {
                let text = shown(&u);
                if let Some(p) = u.password() {
                    // Only where the password also is outside the userinfo (rare with
                    // arbitrary strings) could it show up legitimately.
                    let rest = s.replacen(p.expose(), "", 1);
                    if p.expose().len() >= 4 && !rest.contains(p.expose()) {
                        prop_assert!(!text.contains(p.expose()), "{}", text);
                    }
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        let _ = redact_text(&s);
    }

    /// Credential-bearing URLs of any scheme, host, port and path: parsed or refused, the
    /// password shows nowhere.
    #[test]
    fn passwords_never_show(
        scheme in prop_oneof![
            Just("rtsp".to_string()),
            Just("rtsps".to_string()),
            Just("http".to_string()),
            "[a-z][a-z0-9+.-]{0,8}",
            ".{0,6}",
        ],
        sep in prop_oneof![4 => Just("://"), 1 => Just(":/"), 1 => Just("//"), 1 => Just(":")],
        user in "[a-z0-9._~-]{0,10}",
        pass in password(),
        host in prop_oneof![
            "[a-z0-9.-]{0,20}",
            "[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}",
            "\\[[0-9a-f:]{2,20}\\]",
            ".{0,10}",
        ],
        port in prop::option::of(prop_oneof![0u32..70_000, Just(554)]),
        path in "(/[^ ]{0,16}){0,3}",
    ) {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let url = format!("{scheme}{sep}{user}:{pass}@{host}{port}{path}");
        // Skip inputs where the password's text also occurs elsewhere.
        let elsewhere = format!("{scheme}{sep}{user}:@{host}{port}{path}");
        prop_assume!(!elsewhere.contains(&pass));
        match CameraUrl::parse(&url) {
            Ok(u) => {
                let text = shown(&u);
                prop_assert!(!text.contains(&pass), "{} shows {}", text, pass);
                if let Some(p) = u.password() {
                    prop_assert!(!p.expose().is_empty());
                }
            }
            Err(e) => {
                let text = format!("{e} {e:?}");
                prop_assert!(!text.contains(&pass), "{}", text);
            }
        }
        let redacted = redact_text(&format!("failed to open {url} (401)"));
        if sep == "://" && !user.is_empty() {
            prop_assert!(!redacted.contains(&pass), "{}", redacted);
        }
    }
}
