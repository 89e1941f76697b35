//! `POST /v1/rollouts/{group}/canary` and the canary part of `GET /v1/rollouts/{group}`.
//!
//! Contract:
//! - Body `{model, version, percent, cameras?, labels?}` (unknown fields: 400; a share
//!   outside 1–99, a malformed camera id or label: 422). The version passes the same checks as a promote (known
//!   group, integrity, the group's gate; same status codes), counted by result in
//!   `panoptes_coordinator_model_canaries_total{result}` with the promotion labels.
//! - The group must run a version of the same model (409 "no active version of X to compare
//!   with: promote one first") other than the candidate (409). A running canary answers 409,
//!   unless it has the same version and share (200, `changed: false`); so does a running
//!   shadow (409: the two are exclusive, a worker holds at most two models).
//! - Eligible cameras: the registry's cameras of the group (`group` defaults to `default`),
//!   restricted to `cameras` when given (422 naming those not in the group) and to those
//!   carrying every pair of `labels` when given ([`crate::registry::labels`]); at least two
//!   (409). [`crate::canary::choose_cameras`] picks the share; the record gets
//!   `canary = {version, percent, cameras, since_generation: generation + 1, started_ms}`
//!   at `generation + 1`, through the shared compare-and-set, audited as `model.canary`.
//! - While a canary runs, `GET /v1/rollouts/{group}` adds `canary`: the merged arms of the
//!   workers' reports, the verdict the leader would reach now and its reason, the age.

use std::collections::BTreeMap;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use panoptes_coordinator_client::keys;
use panoptes_schemas::model::{ArmStats, ModelCanary, ModelRollout};
use redis::Connection;
use serde::{Deserialize, Serialize};

use super::{Labeled, admit, labeled, write};
use crate::api::auth::Caller;
use crate::api::common::{ApiError, ApiResult, Shared, parse_body, redis_call};
use crate::canary::{CanaryCriteria, ChooseError, choose_cameras, judge, merge_reports};
use crate::registry::RegistryError;

/// `POST /v1/rollouts/{group}/canary` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryRequest {
    /// Model name (the one the group runs).
    pub model: String,
    /// The candidate version.
    pub version: String,
    /// Share of the eligible cameras, 1–99 %.
    pub percent: u8,
    /// Only these cameras of the group are eligible (all of the group's when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cameras: Option<Vec<String>>,
    /// Only cameras carrying every one of these labels are eligible.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A running canary as `GET /v1/rollouts/{group}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CanaryView {
    /// The candidate version.
    pub version: String,
    /// The share asked for.
    pub percent: u8,
    /// The cameras running the candidate.
    pub cameras: Vec<String>,
    /// Seconds since it started (this coordinator's wall clock).
    pub elapsed_s: f64,
    /// What the leader would decide now: `hold`, `promote` or `rollback`.
    pub verdict: String,
    /// Why.
    pub reason: String,
    /// Worker reports merged.
    pub workers: usize,
    /// Report fields that did not parse.
    pub unreadable: usize,
    /// The first worker that refused the candidate, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// The active version's merged figures.
    pub baseline: ArmStats,
    /// The candidate's merged figures.
    pub candidate: ArmStats,
}

/// The canary view of `rollout` (`None` without a running canary): reads its report hash.
pub(super) fn view(
    c: &mut Connection,
    criteria: &CanaryCriteria,
    group: &str,
    rollout: Option<&ModelRollout>,
) -> Result<Option<CanaryView>, RegistryError> {
    let Some((r, k)) = rollout.and_then(|r| r.canary.as_ref().map(|k| (r, k))) else {
        return Ok(None);
    };
    let raw: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg(keys::canary_report(group, k.since_generation))
        .query(c)?;
    let m = merge_reports(&raw, &r.active, &k.version);
    let elapsed_ms = panoptes_coordinator_client::now_ms().saturating_sub(k.started_ms);
    let elapsed = std::time::Duration::from_millis(elapsed_ms);
    let verdict = judge(
        criteria,
        &m.baseline,
        &m.candidate,
        m.refused.as_deref(),
        elapsed,
    );
    Ok(Some(CanaryView {
        version: k.version.clone(),
        percent: k.percent,
        cameras: k.cameras.clone(),
        elapsed_s: elapsed.as_secs_f64(),
        verdict: verdict.label().into(),
        reason: verdict.reason().into(),
        workers: m.workers,
        unreadable: m.unreadable,
        refused: m.refused,
        baseline: m.baseline,
        candidate: m.candidate,
    }))
}

pub(crate) async fn start(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(group): Path<String>,
    body: Bytes,
) -> ApiResult {
    let result = start_inner(&st, caller, group, body).await;
    super::counted(
        &st.models.canaries,
        result.map(|(r, changed)| (r, changed, None)),
    )
}

pub(super) fn conflict(message: String) -> (&'static str, ApiError) {
    ("rejected", ApiError(StatusCode::CONFLICT, message))
}

pub(super) fn invalid(message: String) -> (&'static str, ApiError) {
    (
        "rejected",
        ApiError(StatusCode::UNPROCESSABLE_ENTITY, message),
    )
}

async fn start_inner(
    st: &Shared,
    caller: Caller,
    group: String,
    body: Bytes,
) -> Labeled<(ModelRollout, bool)> {
    let req: CanaryRequest = parse_body(&body).map_err(labeled("rejected"))?;
    if !(1..=99).contains(&req.percent) {
        return Err(invalid(format!(
            "percent {} is not within 1–99",
            req.percent
        )));
    }
    for cam in req.cameras.iter().flatten() {
        panoptes_schemas::validate_camera_id(cam).map_err(|e| invalid(e.to_string()))?;
    }
    crate::registry::labels::check(&req.labels).map_err(invalid)?;
    let (current, resolved) = admit(st, &group, &req.model, &req.version).await?;
    let cur = against_active(current, &group, &req.model, &req.version)?;
    if let Some(k) = &cur.canary {
        if k.version == req.version && k.percent == req.percent {
            return Ok((cur, false));
        }
        return Err(conflict(format!(
            "a canary of {}@{} on {} % of the cameras is already running on group {group:?}: promote it or roll it back first",
            cur.model, k.version, k.percent
        )));
    }
    if let Some(s) = &cur.shadow {
        return Err(conflict(format!(
            "a shadow of {}@{} on {} % of the frames is running on group {group:?}: stop it first",
            cur.model, s.version, s.percent
        )));
    }
    let cameras = eligible(st, &group, req.cameras, &req.labels).await?;
    let chosen = choose_cameras(&cameras, req.percent).map_err(|e| match e {
        ChooseError::TooFewCameras(_) if !req.labels.is_empty() => conflict(format!(
            "group {group:?}, cameras labelled {}: {e}",
            crate::registry::labels::display(&req.labels)
        )),
        ChooseError::TooFewCameras(_) => conflict(format!("group {group:?}: {e}")),
        ChooseError::BadPercent(_) => invalid(e.to_string()),
    })?;
    let now = panoptes_coordinator_client::now_ms();
    let next = ModelRollout {
        canary: Some(ModelCanary {
            version: req.version.clone(),
            percent: req.percent,
            cameras: chosen,
            since_generation: cur.generation + 1,
            started_ms: now,
        }),
        generation: cur.generation + 1,
        updated_ms: now,
        ..cur.clone()
    };
    let sha = resolved.manifest.sha256.clone();
    write(
        st,
        caller,
        &group,
        Some(cur),
        next.clone(),
        "model.canary",
        sha,
    )
    .await
    .map_err(labeled("error"))?;
    tracing::info!(group = %group, model = %next.model, candidate = %req.version, percent = req.percent, generation = next.generation, "canary started");
    Ok((next, true))
}

/// The record a candidate (canary or shadow) is compared against: it must exist, run a version
/// of `model`, and not `version` itself (409 otherwise).
pub(super) fn against_active(
    current: Option<ModelRollout>,
    group: &str,
    model: &str,
    version: &str,
) -> Labeled<ModelRollout> {
    let cur = match current {
        Some(cur) if cur.model == model => cur,
        _ => {
            return Err(conflict(format!(
                "no active version of {model} to compare with on group {group:?}: promote one first"
            )));
        }
    };
    if cur.active == version {
        return Err(conflict(format!(
            "{}@{} is already the active version of group {group:?}",
            cur.model, cur.active
        )));
    }
    Ok(cur)
}

/// The group's cameras in the registry, restricted to `only` when given (422 naming any
/// camera that is not in the group) and to those carrying every pair of `labels`.
async fn eligible(
    st: &Shared,
    group: &str,
    only: Option<Vec<String>>,
    labels: &BTreeMap<String, String>,
) -> Labeled<Vec<String>> {
    let g = group.to_owned();
    let in_group: BTreeMap<String, BTreeMap<String, String>> = redis_call(st, move |c, _| {
        let snap = crate::registry::read(c)?;
        Ok(snap
            .cameras
            .into_iter()
            .filter(|(_, rec)| rec.group == g)
            .map(|(id, rec)| (id, rec.labels))
            .collect())
    })
    .await
    .map_err(labeled("error"))?;
    let selected = |id: &String| {
        in_group
            .get(id)
            .is_some_and(|l| crate::registry::labels::matches(l, labels))
    };
    let Some(only) = only else {
        return Ok(in_group.keys().filter(|id| selected(id)).cloned().collect());
    };
    let outside: Vec<&str> = only
        .iter()
        .filter(|c| !in_group.contains_key(*c))
        .map(String::as_str)
        .collect();
    if !outside.is_empty() {
        return Err(invalid(format!(
            "not cameras of group {group:?}: {}",
            outside.join(", ")
        )));
    }
    Ok(only.into_iter().filter(|id| selected(id)).collect())
}
