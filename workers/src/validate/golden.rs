//! Golden sets: JPEG frames with exact ground truth, the yardstick of a validation run.
//!
//! A golden set is a directory holding `index.json` ([`GoldenIndex`]) and the JPEG files it
//! names (plain file names, no folders). Boxes are in frame pixels, `x2`/`y2` exclusive, and
//! classes are names (matched against the model manifest's `classes`). The set's identity is
//! [`GoldenSet::id`] = `<name>@<first 12 hex digits of SHA-256(index.json bytes)>`, so a result
//! names exactly the truth it was measured against: editing a box or a file name changes the
//! id. (The JPEG bytes are not hashed; a file listed in the index is expected not to change.)

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ValidateError;
use super::matching::LabelledBox;

/// The index file's name inside a golden-set directory.
pub const INDEX_FILE: &str = "index.json";

/// `index.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenIndex {
    /// Name of the set (`[A-Za-z0-9._-]`, the part before `@` in its id).
    pub name: String,
    /// The frames, in evaluation order.
    pub frames: Vec<GoldenFrame>,
}

/// One frame of a golden set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenFrame {
    /// JPEG file name in the set's directory.
    pub file: String,
    /// Frame width in pixels (the JPEG must have it).
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Every object in the frame.
    pub objects: Vec<GoldenObject>,
}

/// One ground-truth object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenObject {
    /// Class name.
    pub class: String,
    /// Left edge (inclusive), pixels.
    pub x1: f32,
    /// Top edge (inclusive).
    pub y1: f32,
    /// Right edge (exclusive).
    pub x2: f32,
    /// Bottom edge (exclusive).
    pub y2: f32,
}

impl GoldenObject {
    /// As a box for matching.
    pub fn to_box(&self) -> LabelledBox {
        LabelledBox {
            class: self.class.clone(),
            bbox: [self.x1, self.y1, self.x2, self.y2],
            score: 1.0,
        }
    }
}

/// A golden set opened from its directory.
#[derive(Debug, Clone)]
pub struct GoldenSet {
    /// The directory.
    pub dir: PathBuf,
    /// The parsed index.
    pub index: GoldenIndex,
    /// `<name>@<12 hex>`.
    pub id: String,
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// `<name>@<first 12 hex digits of SHA-256(index_bytes)>`.
pub fn golden_id(name: &str, index_bytes: &[u8]) -> String {
    let digest = Sha256::digest(index_bytes);
    format!("{name}@{}", &hex::encode(digest)[..12])
}

impl GoldenIndex {
    /// Checks names, sizes and boxes.
    pub fn validate(&self) -> Result<(), String> {
        if !valid_name(&self.name) {
            return Err(format!(
                "name {:?} is not [A-Za-z0-9._-]{{1,64}} (not starting with '.')",
                self.name
            ));
        }
        if self.frames.is_empty() {
            return Err("no frames".into());
        }
        for f in &self.frames {
            if !valid_name(&f.file) {
                return Err(format!("frame file {:?} is not a plain file name", f.file));
            }
            if f.width == 0 || f.height == 0 {
                return Err(format!("{}: size {}x{}", f.file, f.width, f.height));
            }
            for o in &f.objects {
                let inside = 0.0 <= o.x1
                    && o.x1 < o.x2
                    && o.x2 <= f.width as f32
                    && 0.0 <= o.y1
                    && o.y1 < o.y2
                    && o.y2 <= f.height as f32;
                if !inside || o.class.trim().is_empty() {
                    return Err(format!("{}: bad object {o:?}", f.file));
                }
            }
        }
        Ok(())
    }

    /// Writes `index.json` (pretty JSON) into `dir`; returns the set's id.
    pub fn write(&self, dir: &Path) -> Result<String, ValidateError> {
        let bytes = serde_json::to_vec_pretty(self).map_err(|e| ValidateError::Golden {
            dir: dir.to_owned(),
            problem: e.to_string(),
        })?;
        let path = dir.join(INDEX_FILE);
        std::fs::write(&path, &bytes).map_err(|source| ValidateError::Io { path, source })?;
        Ok(golden_id(&self.name, &bytes))
    }

    /// Number of objects per class name.
    pub fn class_counts(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for o in self.frames.iter().flat_map(|f| &f.objects) {
            *out.entry(o.class.clone()).or_default() += 1;
        }
        out
    }
}

impl GoldenSet {
    /// Reads and checks `dir/index.json`.
    pub fn open(dir: &Path) -> Result<Self, ValidateError> {
        let path = dir.join(INDEX_FILE);
        let bytes = std::fs::read(&path).map_err(|source| ValidateError::Io {
            path: path.clone(),
            source,
        })?;
        let golden = |problem: String| ValidateError::Golden {
            dir: dir.to_owned(),
            problem,
        };
        let index: GoldenIndex =
            serde_json::from_slice(&bytes).map_err(|e| golden(e.to_string()))?;
        index.validate().map_err(golden)?;
        Ok(Self {
            dir: dir.to_owned(),
            id: golden_id(&index.name, &bytes),
            index,
        })
    }

    /// The JPEG bytes of frame `i`.
    pub fn read_frame(&self, i: usize) -> Result<Vec<u8>, ValidateError> {
        let path = self.dir.join(&self.index.frames[i].file);
        std::fs::read(&path).map_err(|source| ValidateError::Io { path, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> GoldenIndex {
        GoldenIndex {
            name: "scenes".into(),
            frames: vec![GoldenFrame {
                file: "000000.jpg".into(),
                width: 64,
                height: 32,
                objects: vec![GoldenObject {
                    class: "car".into(),
                    x1: 2.0,
                    y1: 2.0,
                    x2: 10.0,
                    y2: 8.0,
                }],
            }],
        }
    }

    #[test]
    fn id_is_name_and_index_hash() {
        let id = golden_id("scenes", b"{}");
        // sha256("{}") = 44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a
        assert_eq!(id, "scenes@44136fa355b3");
    }

    #[test]
    fn write_open_round_trip_and_id_tracks_content() {
        let dir = tempfile::tempdir().unwrap();
        let id = index().write(dir.path()).unwrap();
        let set = GoldenSet::open(dir.path()).unwrap();
        assert_eq!(set.id, id);
        assert_eq!(set.index, index());
        let mut changed = index();
        changed.frames[0].objects[0].x2 = 11.0;
        assert_ne!(changed.write(dir.path()).unwrap(), id);
    }

    #[test]
    fn validation_refuses_bad_sets() {
        assert!(index().validate().is_ok());
        let mut i = index();
        i.frames[0].file = "../x.jpg".into();
        assert!(i.validate().is_err());
        let mut i = index();
        i.frames[0].objects[0].x2 = 65.0;
        assert!(i.validate().is_err());
        let mut i = index();
        i.name = ".hidden".into();
        assert!(i.validate().is_err());
        let mut i = index();
        i.frames.clear();
        assert!(i.validate().is_err());
        let json = serde_json::to_value(index()).unwrap();
        let mut extra = json;
        extra["frames"][0]["extra"] = 1.into();
        assert!(serde_json::from_value::<GoldenIndex>(extra).is_err());
    }
}
