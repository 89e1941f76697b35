//! `POST /v1/rollouts/{group}/shadow` and `DELETE /v1/rollouts/{group}/shadow`: a candidate
//! version inferring a sample of a group's frames beside the active version, for comparison
//! only (workers publish its detections to `panoptes.detections.shadow` and measure its
//! agreement with the active version; nothing comes back to the coordinator).
//!
//! Contract:
//! - Body `{model, version, percent}` (unknown fields: 400; `percent` outside 1–100: 422).
//!   The version passes names (422), repository (503), known group (404), existence (404)
//!   and integrity (409), but **not the promotion gate**: a shadow's detections never reach
//!   consumers, and shadowing is how a version is evaluated before it can pass the gate.
//! - The group must run a version of the same model other than the candidate (409, as for a
//!   canary), and no canary (409: the two are exclusive, so a worker holds at most two
//!   models). A running shadow of the same version and percent answers 200 `changed: false`;
//!   another version or percent replaces it.
//! - The record gets `shadow = {version, percent, since_generation: generation + 1,
//!   started_ms}` at `generation + 1` through the shared compare-and-set (published on
//!   `panoptes:notify:rollout:<group>`), audited as `model.shadow`. Start requests are
//!   counted in `panoptes_coordinator_model_shadows_total{result}` (`ok`, `unchanged`,
//!   `integrity`, `rejected`, `error`).
//! - `DELETE` removes the shadow at `generation + 1`, audited as `model.shadow.stop`; 404
//!   when none runs. It needs no repository: stopping only ever sheds work.
//! - `promote` and `rollback` end a running shadow as well ([`super`]).

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use panoptes_schemas::model::{ModelRollout, ModelShadow};
use serde::{Deserialize, Serialize};

use super::canary::{against_active, conflict, invalid};
use super::{Labeled, labeled, read_rollout, resolve_candidate, write, written};
use crate::api::auth::Caller;
use crate::api::common::{ApiError, ApiResult, Shared, parse_body, redis_call};

/// `POST /v1/rollouts/{group}/shadow` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowRequest {
    /// Model name (the one the group runs).
    pub model: String,
    /// The candidate version.
    pub version: String,
    /// Share of the frames it also infers, 1–100 %.
    pub percent: u8,
}

pub(crate) async fn start(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(group): Path<String>,
    body: Bytes,
) -> ApiResult {
    let result = start_inner(&st, caller, group, body).await;
    super::counted(
        &st.models.shadows,
        result.map(|(r, changed)| (r, changed, None)),
    )
}

async fn start_inner(
    st: &Shared,
    caller: Caller,
    group: String,
    body: Bytes,
) -> Labeled<(ModelRollout, bool)> {
    let req: ShadowRequest = parse_body(&body).map_err(labeled("rejected"))?;
    if !(1..=100).contains(&req.percent) {
        return Err(invalid(format!(
            "percent {} is not within 1–100",
            req.percent
        )));
    }
    let (current, resolved) = resolve_candidate(st, &group, &req.model, &req.version).await?;
    let cur = against_active(current, &group, &req.model, &req.version)?;
    if let Some(k) = &cur.canary {
        return Err(conflict(format!(
            "a canary of {}@{} is running on group {group:?}: promote it or roll it back first",
            cur.model, k.version
        )));
    }
    if let Some(s) = &cur.shadow
        && s.version == req.version
        && s.percent == req.percent
    {
        return Ok((cur, false));
    }
    let now = panoptes_coordinator_client::now_ms();
    let next = ModelRollout {
        shadow: Some(ModelShadow {
            version: req.version.clone(),
            percent: req.percent,
            since_generation: cur.generation + 1,
            started_ms: now,
        }),
        generation: cur.generation + 1,
        updated_ms: now,
        ..cur.clone()
    };
    let replaced = cur.shadow.as_ref().map(|s| s.version.clone());
    let sha = resolved.manifest.sha256.clone();
    write(
        st,
        caller,
        &group,
        Some(cur),
        next.clone(),
        "model.shadow",
        sha,
    )
    .await
    .map_err(labeled("error"))?;
    tracing::info!(group = %group, model = %next.model, candidate = %req.version, percent = req.percent, generation = next.generation, ?replaced, "shadow started");
    Ok((next, true))
}

pub(crate) async fn stop(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(group): Path<String>,
) -> ApiResult {
    let g = group.clone();
    let current = redis_call(&st, move |c, _| read_rollout(c, &g)).await?;
    let Some((cur, shadow)) = current.and_then(|c| c.shadow.clone().map(|s| (c, s))) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no shadow runs on group {group:?}"),
        ));
    };
    let now = panoptes_coordinator_client::now_ms();
    let next = ModelRollout {
        shadow: None,
        generation: cur.generation + 1,
        updated_ms: now,
        ..cur.clone()
    };
    write(
        &st,
        caller,
        &group,
        Some(cur),
        next.clone(),
        "model.shadow.stop",
        None,
    )
    .await?;
    tracing::info!(group = %group, model = %next.model, candidate = %shadow.version, generation = next.generation, "shadow stopped");
    written(&next, true, Some(&shadow))
}
