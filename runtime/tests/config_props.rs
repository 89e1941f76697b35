//! Property-based tests of configuration loading (`panoptes_runtime::config`): any text,
//! and any prefix of a file holding a secret (a camera URL with a password, a token), loads
//! or fails with a message that never shows the secret (TOML syntax errors quote the source
//! line; those quotes are dropped).

use panoptes_runtime::config::from_toml_str;
use proptest::prelude::*;
use serde::Deserialize;

/// A section shaped like the nodes' (typed, `deny_unknown_fields`, defaults).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(dead_code)]
struct Demo {
    name: String,
    fps: u32,
    #[serde(with = "humantime_serde")]
    timeout: std::time::Duration,
    cameras: Vec<Camera>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(dead_code)]
struct Camera {
    id: String,
    url: String,
}

proptest! {
    #[test]
    fn any_text_loads_or_fails_clearly(text in ".{0,200}") {
        if let Err(e) = from_toml_str::<Demo>(&text) {
            prop_assert!(e.to_string().len() > "invalid configuration: ".len());
        }
    }

    /// A file cut anywhere (a half-written or damaged file), or with a stray character
    /// after the secret: the error never quotes the password.
    #[test]
    fn errors_never_show_a_secret(
        password in "[A-Za-z0-9_~.-]{10,20}",
        cut in any::<prop::sample::Index>(),
        tail in prop_oneof![Just(""), Just("\""), Just("\"\nfps = -1\n"), Just("\" x\n")],
    ) {
        let full = format!(
            "name = \"n\"\nfps = 5\n[[cameras]]\nid = \"a\"\nurl = \"rtsp://viewer:{password}@h/s1{tail}\n"
        );
        let mut at = cut.index(full.len() + 1);
        while !full.is_char_boundary(at) {
            at -= 1;
        }
        if let Err(e) = from_toml_str::<Demo>(&full[..at]) {
            let text = e.to_string();
            prop_assert!(!text.contains(&password), "{}", text);
            prop_assert!(text.contains("line") || text.contains("key"), "{}", text);
        }
    }
}
