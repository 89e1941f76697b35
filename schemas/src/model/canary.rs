//! Canary rollouts: the part of a [`super::ModelRollout`] that puts a candidate version on a
//! share of a group's cameras, and the figures workers report about each version while it
//! runs.
//!
//! - [`ModelCanary`] lives inside the rollout record: the candidate version and the exact
//!   cameras that run it (chosen by the coordinator, so every worker agrees without knowing
//!   the group's other cameras). Frames of those cameras are inferred by the candidate, every
//!   other frame by the active version.
//! - [`CanaryReport`] is what one worker measured per version since the canary started: Redis
//!   hash `panoptes:canary:<group>:<since_generation>`, one field per worker. The coordinator
//!   merges the workers' reports ([`ArmStats::merge`]) and judges the two arms.
//! - [`CanaryOutcome`] is kept in the record after a canary ends: what happened and why.
//! - [`ModelShadow`] lives inside the record too: a candidate that infers a sample of frames
//!   beside the active version and publishes to the shadow topic only.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A candidate version running on some of the group's cameras.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelCanary {
    /// The candidate version (same model name as the record).
    pub version: String,
    /// The share of the eligible cameras asked for, in percent (1–99).
    pub percent: u8,
    /// The cameras that run the candidate, sorted.
    pub cameras: Vec<String>,
    /// The record's generation when the canary started; names the report hash.
    pub since_generation: u64,
    /// When it started, Unix milliseconds.
    pub started_ms: u64,
}

/// A candidate inferring a sample of the group's frames beside the active version, its
/// detections published to `panoptes.detections.shadow` only (never to consumers of
/// `panoptes.detections`), its agreement with the active version a metric of each worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelShadow {
    /// The candidate version (same model name as the record).
    pub version: String,
    /// The share of frames it also infers, in percent (1–100), chosen by camera and
    /// sequence number so every worker samples alike.
    pub percent: u8,
    /// The record's generation when the shadow started.
    pub since_generation: u64,
    /// When it started, Unix milliseconds.
    pub started_ms: u64,
}

/// How a canary ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryOutcome {
    /// The candidate version.
    pub version: String,
    /// `promoted` or `rolled_back`.
    pub verdict: String,
    /// Who decided (`coordinator` for the automatic criteria, else the API caller) and why.
    pub reason: String,
    /// When, Unix milliseconds.
    pub at_ms: u64,
}

/// Forward passes of one batch size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PassStats {
    /// Passes run.
    pub count: u64,
    /// Their total time, milliseconds.
    pub total_ms: f64,
}

/// Detections of one class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClassStats {
    /// Detections reported.
    pub count: u64,
    /// Sum of their scores.
    pub score_sum: f64,
}

/// What one version did since the canary started (one arm, on one worker or merged).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ArmStats {
    /// Frames inferred.
    pub frames: u64,
    /// Forward passes by batch size (the key, as a decimal string).
    pub passes: BTreeMap<String, PassStats>,
    /// Detections by class name.
    pub classes: BTreeMap<String, ClassStats>,
}

impl ArmStats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &ArmStats) {
        self.frames += other.frames;
        for (k, p) in &other.passes {
            let e = self.passes.entry(k.clone()).or_default();
            e.count += p.count;
            e.total_ms += p.total_ms;
        }
        for (k, c) in &other.classes {
            let e = self.classes.entry(k.clone()).or_default();
            e.count += c.count;
            e.score_sum += c.score_sum;
        }
    }

    /// Records one forward pass of `batch` frames that took `ms`.
    pub fn pass(&mut self, batch: usize, ms: f64) {
        let e = self.passes.entry(batch.to_string()).or_default();
        e.count += 1;
        e.total_ms += ms;
    }

    /// Records one inferred frame and its detections (class name, score).
    pub fn frame<'a>(&mut self, detections: impl IntoIterator<Item = (&'a str, f32)>) {
        self.frames += 1;
        for (class, score) in detections {
            let e = self.classes.entry(class.to_owned()).or_default();
            e.count += 1;
            e.score_sum += f64::from(score);
        }
    }
}

/// One worker's figures for a canary: hash `panoptes:canary:<group>:<since_generation>`,
/// field = worker id.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CanaryReport {
    /// By version: the active version's arm and the candidate's.
    pub versions: BTreeMap<String, ArmStats>,
    /// Versions this worker refused to load (integrity, load, contract, warm-up), with why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refused: BTreeMap<String, String>,
    /// When it was written, Unix milliseconds.
    pub at_ms: u64,
}

impl CanaryReport {
    /// Decodes a hash field.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }

    /// Encodes for Redis.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a canary report always serializes to JSON")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_merge_and_round_trip() {
        let mut a = ArmStats::default();
        a.pass(2, 10.0);
        a.frame([("car", 0.5), ("car", 0.7)]);
        a.frame([]);
        let mut b = ArmStats::default();
        b.pass(2, 14.0);
        b.pass(1, 3.0);
        b.frame([("person", 0.9)]);
        a.merge(&b);
        assert_eq!(a.frames, 3);
        assert_eq!(a.passes["2"].count, 2);
        assert!((a.passes["2"].total_ms - 24.0).abs() < 1e-9);
        assert_eq!(a.classes["car"].count, 2);
        assert!((a.classes["car"].score_sum - 1.2).abs() < 1e-6);
        assert_eq!(a.classes["person"].count, 1);
        let r = CanaryReport {
            versions: [("2".to_string(), a)].into_iter().collect(),
            refused: BTreeMap::new(),
            at_ms: 7,
        };
        assert_eq!(CanaryReport::from_json(r.to_json().as_bytes()).unwrap(), r);
        assert!(CanaryReport::from_json(br#"{"versions":{},"at_ms":1,"x":2}"#).is_err());
    }
}
