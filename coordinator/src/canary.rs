//! Canary rollouts by share of cameras: the pure decisions (which cameras run the candidate,
//! whether the candidate is good enough) and their configuration, `[models.canary]`.
//!
//! Contract:
//! - [`choose_cameras`]: of `n >= 2` eligible cameras, `ceil(n * percent / 100)` clamped to
//!   `1..=n-1`, taken in the order of a stable 64-bit FNV-1a hash of the camera id (then the
//!   id), returned sorted. The same set and share always give the same cameras, and a larger
//!   share gives a superset.
//! - [`merge_reports`]: the workers' [`CanaryReport`]s (hash field = worker id) summed per arm
//!   (baseline = the active version, candidate = the canary version); unparseable fields are
//!   skipped and counted; the first worker (by id) that refused the candidate is named.
//! - [`judge`]: a worker refused the candidate → roll back at once. Below `min_frames` on
//!   either arm → hold. Otherwise every criterion is checked (latency at equal batch sizes,
//!   class rates, score shift; see [`CanaryCriteria`]); any failure → roll back. All pass,
//!   latency decided (`min_passes`) and `observe` elapsed → promote. Anything still
//!   undecided at `max_duration` → roll back (fail-safe). Reasons name the criterion, the
//!   measured and the required figures.
//! - [`end`]: the record after a canary ends (promoted: the candidate becomes active and the
//!   old active `previous`; rolled back: active and previous unchanged), `generation + 1`.
//!
//! No I/O here: the operator API (`crate::api::models`) and the leader's round
//! ([`leader`]) read Redis and write the record ([`record`]).

pub mod leader;
pub mod record;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use panoptes_schemas::model::{ArmStats, CanaryOutcome, CanaryReport, ModelCanary, ModelRollout};
use serde::{Deserialize, Serialize};

/// `[models.canary]`: when the coordinator ends a canary on its own.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CanaryCriteria {
    /// Frames each arm (merged across workers) must have before any verdict.
    pub min_frames: u64,
    /// A canary that passes every criterion is promoted once it ran this long.
    #[serde(with = "humantime_serde")]
    pub observe: Duration,
    /// A canary still undecided after this long is rolled back (fail-safe).
    #[serde(with = "humantime_serde")]
    pub max_duration: Duration,
    /// Highest accepted candidate/baseline forward-pass time at equal batch sizes.
    pub max_latency_ratio: f64,
    /// Candidate forward passes (at batch sizes the baseline also ran) needed to decide
    /// latency.
    pub min_passes: u64,
    /// Detections per frame from which a class counts in the rate comparison.
    pub min_class_rate: f64,
    /// Lowest accepted candidate/baseline detections-per-frame ratio of a counted class.
    pub min_class_rate_ratio: f64,
    /// Highest accepted candidate/baseline detections-per-frame ratio of a counted class.
    pub max_class_rate_ratio: f64,
    /// Detections of a class, in each arm, from which its mean score is compared.
    pub min_class_detections: u64,
    /// Largest accepted difference of a class's mean score between the arms.
    pub max_score_shift: f64,
}

impl Default for CanaryCriteria {
    fn default() -> Self {
        Self {
            min_frames: 50,
            observe: Duration::from_secs(60),
            max_duration: Duration::from_secs(600),
            max_latency_ratio: 1.5,
            min_passes: 10,
            min_class_rate: 0.05,
            min_class_rate_ratio: 0.5,
            max_class_rate_ratio: 2.0,
            min_class_detections: 20,
            max_score_shift: 0.15,
        }
    }
}

impl CanaryCriteria {
    /// Checks ranges and orders; messages name the `[models.canary]` key.
    pub fn validate(&self) -> Result<(), String> {
        let s = "[models.canary]";
        for (k, v) in [
            ("max_latency_ratio", self.max_latency_ratio),
            ("min_class_rate", self.min_class_rate),
            ("min_class_rate_ratio", self.min_class_rate_ratio),
            ("max_class_rate_ratio", self.max_class_rate_ratio),
            ("max_score_shift", self.max_score_shift),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{s} {k} = {v} must be a positive number"));
            }
        }
        if self.min_class_rate_ratio > self.max_class_rate_ratio {
            return Err(format!(
                "{s} min_class_rate_ratio = {} is above max_class_rate_ratio = {}",
                self.min_class_rate_ratio, self.max_class_rate_ratio
            ));
        }
        if self.max_score_shift > 1.0 {
            return Err(format!(
                "{s} max_score_shift = {} is above 1 (scores are in [0, 1])",
                self.max_score_shift
            ));
        }
        if self.min_frames == 0 || self.min_passes == 0 {
            return Err(format!("{s} min_frames and min_passes must be at least 1"));
        }
        if self.max_duration.is_zero() {
            return Err(format!("{s} max_duration must be positive"));
        }
        if self.observe > self.max_duration {
            return Err(format!(
                "{s} observe = {} is longer than max_duration = {}: a passing canary could never be promoted",
                secs(self.observe),
                secs(self.max_duration)
            ));
        }
        Ok(())
    }
}

/// Why the candidate cameras cannot be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChooseError {
    /// A canary needs a baseline: at least one camera must stay on the active version.
    #[error("a canary needs at least 2 cameras in the group, there are {0}")]
    TooFewCameras(usize),
    /// The share is not within 1–99 %.
    #[error("canary share {0} % is not within 1–99")]
    BadPercent(u8),
}

/// 64-bit FNV-1a of `s`: stable across processes, versions and platforms.
pub fn fnv1a64(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The cameras (sorted) that run the candidate: `percent` % of `eligible` (see the module
/// doc). Duplicates in `eligible` count once.
pub fn choose_cameras(eligible: &[String], percent: u8) -> Result<Vec<String>, ChooseError> {
    if !(1..=99).contains(&percent) {
        return Err(ChooseError::BadPercent(percent));
    }
    let mut order: Vec<(u64, &String)> = eligible.iter().map(|c| (fnv1a64(c), c)).collect();
    order.sort();
    order.dedup_by(|a, b| a.1 == b.1);
    let n = order.len();
    if n < 2 {
        return Err(ChooseError::TooFewCameras(n));
    }
    let count = (n * usize::from(percent)).div_ceil(100).clamp(1, n - 1);
    let mut chosen: Vec<String> = order[..count].iter().map(|(_, c)| (*c).clone()).collect();
    chosen.sort();
    Ok(chosen)
}

/// What the coordinator decides about a running canary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep running; why.
    Hold(String),
    /// Make the candidate active; why.
    Promote(String),
    /// End the canary, the active version stays; why.
    Rollback(String),
}

impl Verdict {
    /// `hold`, `promote` or `rollback`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Hold(_) => "hold",
            Self::Promote(_) => "promote",
            Self::Rollback(_) => "rollback",
        }
    }

    /// The reason, for people.
    pub fn reason(&self) -> &str {
        match self {
            Self::Hold(r) | Self::Promote(r) | Self::Rollback(r) => r,
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs())
}

/// Judges a canary from the merged arms (see the module doc). `refused`: why a worker
/// refused the candidate, if one did; `elapsed`: how long it has run.
pub fn judge(
    c: &CanaryCriteria,
    baseline: &ArmStats,
    candidate: &ArmStats,
    refused: Option<&str>,
    elapsed: Duration,
) -> Verdict {
    if let Some(why) = refused {
        return Verdict::Rollback(format!("a worker refused the candidate: {why}"));
    }
    let late = elapsed >= c.max_duration;
    if baseline.frames < c.min_frames || candidate.frames < c.min_frames {
        let what = format!(
            "{} frames on the baseline, {} on the candidate ({} needed on each)",
            baseline.frames, candidate.frames, c.min_frames
        );
        return if late {
            Verdict::Rollback(format!("undecided after {}: {what}", secs(elapsed)))
        } else {
            Verdict::Hold(format!("waiting for frames: {what}"))
        };
    }
    let latency = latency_ratio(baseline, candidate);
    if let Some((ratio, passes)) = latency
        && passes >= c.min_passes
        && ratio > c.max_latency_ratio
    {
        return Verdict::Rollback(format!(
            "latency {ratio:.2}x the baseline's at equal batch sizes (max {:.2}x)",
            c.max_latency_ratio
        ));
    }
    if let Some(fail) =
        class_rates(c, baseline, candidate).or_else(|| score_shift(c, baseline, candidate))
    {
        return Verdict::Rollback(fail);
    }
    let decided = latency.filter(|(_, passes)| *passes >= c.min_passes);
    let Some((ratio, _)) = decided else {
        let passes = latency.map_or(0, |(_, p)| p);
        let what = format!(
            "latency undecided: {passes} candidate passes at batch sizes both arms ran ({} needed)",
            c.min_passes
        );
        return if late {
            Verdict::Rollback(format!("undecided after {}: {what}", secs(elapsed)))
        } else {
            Verdict::Hold(what)
        };
    };
    if elapsed < c.observe {
        return Verdict::Hold(format!(
            "every criterion passes so far (latency {ratio:.2}x); observing for {} more",
            secs(c.observe - elapsed)
        ));
    }
    Verdict::Promote(format!(
        "every criterion passed for {} over {} candidate and {} baseline frames (latency {ratio:.2}x)",
        secs(elapsed),
        candidate.frames,
        baseline.frames
    ))
}

/// Candidate time over what the baseline would have taken for the same passes, at the batch
/// sizes both arms ran, and the candidate's passes there; `None` when no size is common.
fn latency_ratio(baseline: &ArmStats, candidate: &ArmStats) -> Option<(f64, u64)> {
    let (mut cand_ms, mut base_ms, mut passes) = (0.0, 0.0, 0);
    for (batch, p) in &candidate.passes {
        let Some(b) = baseline.passes.get(batch).filter(|b| b.count > 0) else {
            continue;
        };
        if p.count == 0 {
            continue;
        }
        cand_ms += p.total_ms;
        base_ms += p.count as f64 * (b.total_ms / b.count as f64);
        passes += p.count;
    }
    if passes == 0 {
        return None;
    }
    let ratio = if base_ms > 0.0 {
        cand_ms / base_ms
    } else if cand_ms > 0.0 {
        f64::INFINITY
    } else {
        1.0
    };
    Some((ratio, passes))
}

fn rate(arm: &ArmStats, class: &str) -> f64 {
    let n = arm.classes.get(class).map_or(0, |s| s.count);
    n as f64 / arm.frames.max(1) as f64
}

/// The first class whose detections per frame differ too much: every class the baseline
/// reports at `min_class_rate` or more must keep its rate within the ratios; a class the
/// candidate reports at that rate but the baseline does not is held to the upper ratio only.
fn class_rates(c: &CanaryCriteria, baseline: &ArmStats, candidate: &ArmStats) -> Option<String> {
    let classes: std::collections::BTreeSet<&String> = baseline
        .classes
        .keys()
        .chain(candidate.classes.keys())
        .collect();
    for class in classes {
        let (b, k) = (rate(baseline, class), rate(candidate, class));
        let ratio = if b > 0.0 { k / b } else { f64::INFINITY };
        let failed = if b >= c.min_class_rate {
            if ratio < c.min_class_rate_ratio {
                Some(format!("min ratio {:.2}", c.min_class_rate_ratio))
            } else if ratio > c.max_class_rate_ratio {
                Some(format!("max ratio {:.2}", c.max_class_rate_ratio))
            } else {
                None
            }
        } else if k >= c.min_class_rate && ratio > c.max_class_rate_ratio {
            Some(format!("max ratio {:.2}", c.max_class_rate_ratio))
        } else {
            None
        };
        if let Some(bound) = failed {
            return Some(format!(
                "class {class}: {k:.2} per frame vs {b:.2} on the baseline ({bound})"
            ));
        }
    }
    None
}

/// The first class (with `min_class_detections` in both arms) whose mean score moved more
/// than `max_score_shift`.
fn score_shift(c: &CanaryCriteria, baseline: &ArmStats, candidate: &ArmStats) -> Option<String> {
    for (class, b) in &baseline.classes {
        let Some(k) = candidate.classes.get(class) else {
            continue;
        };
        if b.count < c.min_class_detections || k.count < c.min_class_detections {
            continue;
        }
        let (mb, mk) = (b.score_sum / b.count as f64, k.score_sum / k.count as f64);
        let shift = (mk - mb).abs();
        if shift > c.max_score_shift {
            return Some(format!(
                "class {class}: mean score {mk:.2} vs {mb:.2} on the baseline (shift {shift:.2}, max {:.2})",
                c.max_score_shift
            ));
        }
    }
    None
}

/// The workers' reports merged per arm.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    /// The active version's figures.
    pub baseline: ArmStats,
    /// The candidate's figures.
    pub candidate: ArmStats,
    /// `worker <id>: <why>` for the first worker (by id) that refused the candidate.
    pub refused: Option<String>,
    /// Reports merged.
    pub workers: usize,
    /// Hash fields skipped because they do not parse.
    pub unreadable: usize,
}

/// Merges a report hash (`HGETALL`: worker id → [`CanaryReport`] JSON) for the arms `active`
/// and `candidate`.
pub fn merge_reports(raw: &BTreeMap<String, String>, active: &str, candidate: &str) -> Merged {
    let mut m = Merged::default();
    for (worker, json) in raw {
        let Ok(report) = CanaryReport::from_json(json.as_bytes()) else {
            m.unreadable += 1;
            continue;
        };
        m.workers += 1;
        if let Some(a) = report.versions.get(active) {
            m.baseline.merge(a);
        }
        if let Some(k) = report.versions.get(candidate) {
            m.candidate.merge(k);
        }
        if m.refused.is_none()
            && let Some(why) = report.refused.get(candidate)
        {
            m.refused = Some(format!("worker {worker}: {why}"));
        }
    }
    m
}

/// The record after `canary`, the running canary of `cur`, ends: `promote` makes the
/// candidate active (the old active becomes `previous`), else active and previous stay;
/// `reason` goes into `last_canary`.
pub fn end(
    cur: &ModelRollout,
    canary: &ModelCanary,
    promote: bool,
    reason: String,
    now_ms: u64,
) -> ModelRollout {
    let mut next = cur.clone();
    if promote {
        next.previous = Some(cur.active.clone());
        next.active = canary.version.clone();
    }
    next.canary = None;
    next.last_canary = Some(CanaryOutcome {
        version: canary.version.clone(),
        verdict: if promote { "promoted" } else { "rolled_back" }.into(),
        reason,
        at_ms: now_ms,
    });
    next.generation = cur.generation + 1;
    next.updated_ms = now_ms;
    next
}
