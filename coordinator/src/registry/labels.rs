//! Camera labels: the operator's `key = value` pairs on a camera (`site = "north"`,
//! `lens = "wide"`), and selectors over them (a canary's eligible cameras).
//!
//! Rules (checked when a camera is written, and on a selector): at most [`MAX_LABELS`] per
//! camera; a key is 1–63 characters of `[A-Za-z0-9._/-]` starting with a letter or digit; a
//! value is 0–63 characters of `[A-Za-z0-9._-]`. A selector matches a camera that carries
//! every one of its pairs (an empty selector matches every camera).

use std::collections::BTreeMap;

/// Labels a camera may carry.
pub const MAX_LABELS: usize = 16;

const MAX_LEN: usize = 63;

/// Checks `labels` against the rules above; the error names the first offending pair.
pub fn check(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "{} labels, at most {MAX_LABELS} are allowed",
            labels.len()
        ));
    }
    for (k, v) in labels {
        let key_ok = k.len() <= MAX_LEN
            && k.starts_with(|c: char| c.is_ascii_alphanumeric())
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c));
        if !key_ok {
            return Err(format!(
                "label key {k:?} must be 1–{MAX_LEN} characters of [A-Za-z0-9._/-], starting \
                 with a letter or digit"
            ));
        }
        let value_ok = v.len() <= MAX_LEN
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !value_ok {
            return Err(format!(
                "label {k}: value {v:?} must be 0–{MAX_LEN} characters of [A-Za-z0-9._-]"
            ));
        }
    }
    Ok(())
}

/// Whether `labels` carry every pair of `selector`.
pub fn matches(labels: &BTreeMap<String, String>, selector: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `key=value` as the command line writes a label or a selector pair.
pub fn parse_pair(text: &str) -> Result<(String, String), String> {
    let (k, v) = text
        .split_once('=')
        .ok_or_else(|| format!("label {text:?} is not key=value"))?;
    let pair = BTreeMap::from([(k.to_owned(), v.to_owned())]);
    check(&pair)?;
    Ok((k.to_owned(), v.to_owned()))
}

/// `site=north,lens=wide` (the display form).
pub fn display(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_and_values_are_checked() {
        assert!(
            check(&map(&[
                ("site", "north"),
                ("example.com/lens", "wide-1.2"),
                ("empty", "")
            ]))
            .is_ok()
        );
        assert!(
            check(&map(&[("", "x")]))
                .unwrap_err()
                .contains("label key \"\"")
        );
        assert!(check(&map(&[("-site", "x")])).is_err());
        assert!(
            check(&map(&[("site", "no spaces")]))
                .unwrap_err()
                .contains("value")
        );
        assert!(check(&map(&[("site", &"x".repeat(64))])).is_err());
        let many: BTreeMap<String, String> = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(check(&many).unwrap_err().contains("at most 16"));
    }

    #[test]
    fn a_selector_needs_every_pair() {
        let cam = map(&[("site", "north"), ("lens", "wide")]);
        assert!(matches(&cam, &map(&[])));
        assert!(matches(&cam, &map(&[("site", "north")])));
        assert!(!matches(&cam, &map(&[("site", "north"), ("lens", "tele")])));
        assert!(!matches(&cam, &map(&[("floor", "1")])));
    }

    #[test]
    fn pairs_parse_and_display() {
        assert_eq!(
            parse_pair("site=north"),
            Ok(("site".into(), "north".into()))
        );
        assert_eq!(parse_pair("k="), Ok(("k".into(), String::new())));
        assert!(parse_pair("site").is_err());
        assert!(parse_pair("si te=x").is_err());
        assert_eq!(display(&map(&[("b", "2"), ("a", "1")])), "a=1,b=2");
    }
}
