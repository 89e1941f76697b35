//! Helpers shared by the container tests (`deploy.rs`, `compose.rs`).
// Each test binary compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod images;

/// The host path a resolved compose service mounts at `target` (short syntax, as
/// docker-compose 1.29 prints it, or long syntax, as `docker compose` v2 does).
pub fn compose_volume_source(svc: &serde_yaml::Value, target: &str) -> Option<String> {
    svc["volumes"].as_sequence()?.iter().find_map(|v| match v {
        serde_yaml::Value::String(s) => {
            let mut parts = s.split(':');
            let (src, dst) = (parts.next()?, parts.next()?);
            (dst == target).then(|| src.to_string())
        }
        m => (m["target"].as_str() == Some(target))
            .then(|| m["source"].as_str().map(str::to_string))
            .flatten(),
    })
}
