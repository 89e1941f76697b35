//! `[models]` configuration and the promotion gate: a pure decision on a manifest's recorded
//! validation results.
//!
//! Contract: a version may be promoted to a group when its manifest holds at least one
//! [`ValidationResult`] for the gate's device class (and, when `golden_set` is set, for that
//! golden set, whatever its content hash), and **every** such result meets every threshold:
//! `precision >= min_precision`, `recall >= min_recall`, `latency_p99_ms <= max_latency_ms`.
//! The first failure is reported with the measured and the required figure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use panoptes_schemas::model::{ModelManifest, ValidationResult};
use serde::{Deserialize, Serialize};

/// `[models]`: where the repository is and what a version must show to be promoted (the
/// default gate; `[models.groups.<name>]` overrides it per group).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// The model repository directory (`<repository>/<name>/<version>/...`). Without it the
    /// model routes answer 503 and rollouts cannot change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository: Option<PathBuf>,
    /// Device class whose validation results count: `cpu` or `cuda`.
    pub device_class: String,
    /// Only results on this golden set (the name before `@`) count; any when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub golden_set: Option<String>,
    /// Lowest accepted precision, in `[0, 1]`.
    pub min_precision: f64,
    /// Lowest accepted recall, in `[0, 1]`.
    pub min_recall: f64,
    /// Highest accepted forward-pass p99 latency, milliseconds.
    pub max_latency_ms: f64,
    /// Per-group overrides (`[models.groups.<name>]`); fields left out keep the defaults.
    pub groups: BTreeMap<String, GateOverride>,
    /// `[models.canary]`: when the leader promotes or rolls back a canary on its own.
    #[serde(default)]
    pub canary: crate::canary::CanaryCriteria,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        let gate = GateConfig::default();
        Self {
            repository: None,
            device_class: gate.device_class,
            golden_set: gate.golden_set,
            min_precision: gate.min_precision,
            min_recall: gate.min_recall,
            max_latency_ms: gate.max_latency_ms,
            groups: BTreeMap::new(),
            canary: crate::canary::CanaryCriteria::default(),
        }
    }
}

/// The thresholds of the promotion gate of one group.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateConfig {
    /// Device class whose validation results count: `cpu` or `cuda`.
    pub device_class: String,
    /// Only results on this golden set (the name before `@`) count; any when unset.
    pub golden_set: Option<String>,
    /// Lowest accepted precision, in `[0, 1]`.
    pub min_precision: f64,
    /// Lowest accepted recall, in `[0, 1]`.
    pub min_recall: f64,
    /// Highest accepted forward-pass p99 latency, milliseconds.
    pub max_latency_ms: f64,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            device_class: "cpu".into(),
            golden_set: None,
            min_precision: 0.5,
            min_recall: 0.5,
            max_latency_ms: 250.0,
        }
    }
}

/// `[models.groups.<name>]`: what differs from the default gate for one group.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GateOverride {
    /// See [`GateConfig::device_class`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_class: Option<String>,
    /// See [`GateConfig::golden_set`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub golden_set: Option<String>,
    /// See [`GateConfig::min_precision`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_precision: Option<f64>,
    /// See [`GateConfig::min_recall`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_recall: Option<f64>,
    /// See [`GateConfig::max_latency_ms`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_latency_ms: Option<f64>,
}

impl ModelsConfig {
    /// The gate of `group` (its override applied to the default gate).
    pub fn gate_for(&self, group: &str) -> GateConfig {
        let mut gate = GateConfig {
            device_class: self.device_class.clone(),
            golden_set: self.golden_set.clone(),
            min_precision: self.min_precision,
            min_recall: self.min_recall,
            max_latency_ms: self.max_latency_ms,
        };
        if let Some(o) = self.groups.get(group) {
            if let Some(d) = &o.device_class {
                gate.device_class.clone_from(d);
            }
            if o.golden_set.is_some() {
                gate.golden_set.clone_from(&o.golden_set);
            }
            gate.min_precision = o.min_precision.unwrap_or(gate.min_precision);
            gate.min_recall = o.min_recall.unwrap_or(gate.min_recall);
            gate.max_latency_ms = o.max_latency_ms.unwrap_or(gate.max_latency_ms);
        }
        gate
    }

    /// Checks every gate's ranges, the group names and the canary criteria.
    pub fn validate(&self) -> Result<(), String> {
        self.gate_for("").validate("[models]")?;
        self.canary.validate()?;
        for group in self.groups.keys() {
            let ok = !group.is_empty()
                && group
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !ok {
                return Err(format!(
                    "[models.groups] name {group:?}: use letters, digits, '-', '_' and '.'"
                ));
            }
            self.gate_for(group)
                .validate(&format!("[models.groups.{group}]"))?;
        }
        Ok(())
    }
}

/// Why the gate refuses a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No validation result for the gate's device class (and golden set).
    NotValidated(String),
    /// A result misses a threshold.
    BelowThreshold(String),
}

impl Refusal {
    /// The metric label (`not_validated` / `below_threshold`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::NotValidated(_) => "not_validated",
            Self::BelowThreshold(_) => "below_threshold",
        }
    }

    /// The message for the operator.
    pub fn message(&self) -> &str {
        match self {
            Self::NotValidated(m) | Self::BelowThreshold(m) => m,
        }
    }
}

impl GateConfig {
    fn validate(&self, section: &str) -> Result<(), String> {
        if !matches!(self.device_class.as_str(), "cpu" | "cuda") {
            return Err(format!(
                "{section} device_class {:?}: use \"cpu\" or \"cuda\"",
                self.device_class
            ));
        }
        for (k, v) in [
            ("min_precision", self.min_precision),
            ("min_recall", self.min_recall),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("{section} {k} = {v} is outside [0, 1]"));
            }
        }
        if !(self.max_latency_ms.is_finite() && self.max_latency_ms > 0.0) {
            return Err(format!(
                "{section} max_latency_ms = {} must be a positive number",
                self.max_latency_ms
            ));
        }
        Ok(())
    }

    fn counts(&self, r: &ValidationResult) -> bool {
        r.device_class == self.device_class
            && self.golden_set.as_deref().is_none_or(|g| {
                r.golden_set
                    .split_once('@')
                    .map_or(r.golden_set.as_str(), |(n, _)| n)
                    == g
            })
    }

    /// Decides whether `manifest` may be promoted under this gate.
    pub fn evaluate(&self, manifest: &ModelManifest) -> Result<(), Refusal> {
        let model = format!("{}@{}", manifest.name, manifest.version);
        let results: Vec<&ValidationResult> = manifest
            .validation
            .iter()
            .filter(|r| self.counts(r))
            .collect();
        if results.is_empty() {
            let golden = self
                .golden_set
                .as_deref()
                .map(|g| format!(" on golden set {g}"))
                .unwrap_or_default();
            return Err(Refusal::NotValidated(format!(
                "{model} is not validated on device class {}{golden}: run panoptes-model-validate first",
                self.device_class
            )));
        }
        for r in results {
            let on = format!("{model} on {} ({})", r.golden_set, r.device_class);
            if r.precision < self.min_precision {
                return Err(Refusal::BelowThreshold(format!(
                    "{on}: precision {:.3} is below the required {:.3}",
                    r.precision, self.min_precision
                )));
            }
            if r.recall < self.min_recall {
                return Err(Refusal::BelowThreshold(format!(
                    "{on}: recall {:.3} is below the required {:.3}",
                    r.recall, self.min_recall
                )));
            }
            if r.latency_p99_ms > self.max_latency_ms {
                return Err(Refusal::BelowThreshold(format!(
                    "{on}: latency p99 {:.1} ms at batch {} is above the allowed {:.1} ms",
                    r.latency_p99_ms, r.batch, self.max_latency_ms
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use panoptes_schemas::model::{InputFormat, InputSpec, OutputContract};

    use super::*;

    fn manifest(results: Vec<ValidationResult>) -> ModelManifest {
        ModelManifest {
            name: "det".into(),
            version: "2".into(),
            input: InputSpec {
                width: 64,
                height: 64,
                format: InputFormat::Rgb,
                letterbox_fill: 114,
            },
            output: OutputContract::PostNms,
            classes: vec!["a".into()],
            score_threshold: 0.5,
            iou_threshold: 0.5,
            max_detections: 10,
            sha256: Some("a".repeat(64)),
            validation: results,
        }
    }

    fn result(device: &str, golden: &str, p: f64, r: f64, ms: f64) -> ValidationResult {
        ValidationResult {
            device_class: device.into(),
            golden_set: golden.into(),
            frames: 20,
            precision: p,
            recall: r,
            latency_p99_ms: ms,
            batch: 1,
            measured_at_ms: 0,
        }
    }

    #[test]
    fn refusals_name_the_threshold() {
        let gate = GateConfig::default();
        let err = gate.evaluate(&manifest(vec![])).unwrap_err();
        assert_eq!(err.label(), "not_validated");
        assert!(err.message().contains("device class cpu"), "{err:?}");
        let cuda_only = manifest(vec![result("cuda", "g@1", 0.9, 0.9, 5.0)]);
        assert_eq!(
            gate.evaluate(&cuda_only).unwrap_err().label(),
            "not_validated"
        );
        let low = manifest(vec![result("cpu", "g@1", 0.4, 0.9, 5.0)]);
        let err = gate.evaluate(&low).unwrap_err();
        assert_eq!(err.label(), "below_threshold");
        assert!(
            err.message()
                .contains("precision 0.400 is below the required 0.500"),
            "{err:?}"
        );
        let slow = manifest(vec![result("cpu", "g@1", 0.9, 0.9, 300.0)]);
        let err = gate.evaluate(&slow).unwrap_err();
        assert!(err.message().contains("latency p99 300.0 ms"), "{err:?}");
        let good = manifest(vec![result("cpu", "g@1", 0.9, 0.9, 30.0)]);
        assert_eq!(gate.evaluate(&good), Ok(()));
        // Every counted result must pass.
        let mixed = manifest(vec![
            result("cpu", "g@1", 0.9, 0.9, 30.0),
            result("cpu", "h@2", 0.9, 0.1, 30.0),
        ]);
        assert!(
            gate.evaluate(&mixed)
                .unwrap_err()
                .message()
                .contains("recall")
        );
        let only_g = GateConfig {
            golden_set: Some("g".into()),
            ..GateConfig::default()
        };
        assert_eq!(only_g.evaluate(&mixed), Ok(()));
    }

    #[test]
    fn group_overrides_and_validation() {
        let mut cfg = ModelsConfig::default();
        cfg.groups.insert(
            "edge".into(),
            GateOverride {
                min_precision: Some(0.9),
                device_class: Some("cuda".into()),
                ..GateOverride::default()
            },
        );
        let edge = cfg.gate_for("edge");
        assert_eq!((edge.min_precision, edge.min_recall), (0.9, 0.5));
        assert_eq!(edge.device_class, "cuda");
        assert_eq!(cfg.gate_for("other"), GateConfig::default());
        assert!(cfg.validate().is_ok());
        cfg.groups.get_mut("edge").unwrap().max_latency_ms = Some(-1.0);
        assert!(cfg.validate().unwrap_err().contains("[models.groups.edge]"));
        let bad = ModelsConfig {
            device_class: "tpu".into(),
            ..ModelsConfig::default()
        };
        assert!(bad.validate().is_err());
        let parsed: ModelsConfig = serde_json::from_value(serde_json::json!({
            "repository": "/m", "min_precision": 0.7, "groups": {"edge": {"min_recall": 0.8}}
        }))
        .unwrap();
        assert_eq!(parsed.min_precision, 0.7);
        assert_eq!(parsed.gate_for("edge").min_recall, 0.8);
        assert!(serde_json::from_value::<ModelsConfig>(serde_json::json!({"colour": 1})).is_err());
    }
}
