//! What a coordinator remembers so that a Redis which lost writes (restarted without
//! persistence, or a replica promoted before it had every write) cannot make grant epochs,
//! the fencing token or the registry version go backwards, nor lose the camera registry.
//!
//! [`HighWater`] holds the highest fencing token this process has seen (as leader, or as a
//! follower from each campaign's answer), the highest epoch of every item's epoch counter
//! it has seen (from the assignment records it read, its own grants, and the epochs members
//! report they held, `records::HELD_FIELD`), and a copy of the camera registry in its stored
//! form (sealed passwords stay sealed) with its version. Elections and grants take
//! `max(seen) + 1` as their floor (`scripts::leader_campaign`, `scripts::grant_above`), which
//! re-seeds the counters of an emptied Redis; the registry copy restores a lost registry
//! (`scripts::restore_registry`) at a higher version.
//!
//! Memory alone survives a Redis restart but not a coordinator restart; with
//! `[recovery] state_file` the marks are also kept in a local JSON file, written atomically
//! (temporary file, fsync, rename) whenever they change, and read at start. An unreadable
//! state file stops the coordinator with a clear message (starting from nothing could
//! reissue epochs); a missing one is an empty start. Pure logic apart from
//! [`HighWater::load`] and [`HighWater::save`].

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The camera registry as stored in Redis: id → stored record JSON, and its version.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryCopy {
    /// `panoptes:cameras:version` when copied.
    pub version: u64,
    /// `panoptes:cameras`, field by field.
    pub cameras: BTreeMap<String, String>,
}

/// The state file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    /// Format version ([`FORMAT`]).
    format: u32,
    token: u64,
    epochs: BTreeMap<String, u64>,
    registry: Option<RegistryCopy>,
}

/// The state file format written.
const FORMAT: u32 = 1;

/// Why the state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The file exists but cannot be read or parsed (fatal: fix or remove it).
    #[error(
        "recovery state file {path}: {reason} (fix it, or remove it to start without remembered epochs)"
    )]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// Writing it failed (retryable: the next change writes again).
    #[error("recovery state file {path}: cannot write: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The high-water marks (see the module doc).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HighWater {
    state: StateFile,
    dirty: bool,
}

impl HighWater {
    /// Reads `path` (a missing file is an empty start).
    pub fn load(path: &Path) -> Result<Self, RecoveryError> {
        let bad = |reason: String| RecoveryError::Unreadable {
            path: path.to_path_buf(),
            reason,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(bad(e.to_string())),
        };
        let state: StateFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if state.format != FORMAT {
            return Err(bad(format!(
                "format {} is not the one this version reads ({FORMAT})",
                state.format
            )));
        }
        Ok(Self {
            state,
            dirty: false,
        })
    }

    /// Writes the marks to `path` if they changed since the last save: a temporary file
    /// next to it, fsync, rename (a crash leaves the old or the new file, never half of one).
    /// Returns whether it wrote.
    pub fn save(&mut self, path: &Path) -> Result<bool, RecoveryError> {
        if !self.dirty {
            return Ok(false);
        }
        let werr = |source| RecoveryError::Write {
            path: path.to_path_buf(),
            source,
        };
        let mut state = self.state.clone();
        state.format = FORMAT;
        let json = serde_json::to_vec_pretty(&state).expect("plain data serializes");
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(werr)?;
        f.write_all(&json).map_err(werr)?;
        f.sync_all().map_err(werr)?;
        std::fs::rename(&tmp, path).map_err(werr)?;
        self.dirty = false;
        Ok(true)
    }

    /// Notes a fencing token seen in Redis or won.
    pub fn observe_token(&mut self, token: u64) {
        if token > self.state.token {
            self.state.token = token;
            self.dirty = true;
        }
    }

    /// The highest fencing token seen (0: none).
    pub fn token(&self) -> u64 {
        self.state.token
    }

    /// The least token the next election may hand out: above every token seen (0: no floor).
    pub fn token_floor(&self) -> u64 {
        floor(self.state.token)
    }

    /// Notes that the item whose epoch counter is `epoch_key` was at `epoch`.
    pub fn observe_epoch(&mut self, epoch_key: &str, epoch: u64) {
        if epoch == 0 {
            return;
        }
        match self.state.epochs.get_mut(epoch_key) {
            Some(e) if *e >= epoch => {}
            Some(e) => {
                *e = epoch;
                self.dirty = true;
            }
            None => {
                self.state.epochs.insert(epoch_key.to_string(), epoch);
                self.dirty = true;
            }
        }
    }

    /// The highest epoch seen for `epoch_key` (0: none).
    pub fn epoch(&self, epoch_key: &str) -> u64 {
        self.state.epochs.get(epoch_key).copied().unwrap_or(0)
    }

    /// The least epoch the next grant of the item may hand out (0: no floor).
    pub fn epoch_floor(&self, epoch_key: &str) -> u64 {
        floor(self.epoch(epoch_key))
    }

    /// Notes the registry as read from Redis (`version` > 0: it has been written at least
    /// once, so even an empty registry is the operator's intent).
    pub fn observe_registry(&mut self, version: u64, cameras: &BTreeMap<String, String>) {
        if version == 0 {
            return;
        }
        let same = self
            .state
            .registry
            .as_ref()
            .is_some_and(|r| r.version == version && r.cameras == *cameras);
        if !same {
            self.state.registry = Some(RegistryCopy {
                version,
                cameras: cameras.clone(),
            });
            self.dirty = true;
        }
    }

    /// The registry copy, if one was ever seen.
    pub fn registry(&self) -> Option<&RegistryCopy> {
        self.state.registry.as_ref()
    }
}

/// `seen + 1`, or 0 (no floor) when nothing was seen.
fn floor(seen: u64) -> u64 {
    if seen == 0 { 0 } else { seen + 1 }
}

/// What the leader found when it read an empty registry: restore it from the copy, or
/// leave it (never written, or nothing to restore from).
pub fn registry_to_restore(
    stored_version: u64,
    stored_cameras: usize,
    copy: Option<&RegistryCopy>,
) -> Option<&RegistryCopy> {
    if stored_version != 0 || stored_cameras != 0 {
        return None;
    }
    copy.filter(|c| c.version > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_are_above_everything_seen() {
        let mut h = HighWater::default();
        assert_eq!((h.token_floor(), h.epoch_floor("k")), (0, 0));
        h.observe_token(5);
        h.observe_token(3);
        assert_eq!(h.token_floor(), 6);
        h.observe_epoch("k", 7);
        h.observe_epoch("k", 2);
        h.observe_epoch("j", 0);
        assert_eq!((h.epoch_floor("k"), h.epoch_floor("j")), (8, 0));
    }

    #[test]
    fn the_registry_is_restored_only_when_redis_lost_it() {
        let cams: BTreeMap<String, String> = [("a".to_string(), "{}".to_string())].into();
        let mut h = HighWater::default();
        h.observe_registry(0, &BTreeMap::new());
        assert_eq!(h.registry(), None, "a never-written registry is not copied");
        h.observe_registry(4, &cams);
        let copy = h.registry();
        assert_eq!(registry_to_restore(0, 0, copy).map(|c| c.version), Some(4));
        assert_eq!(
            registry_to_restore(5, 0, copy),
            None,
            "emptied by an operator"
        );
        assert_eq!(registry_to_restore(0, 1, copy), None);
        assert_eq!(
            registry_to_restore(0, 0, None),
            None,
            "nothing to restore from"
        );
    }

    #[test]
    fn the_state_file_round_trips_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(HighWater::load(&path).unwrap(), HighWater::default());
        let mut h = HighWater::default();
        h.observe_token(9);
        h.observe_epoch("panoptes:camepoch:a", 4);
        h.observe_registry(2, &[("a".to_string(), "{}".to_string())].into());
        assert!(h.save(&path).unwrap());
        assert!(
            !h.save(&path).unwrap(),
            "unchanged marks are not written again"
        );
        let back = HighWater::load(&path).unwrap();
        assert_eq!(back.token(), 9);
        assert_eq!(back.epoch("panoptes:camepoch:a"), 4);
        assert_eq!(back.registry().map(|r| r.version), Some(2));
        std::fs::write(&path, "{\"format\": 1, \"token\": \"x\"}").unwrap();
        let err = HighWater::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("state.json") && err.contains("remove it"),
            "{err}"
        );
        std::fs::write(
            &path,
            "{\"format\": 2, \"token\": 1, \"epochs\": {}, \"registry\": null}",
        )
        .unwrap();
        assert!(
            HighWater::load(&path)
                .unwrap_err()
                .to_string()
                .contains("format 2")
        );
    }
}
