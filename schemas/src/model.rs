//! Model manifests, validation results and rollout records: the model lifecycle's data.
//!
//! A model is a TorchScript file plus the JSON [`ModelManifest`] that says what it expects and
//! what it returns. Inside a model repository (`<repository>/<name>/<version>/{model.pt,
//! manifest.json}`) the manifest also carries the SHA-256 of the TorchScript file and the
//! [`ValidationResult`]s measured against golden sets. [`ModelRollout`] is the record, kept
//! in Redis under `panoptes:rollout:<group>`, that says which version a worker group runs.
//!
//! Everything here is pure: parsing and checking values. Reading model files, hashing and
//! loading TorchScript live in the worker and the coordinator client.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod canary;

pub use canary::{
    ArmStats, CanaryOutcome, CanaryReport, ClassStats, ModelCanary, ModelShadow, PassStats,
};

/// Longest model name or version, in characters.
pub const MAX_MODEL_NAME_LEN: usize = 64;

/// Pattern of a model name or version (also a directory name in a model repository).
pub const MODEL_NAME_PATTERN: &str = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$";

/// Why a manifest, validation result or model output breaks its rules.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelSpecError {
    /// The manifest's (or a record's) values are unusable.
    #[error("manifest of model {model} is invalid: {problem}")]
    Invalid {
        /// Model name from the manifest.
        model: String,
        /// What is wrong.
        problem: String,
    },
    /// A model output does not have the shape the manifest's contract promises.
    #[error(
        "model {model}: output shape {actual:?} contradicts the manifest's `{contract}` contract (expected {expected})"
    )]
    OutputShape {
        /// Model name from the manifest.
        model: String,
        /// The contract named in the manifest (`post_nms` or `yolo_raw`).
        contract: &'static str,
        /// The expected shape, in words, e.g. `[B, 84, N]`.
        expected: String,
        /// The shape the model produced.
        actual: Vec<i64>,
    },
}

/// Checks a model name or version: `[A-Za-z0-9._-]{1,64}`, not starting with `.` (so neither
/// `.`, `..` nor a hidden directory). `what` names the value in the message.
pub fn validate_model_name(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if value.chars().count() > MAX_MODEL_NAME_LEN {
        return Err(format!(
            "{what} is longer than {MAX_MODEL_NAME_LEN} characters"
        ));
    }
    if value.starts_with('.') {
        return Err(format!("{what} {value:?} starts with `.`"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{what} {value:?} contains {c:?}; only letters, digits, `.`, `_` and `-` are allowed"
        ));
    }
    Ok(())
}

/// Whether `value` is 64 lowercase hex digits (a SHA-256 as this project writes it).
pub fn is_sha256_hex(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Pixel layout of a model's input tensor (only RGB is defined).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    /// Channels R, G, B in that order, values in `[0, 1]`.
    Rgb,
}

/// The input a model expects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Input width in pixels.
    pub width: u32,
    /// Input height in pixels.
    pub height: u32,
    /// Channel layout.
    pub format: InputFormat,
    /// Gray level (0..=255) of the letterbox padding.
    pub letterbox_fill: u8,
}

/// What a model's output tensor means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputContract {
    /// `[B, N, 6]` rows `x1, y1, x2, y2, score, class` in input pixels, already filtered and
    /// de-duplicated by the model; rows with score 0 are padding.
    PostNms,
    /// `[B, 4 + C, N]`: per candidate `cx, cy, w, h` in input pixels then `C` class scores
    /// in `[0, 1]`; the worker applies the threshold and class-aware NMS.
    YoloRaw,
}

impl OutputContract {
    /// The manifest spelling (`post_nms` / `yolo_raw`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PostNms => "post_nms",
            Self::YoloRaw => "yolo_raw",
        }
    }
}

/// One measurement of a model version against a golden set on one device class.
///
/// Raw figures only: whether they are good enough is decided by the promotion gate
/// (coordinator configuration) when the version is promoted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidationResult {
    /// Device kind the figures were measured on: `cpu` or `cuda` (a kind, not an index).
    pub device_class: String,
    /// `<golden set name>@<first 12 hex digits of sha256(index.json)>`.
    pub golden_set: String,
    /// Images evaluated.
    pub frames: u64,
    /// Share of detections that match a labelled box (IoU >= 0.5, same class, score >= the
    /// manifest's threshold), in `[0, 1]`.
    pub precision: f64,
    /// Share of labelled boxes matched by a detection, in `[0, 1]`.
    pub recall: f64,
    /// 99th percentile of the forward pass at `batch` on that device class, milliseconds.
    pub latency_p99_ms: f64,
    /// Batch size of the latency measurement.
    pub batch: u32,
    /// When it was measured, Unix milliseconds.
    pub measured_at_ms: u64,
}

impl ValidationResult {
    /// Checks ranges: fractions in `[0, 1]`, a finite non-negative latency, a batch >= 1,
    /// non-empty device class and golden set.
    pub fn validate(&self) -> Result<(), String> {
        if self.device_class.trim().is_empty() {
            return Err("validation `device_class` is empty".into());
        }
        if self.golden_set.trim().is_empty() {
            return Err("validation `golden_set` is empty".into());
        }
        for (field, value) in [("precision", self.precision), ("recall", self.recall)] {
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("validation `{field}` {value} outside [0, 1]"));
            }
        }
        if !self.latency_p99_ms.is_finite() || self.latency_p99_ms < 0.0 {
            return Err(format!(
                "validation `latency_p99_ms` {} is not a finite non-negative number",
                self.latency_p99_ms
            ));
        }
        if self.batch == 0 {
            return Err("validation `batch` is 0".into());
        }
        Ok(())
    }
}

/// The JSON manifest that accompanies every TorchScript model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// Model name, e.g. `"reference-detector"`.
    pub name: String,
    /// Model version, e.g. `"1.0.0"`.
    pub version: String,
    /// The input the model expects.
    pub input: InputSpec,
    /// The output contract.
    pub output: OutputContract,
    /// Class names by class id.
    pub classes: Vec<String>,
    /// Detections scoring below this are dropped.
    pub score_threshold: f32,
    /// IoU above which NMS suppresses the lower-scoring box of the same class.
    pub iou_threshold: f32,
    /// At most this many detections per image are reported.
    pub max_detections: usize,
    /// Lowercase hex SHA-256 of the TorchScript file. Required inside a model repository,
    /// where it is checked before every load; optional for a single-file model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Measurements against golden sets, at most one per (device class, golden set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation: Vec<ValidationResult>,
}

impl ModelManifest {
    /// Parses a manifest from JSON and validates it.
    pub fn from_json(text: &str) -> Result<Self, ModelSpecError> {
        let manifest: Self = serde_json::from_str(text).map_err(|e| ModelSpecError::Invalid {
            model: "?".into(),
            problem: e.to_string(),
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Pretty JSON with a trailing newline, as manifest files are written.
    pub fn to_json_pretty(&self) -> String {
        let mut text =
            serde_json::to_string_pretty(self).expect("a manifest always serializes to JSON");
        text.push('\n');
        text
    }

    /// Checks the values (sizes, thresholds, class list, hash, validation results).
    pub fn validate(&self) -> Result<(), ModelSpecError> {
        self.check().map_err(|problem| ModelSpecError::Invalid {
            model: self.name.clone(),
            problem,
        })
    }

    fn check(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("`name` is empty".into());
        }
        if self.version.trim().is_empty() {
            return Err("`version` is empty".into());
        }
        let (w, h) = (self.input.width, self.input.height);
        if !(8..=8192).contains(&w) || !(8..=8192).contains(&h) {
            return Err(format!("input size {w}x{h} outside 8..=8192 pixels"));
        }
        if self.classes.is_empty() {
            return Err("`classes` is empty".into());
        }
        if let Some(i) = self.classes.iter().position(|c| c.trim().is_empty()) {
            return Err(format!("class {i} has an empty name"));
        }
        if !(0.0..=1.0).contains(&self.score_threshold) {
            return Err(format!(
                "score_threshold {} outside [0, 1]",
                self.score_threshold
            ));
        }
        if !(0.0..=1.0).contains(&self.iou_threshold) || self.iou_threshold == 0.0 {
            return Err(format!(
                "iou_threshold {} outside (0, 1]",
                self.iou_threshold
            ));
        }
        if self.max_detections == 0 {
            return Err("max_detections is 0".into());
        }
        if let Some(sha) = &self.sha256
            && !is_sha256_hex(sha)
        {
            return Err(format!("sha256 {sha:?} is not 64 lowercase hex digits"));
        }
        self.validation
            .iter()
            .try_for_each(ValidationResult::validate)
    }

    /// The validation result for a device class and golden set, if recorded.
    pub fn validation_for(&self, device_class: &str) -> impl Iterator<Item = &ValidationResult> {
        self.validation
            .iter()
            .filter(move |v| v.device_class == device_class)
    }

    /// Replaces the result with the same (device class, golden set), or appends it.
    pub fn record_validation(&mut self, result: ValidationResult) {
        match self
            .validation
            .iter_mut()
            .find(|v| v.device_class == result.device_class && v.golden_set == result.golden_set)
        {
            Some(slot) => *slot = result,
            None => self.validation.push(result),
        }
    }

    /// The expected input shape for a batch of `batch` images: `[batch, 3, height, width]`.
    pub fn input_shape(&self, batch: usize) -> [i64; 4] {
        [
            batch as i64,
            3,
            i64::from(self.input.height),
            i64::from(self.input.width),
        ]
    }

    /// Checks an output shape against the contract; `batch` is the input batch size.
    pub fn check_output_shape(&self, shape: &[i64], batch: i64) -> Result<(), ModelSpecError> {
        let (ok, expected) = match self.output {
            OutputContract::PostNms => (
                shape.len() == 3 && shape[0] == batch && shape[1] >= 1 && shape[2] == 6,
                format!("[{batch}, N, 6] with N >= 1"),
            ),
            OutputContract::YoloRaw => {
                let rows = 4 + self.classes.len() as i64;
                (
                    shape.len() == 3 && shape[0] == batch && shape[1] == rows && shape[2] >= 1,
                    format!(
                        "[{batch}, {rows}, N] = [B, 4 + {} classes, N]",
                        self.classes.len()
                    ),
                )
            }
        };
        if ok {
            Ok(())
        } else {
            Err(ModelSpecError::OutputShape {
                model: self.name.clone(),
                contract: self.output.as_str(),
                expected,
                actual: shape.to_vec(),
            })
        }
    }
}

/// Which model version a worker group runs: Redis `panoptes:rollout:<group>` (string, JSON).
///
/// Written by the coordinator's operator API only (one SET, then a PUBLISH on
/// `panoptes:notify:rollout:<group>`); read by the workers of that group. Every change adds
/// one to `generation`. Blue-green: `promote` makes a version `active` and keeps the old one
/// as `previous`; `rollback` swaps the two. Canary: `canary` puts a candidate on some of the
/// group's cameras until the coordinator (or the operator) promotes it or rolls it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRollout {
    /// Model name in the repository.
    pub model: String,
    /// The version every partition of the group runs.
    pub active: String,
    /// What `rollback` returns to.
    #[serde(default)]
    pub previous: Option<String>,
    /// +1 per change, starting at 1.
    pub generation: u64,
    /// When it last changed, Unix milliseconds.
    pub updated_ms: u64,
    /// A candidate running on some cameras, while a canary is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<ModelCanary>,
    /// How the last canary ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_canary: Option<CanaryOutcome>,
    /// A candidate inferring a sample of frames for comparison only, while a shadow runs
    /// (never together with a canary).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ModelShadow>,
}

impl ModelRollout {
    /// Checks names and versions against [`validate_model_name`] and `generation >= 1`.
    pub fn validate(&self) -> Result<(), String> {
        validate_model_name("model", &self.model)?;
        validate_model_name("active version", &self.active)?;
        if let Some(previous) = &self.previous {
            validate_model_name("previous version", previous)?;
        }
        if self.generation == 0 {
            return Err("generation is 0".into());
        }
        if let Some(c) = &self.canary {
            validate_model_name("canary version", &c.version)?;
            if c.version == self.active {
                return Err(format!("canary version {} is the active one", c.version));
            }
            if !(1..=99).contains(&c.percent) {
                return Err(format!("canary share {} % is not within 1–99", c.percent));
            }
            if c.cameras.is_empty() {
                return Err("a canary names no camera".into());
            }
            for cam in &c.cameras {
                crate::validate_camera_id(cam).map_err(|e| e.to_string())?;
            }
        }
        if let Some(s) = &self.shadow {
            validate_model_name("shadow version", &s.version)?;
            if s.version == self.active {
                return Err(format!("shadow version {} is the active one", s.version));
            }
            if !(1..=100).contains(&s.percent) {
                return Err(format!("shadow sample {} % is not within 1–100", s.percent));
            }
            if self.canary.is_some() {
                return Err("a canary and a shadow cannot run together".into());
            }
        }
        Ok(())
    }

    /// Decodes the Redis value and validates it.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let rollout: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        rollout.validate()?;
        Ok(rollout)
    }

    /// Encodes for Redis.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a rollout always serializes to JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn manifest(output: OutputContract) -> ModelManifest {
        ModelManifest {
            name: "m".into(),
            version: "1".into(),
            input: InputSpec {
                width: 64,
                height: 32,
                format: InputFormat::Rgb,
                letterbox_fill: 114,
            },
            output,
            classes: vec!["a".into(), "b".into()],
            score_threshold: 0.25,
            iou_threshold: 0.45,
            max_detections: 100,
            sha256: None,
            validation: Vec::new(),
        }
    }

    fn result(device: &str, golden: &str, precision: f64) -> ValidationResult {
        ValidationResult {
            device_class: device.into(),
            golden_set: golden.into(),
            frames: 10,
            precision,
            recall: 0.5,
            latency_p99_ms: 12.0,
            batch: 1,
            measured_at_ms: 1,
        }
    }

    #[test]
    fn output_shape_contracts() {
        let m = manifest(OutputContract::YoloRaw);
        assert!(m.check_output_shape(&[2, 6, 100], 2).is_ok());
        let err = m.check_output_shape(&[2, 84, 100], 2).unwrap_err();
        assert!(err.to_string().contains("[2, 6, N]"), "{err}");
        let m = manifest(OutputContract::PostNms);
        assert!(m.check_output_shape(&[1, 10, 6], 1).is_ok());
        assert!(m.check_output_shape(&[1, 6, 10], 1).is_err());
        assert!(m.check_output_shape(&[2, 10, 6], 1).is_err());
    }

    #[test]
    fn old_manifests_parse_and_new_fields_are_omitted_when_empty() {
        let m = manifest(OutputContract::PostNms);
        let json = serde_json::to_value(&m).unwrap();
        assert!(json.get("sha256").is_none() && json.get("validation").is_none());
        assert_eq!(ModelManifest::from_json(&json.to_string()).unwrap(), m);
    }

    #[test]
    fn manifest_rejects_unknown_fields_and_bad_values() {
        let json = serde_json::to_value(manifest(OutputContract::PostNms)).unwrap();
        let mut extra = json.clone();
        extra["colour"] = "blue".into();
        assert!(serde_json::from_value::<ModelManifest>(extra).is_err());
        let mut bad = json;
        bad["output"] = "boxes".into();
        assert!(serde_json::from_value::<ModelManifest>(bad).is_err());
        let mut m = manifest(OutputContract::PostNms);
        m.score_threshold = 2.0;
        assert!(matches!(m.validate(), Err(ModelSpecError::Invalid { .. })));
        m = manifest(OutputContract::PostNms);
        m.classes.clear();
        assert!(m.validate().is_err());
        m = manifest(OutputContract::PostNms);
        m.sha256 = Some("ABC".into());
        assert!(m.validate().unwrap_err().to_string().contains("sha256"));
        m.sha256 = Some("a".repeat(64));
        m.validation.push(result("cpu", "g@1", 1.5));
        assert!(m.validate().unwrap_err().to_string().contains("precision"));
    }

    #[test]
    fn record_validation_replaces_same_device_and_golden_set() {
        let mut m = manifest(OutputContract::PostNms);
        m.record_validation(result("cpu", "g@1", 0.5));
        m.record_validation(result("cuda", "g@1", 0.6));
        m.record_validation(result("cpu", "g@1", 0.7));
        m.record_validation(result("cpu", "g@2", 0.8));
        let cpu: Vec<f64> = m.validation_for("cpu").map(|v| v.precision).collect();
        assert_eq!(cpu, [0.7, 0.8]);
        assert_eq!(m.validation.len(), 3);
    }

    #[test]
    fn model_names() {
        for good in ["yolov8n", "1.0.0", "a_b-c.d", &"x".repeat(64)] {
            assert!(validate_model_name("name", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            ".hidden",
            "a/b",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(validate_model_name("name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn rollout_round_trip_and_rules() {
        let r = ModelRollout {
            model: "det".into(),
            active: "2".into(),
            previous: Some("1".into()),
            generation: 2,
            updated_ms: 5,
            canary: None,
            last_canary: None,
            shadow: None,
        };
        assert_eq!(ModelRollout::from_json(r.to_json().as_bytes()).unwrap(), r);
        let mut sh = r.clone();
        sh.shadow = Some(ModelShadow {
            version: "3".into(),
            percent: 100,
            since_generation: 3,
            started_ms: 9,
        });
        assert_eq!(
            ModelRollout::from_json(sh.to_json().as_bytes()).unwrap(),
            sh
        );
        for (percent, version) in [(0, "3"), (101, "3"), (50, "2")] {
            let mut bad = sh.clone();
            let k = bad.shadow.as_mut().unwrap();
            (k.percent, k.version) = (percent, version.into());
            assert!(
                ModelRollout::from_json(bad.to_json().as_bytes()).is_err(),
                "{bad:?}"
            );
        }
        let mut c = r.clone();
        c.canary = Some(ModelCanary {
            version: "3".into(),
            percent: 25,
            cameras: vec!["cam-1".into()],
            since_generation: 3,
            started_ms: 9,
        });
        assert_eq!(ModelRollout::from_json(c.to_json().as_bytes()).unwrap(), c);
        let mut both = c.clone();
        both.shadow = sh.shadow.clone();
        assert!(ModelRollout::from_json(both.to_json().as_bytes()).is_err());
        for (percent, cameras, version) in [
            (0, "cam-1", "3"),
            (25, "", "3"),
            (25, "cam 1", "3"),
            (25, "cam-1", "2"),
        ] {
            let mut bad = c.clone();
            let k = bad.canary.as_mut().unwrap();
            k.percent = percent;
            k.cameras = if cameras.is_empty() {
                vec![]
            } else {
                vec![cameras.into()]
            };
            k.version = version.into();
            assert!(
                ModelRollout::from_json(bad.to_json().as_bytes()).is_err(),
                "{bad:?}"
            );
        }
        let mut bad = r.clone();
        bad.active = "../1".into();
        assert!(ModelRollout::from_json(bad.to_json().as_bytes()).is_err());
        assert!(
            ModelRollout::from_json(
                br#"{"model":"d","active":"1","generation":1,"updated_ms":0,"x":1}"#
            )
            .is_err()
        );
    }
}
