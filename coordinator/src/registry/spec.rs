//! What a camera looks like to the operator: the spec written (API body, `cameras.yaml`
//! entry), its validation into a stored [`CameraRecord`] against the configured [`Limits`],
//! and the redacted [`CameraView`] shown back.

use std::collections::BTreeMap;

use panoptes_coordinator_client::CameraRecord;
use panoptes_coordinator_client::sealed::{Keyring, join_password};
use panoptes_runtime::redact::{CameraUrl, redact_text};
use serde::{Deserialize, Serialize};

use super::error::RegistryError;

/// Default sampled frames per second of a camera.
pub const DEFAULT_FPS: u32 = 5;
/// Accepted frames per second.
pub const FPS_RANGE: std::ops::RangeInclusive<u32> = 1..=60;
/// Default analytic width.
pub const DEFAULT_WIDTH: u32 = 640;
/// Default analytic height.
pub const DEFAULT_HEIGHT: u32 = 360;
/// Accepted analytic widths.
pub const WIDTH_RANGE: std::ops::RangeInclusive<u32> = 32..=3840;
/// Accepted degradation priorities: 0 is capped first under overload, 9 last.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<u8> = 0..=9;
/// Accepted analytic heights.
pub const HEIGHT_RANGE: std::ops::RangeInclusive<u32> = 32..=2160;
/// What a redacted password looks like; a URL sent back with it keeps the stored password.
const REDACTED_PASSWORD: &str = "***";
/// The limits a camera is validated against, and how its password is sealed (from the
/// coordinator's configuration).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Partitions of each region's frames topic: camera partitions are in `[0, n)`.
    pub frames_partitions: i32,
    /// Known region names.
    pub regions: Vec<String>,
    /// The camera keyring: passwords are sealed with its primary key when written and
    /// opened when planning. `None`: a camera URL with a password is refused.
    pub camera_keys: Option<Keyring>,
}

/// A camera as the operator writes it (API body, `cameras.yaml` entry). Omitted fields take
/// their defaults; an omitted partition keeps the camera's current one, or is allocated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraSpec {
    /// Camera id (`[A-Za-z0-9._-]`, 1–64 characters, not starting with `.` or `-`).
    #[serde(default)]
    pub id: String,
    /// `rtsp://` or `rtsps://` URL, credentials included.
    #[serde(default)]
    pub url: String,
    /// Home region: one of the coordinator's regions (the first one when omitted).
    #[serde(default)]
    pub region: String,
    /// Worker group, `default` when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Sampled frames per second, 1–60 (5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<u32>,
    /// Analytic width (640).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Analytic height (360).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Frames partition; allocated (smallest free) when omitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<i32>,
    /// Degradation priority 0–9 (5): under overload, lower priorities are capped first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Lowest rate the coordinator may cap the camera to under overload, 1..=fps (1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_fps: Option<u32>,
    /// Labels (`site: north`), for selecting cameras ([`super::labels`]); none when omitted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A camera as the API shows it: the URL redacted (`rtsp://user:***@host/path`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CameraView {
    /// Camera id.
    pub id: String,
    /// The URL without its password.
    pub url: String,
    /// Home region.
    pub region: String,
    /// Worker group.
    pub group: String,
    /// Frames partition.
    pub partition: i32,
    /// Sampled frames per second.
    pub fps: u32,
    /// Analytic width.
    pub width: u32,
    /// Analytic height.
    pub height: u32,
    /// Degradation priority (0 capped first, 9 last).
    #[serde(default = "panoptes_coordinator_client::records::default_priority")]
    pub priority: u8,
    /// Lowest rate under overload.
    #[serde(default = "panoptes_coordinator_client::records::default_min_fps")]
    pub min_fps: u32,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl From<&CameraRecord> for CameraView {
    /// From a stored (sealed) or opened record: either way the password shows as `***`.
    fn from(r: &CameraRecord) -> Self {
        let url = match &r.password {
            Some(_) => join_password(&r.url, REDACTED_PASSWORD).unwrap_or_else(|| r.url.clone()),
            None => r.url.clone(),
        };
        Self {
            id: r.id.clone(),
            url: redact_url(&url),
            region: r.region.clone(),
            group: r.group.clone(),
            partition: r.partition,
            fps: r.fps,
            width: r.width,
            height: r.height,
            priority: r.priority,
            min_fps: r.min_fps,
            labels: r.labels.clone(),
        }
    }
}

/// The URL for display: credentials replaced, whatever the stored text looks like.
pub fn redact_url(url: &str) -> String {
    match CameraUrl::parse(url) {
        Ok(u) => u.redacted(),
        Err(_) => redact_text(url),
    }
}

fn check_name(what: &str, v: &str) -> Result<(), RegistryError> {
    panoptes_schemas::validate_camera_id(v).map_err(|e| {
        // The refused value is quoted: an operator who pasted a camera URL into the id must
        // not get its password echoed back (or into the audit trail and logs).
        RegistryError::Invalid(panoptes_runtime::redact::redact_text(&format!(
            "{what}: {}",
            e.to_string().replace("camera_id", what)
        )))
    })
}

/// Validates a spec into a record; `existing` is the stored record of the same id, if any
/// (its partition is kept when the spec names none; its password is kept when the spec's
/// URL carries the redacted `***`). The partition is left at -1 when it must be allocated.
pub fn validate(
    spec: &CameraSpec,
    existing: Option<&CameraRecord>,
    limits: &Limits,
) -> Result<CameraRecord, RegistryError> {
    check_name("camera id", &spec.id)?;
    let id = &spec.id;
    let invalid = |m: String| RegistryError::Invalid(format!("camera {id}: {m}"));
    let (url, password) = checked_url(spec, existing).map_err(invalid)?;
    let region = checked_region(spec, limits).map_err(invalid)?;
    let group = spec
        .group
        .clone()
        .unwrap_or_else(panoptes_coordinator_client::records::default_group);
    check_name("group", &group).map_err(|e| invalid(e.to_string()))?;
    let fps = spec.fps.unwrap_or(DEFAULT_FPS);
    if !FPS_RANGE.contains(&fps) {
        return Err(invalid(format!(
            "fps {fps} is out of range ({}..={})",
            FPS_RANGE.start(),
            FPS_RANGE.end()
        )));
    }
    let (priority, min_fps) = checked_degradation(spec, fps).map_err(invalid)?;
    super::labels::check(&spec.labels).map_err(invalid)?;
    let width = spec.width.unwrap_or(DEFAULT_WIDTH);
    let height = spec.height.unwrap_or(DEFAULT_HEIGHT);
    if !WIDTH_RANGE.contains(&width) || !HEIGHT_RANGE.contains(&height) {
        return Err(invalid(format!(
            "size {width}x{height} is out of range (width {}..={}, height {}..={})",
            WIDTH_RANGE.start(),
            WIDTH_RANGE.end(),
            HEIGHT_RANGE.start(),
            HEIGHT_RANGE.end()
        )));
    }
    let partition = match spec.partition {
        Some(p) if !(0..limits.frames_partitions).contains(&p) => {
            return Err(invalid(format!(
                "partition {p} is out of range (0..{})",
                limits.frames_partitions
            )));
        }
        Some(p) => p,
        None => existing.map_or(-1, |e| e.partition),
    };
    Ok(CameraRecord {
        id: id.clone(),
        url,
        password,
        region,
        group,
        partition,
        fps,
        width,
        height,
        priority,
        min_fps,
        labels: spec.labels.clone(),
    })
}

/// The camera's degradation priority and minimum rate: priority in [`PRIORITY_RANGE`]
/// (default 5), minimum rate in `1..=fps` (default 1, or `fps` when that is lower).
fn checked_degradation(spec: &CameraSpec, fps: u32) -> Result<(u8, u32), String> {
    use panoptes_coordinator_client::records::{default_min_fps, default_priority};
    let priority = spec.priority.unwrap_or_else(default_priority);
    if !PRIORITY_RANGE.contains(&priority) {
        return Err(format!(
            "priority {priority} is out of range ({}..={}; 0 is capped first under overload)",
            PRIORITY_RANGE.start(),
            PRIORITY_RANGE.end()
        ));
    }
    let min_fps = spec.min_fps.unwrap_or_else(|| default_min_fps().min(fps));
    if min_fps == 0 || min_fps > fps {
        return Err(format!(
            "min_fps {min_fps} is out of range (1..={fps}: at least 1 and at most the camera's fps)"
        ));
    }
    Ok((priority, min_fps))
}

/// The URL to store, and the sealed password it keeps: an `rtsp://` or `rtsps://` URL; one
/// read back from the API (password `***`) keeps the stored password when it is the same
/// URL (opened in the URL, or still sealed when the keyring cannot open it).
fn checked_url(
    spec: &CameraSpec,
    existing: Option<&CameraRecord>,
) -> Result<(String, Option<String>), String> {
    if spec.url.is_empty() {
        return Err("url is required".into());
    }
    let parsed = CameraUrl::parse(&spec.url).map_err(|e| e.to_string())?;
    let scheme = parsed.bare().split("://").next().unwrap_or_default();
    if !matches!(scheme, "rtsp" | "rtsps") {
        return Err(format!(
            "camera URL scheme {scheme:?} is not supported (use rtsp:// or rtsps://)"
        ));
    }
    let redacted = parsed
        .password()
        .is_some_and(|p| p.expose() == REDACTED_PASSWORD);
    if !redacted {
        return Ok((spec.url.clone(), None));
    }
    match existing.and_then(|e| CameraUrl::parse(&e.url).ok().map(|u| (e, u))) {
        Some((e, old)) if old.bare() == parsed.bare() && old.user() == parsed.user() => {
            Ok((e.url.clone(), e.password.clone()))
        }
        _ => Err(format!(
            "url has a redacted password ({REDACTED_PASSWORD}); give the real one"
        )),
    }
}

/// The camera's region: the one given, or the first configured (the default region); it
/// must be configured.
fn checked_region(spec: &CameraSpec, limits: &Limits) -> Result<String, String> {
    let region = if spec.region.is_empty() {
        limits
            .regions
            .first()
            .cloned()
            .ok_or_else(|| "region is required (none is configured)".to_string())?
    } else {
        spec.region.clone()
    };
    if !limits.regions.contains(&region) {
        return Err(format!(
            "unknown region {region:?} (known: {})",
            limits.regions.join(", ")
        ));
    }
    Ok(region)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            frames_partitions: 4,
            regions: vec!["eu".into()],
            camera_keys: None,
        }
    }

    fn spec(fps: Option<u32>, priority: Option<u8>, min_fps: Option<u32>) -> CameraSpec {
        CameraSpec {
            id: "c".into(),
            url: "rtsp://cam/c".into(),
            fps,
            priority,
            min_fps,
            ..Default::default()
        }
    }

    #[test]
    fn priority_and_min_fps_default_and_are_checked() {
        let r = validate(&spec(None, None, None), None, &limits()).unwrap();
        assert_eq!((r.fps, r.priority, r.min_fps), (DEFAULT_FPS, 5, 1));
        let r = validate(&spec(Some(10), Some(9), Some(4)), None, &limits()).unwrap();
        assert_eq!((r.priority, r.min_fps), (9, 4));
        let v = CameraView::from(&r);
        assert_eq!((v.priority, v.min_fps), (9, 4));
        let err = |s: CameraSpec| validate(&s, None, &limits()).unwrap_err().to_string();
        assert!(err(spec(None, Some(10), None)).contains("priority 10 is out of range"));
        assert!(err(spec(Some(5), None, Some(6))).contains("min_fps 6 is out of range (1..=5"));
        assert!(err(spec(Some(5), None, Some(0))).contains("min_fps 0"));
    }

    #[test]
    fn records_without_the_fields_read_with_defaults() {
        let json = r#"{"id":"c","url":"rtsp://cam/c","region":"eu","partition":0,"fps":5,"width":640,"height":360}"#;
        let r: CameraRecord = serde_json::from_str(json).unwrap();
        assert_eq!((r.priority, r.min_fps), (5, 1));
        assert!(r.labels.is_empty());
    }

    #[test]
    fn labels_are_checked_stored_and_shown() {
        let mut s = spec(None, None, None);
        s.labels.insert("site".into(), "north".into());
        let r = validate(&s, None, &limits()).unwrap();
        assert_eq!(r.labels, s.labels);
        assert_eq!(CameraView::from(&r).labels, s.labels);
        s.labels.insert("bad key".into(), "x".into());
        let e = validate(&s, None, &limits()).unwrap_err().to_string();
        assert!(e.contains("camera c: label key \"bad key\""), "{e}");
    }
}
