//! The model routes: the repository (`GET /v1/models`, `GET /v1/models/{name}/{version}`) and
//! the blue-green rollouts of worker groups (`GET /v1/rollouts`, `GET /v1/rollouts/{group}`,
//! `POST /v1/rollouts/{group}/promote`, `POST /v1/rollouts/{group}/rollback`,
//! `POST /v1/rollouts/{group}/canary`, `POST|DELETE /v1/rollouts/{group}/shadow`).
//!
//! Contract:
//! - The repository is `[models] repository` ([`ModelsConfig`]); without it, or when the
//!   directory is missing, the model routes and the rollout writes answer 503.
//! - `promote {model, version}`: the group must be known (in `panoptes:groups`, a camera's
//!   group, a `[models.groups.<name>]` section, or already rolled out; else 404); the version
//!   is resolved with its integrity check (409 on a SHA-256 mismatch, 404 when absent), then
//!   judged by the group's gate ([`gate`]: 409 naming the threshold, measured vs required, or
//!   the missing device class). On success the [`ModelRollout`] is written with
//!   `previous` = the old active version and `generation + 1`, then published on
//!   `panoptes:notify:rollout:<group>`, in one Lua script that refuses (409) when the
//!   record changed since it was read. Promoting the active version again changes nothing.
//! - `rollback`: active and previous swap (generation + 1) after an integrity check of the
//!   version rolled back to; the gate is not consulted (it passed when that version was
//!   promoted). 404 without a rollout, 409 without a previous version.
//! - Canary ([`canary`]): `POST /v1/rollouts/{group}/canary` puts a candidate on a share of
//!   the group's cameras. While it runs, `promote` of the candidate promotes it and ends the
//!   canary, `promote` of any other version is 409, `rollback` ends the canary (active and
//!   previous unchanged); either records `last_canary` (`promoted by <caller>` / `rolled back
//!   by <caller>`) and counts `panoptes_coordinator_canary_verdicts_total{verdict,
//!   by="operator"}`. The leader ends canaries on its own ([`crate::canary::leader`]).
//! - Shadow ([`shadow`]): a candidate inferring a sample of frames beside the active version,
//!   for comparison only (no gate). `promote` and `rollback` end a running shadow (the new
//!   record has none, the answer names it in `shadow_ended`), so a worker never holds a third
//!   model; promoting the active version again changes nothing and keeps it.
//! - Changes are audited (`model.promote`, `model.rollback`, `model.canary`, `model.shadow`,
//!   `model.shadow.stop`); every promotion attempt is counted in
//!   `panoptes_coordinator_model_promotions_total{result}` (`ok`, `unchanged`,
//!   `not_validated`, `below_threshold`, `integrity`, `rejected`, `error`).

pub mod canary;
pub mod gate;
pub mod shadow;

use std::collections::{BTreeMap, BTreeSet};

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use panoptes_coordinator_client::models::{ModelRepoError, ModelRepository, ResolvedModel};
use panoptes_coordinator_client::records::model_field;
use panoptes_coordinator_client::{MemberKind, MemberRecord, keys};
use panoptes_schemas::model::{ModelRollout, ModelShadow, validate_model_name};
use redis::Connection;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use self::gate::{GateConfig, GateOverride, ModelsConfig, Refusal};
use super::audit::{self, AuditEntry};
use super::auth::Caller;
use super::common::{ApiError, ApiResult, Shared, ok, parse_body, redis_call};
use crate::canary::record;
use crate::registry::RegistryError;

/// What the model routes need besides the shared API state.
pub(crate) struct ModelsState {
    pub(crate) cfg: ModelsConfig,
    promotions: prometheus::IntCounterVec,
    /// Canary start requests by result (the promotion labels).
    canaries: prometheus::IntCounterVec,
    /// Shadow start requests by result (`ok`, `unchanged`, `integrity`, `rejected`, `error`).
    shadows: prometheus::IntCounterVec,
    /// Canaries ended, shared with the leader (`crate::canary::leader::CanaryMetrics`).
    verdicts: prometheus::IntCounterVec,
}

fn result_counter(
    registry: &prometheus::Registry,
    name: &str,
    help: &str,
) -> prometheus::IntCounterVec {
    let counter = prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), &["result"])
        .expect("valid metric");
    if let Err(e) = registry.register(Box::new(counter.clone())) {
        tracing::warn!(error = %e, name, "could not register a model counter");
    }
    counter
}

impl ModelsState {
    /// `verdicts`: the coordinator's canary verdict counter; `None` registers one in
    /// `registry` (an API served without a leader, as in tests).
    pub(crate) fn new(
        cfg: ModelsConfig,
        registry: &prometheus::Registry,
        verdicts: Option<prometheus::IntCounterVec>,
    ) -> Self {
        let promotions = result_counter(
            registry,
            "panoptes_coordinator_model_promotions_total",
            "Model promotion requests by result (ok, unchanged, not_validated, below_threshold, integrity, rejected, error)",
        );
        let canaries = result_counter(
            registry,
            "panoptes_coordinator_model_canaries_total",
            "Canary start requests by result (ok, unchanged, not_validated, below_threshold, integrity, rejected, error)",
        );
        let shadows = result_counter(
            registry,
            "panoptes_coordinator_model_shadows_total",
            "Shadow start requests by result (ok, unchanged, integrity, rejected, error)",
        );
        let verdicts = verdicts.unwrap_or_else(|| match crate::canary::leader::CanaryMetrics::new(
            registry,
        ) {
            Ok(m) => m.verdicts,
            Err(e) => {
                tracing::warn!(error = %e, "could not register the canary verdict counter");
                prometheus::IntCounterVec::new(
                    prometheus::Opts::new(
                        "panoptes_coordinator_canary_verdicts_total",
                        "unregistered",
                    ),
                    &["verdict", "by"],
                )
                .expect("valid metric")
            }
        });
        Self {
            cfg,
            promotions,
            canaries,
            shadows,
            verdicts,
        }
    }

    fn repository(&self) -> Result<ModelRepository, ApiError> {
        let Some(dir) = &self.cfg.repository else {
            return Err(ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                "no model repository is configured ([models] repository)".into(),
            ));
        };
        ModelRepository::open(dir).map_err(repo_error)
    }
}

/// `POST /v1/rollouts/{group}/promote` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromoteRequest {
    /// Model name in the repository.
    pub model: String,
    /// Version to make active.
    pub version: String,
}

/// A group's rollout as `GET /v1/rollouts/{group}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutView {
    /// Worker group.
    pub group: String,
    /// The record (`None`: never rolled out; workers run their configured model).
    pub rollout: Option<ModelRollout>,
    /// Live workers of the group and the model each reports (`<name>@<version>`).
    pub workers: Vec<WorkerModel>,
    /// The running canary, its figures and the verdict so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<canary::CanaryView>,
}

/// One worker and the model it reports running.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerModel {
    /// Worker id.
    pub id: String,
    /// `<name>@<version>`, or `None` when it reports none.
    pub model: Option<String>,
}

/// A version in `GET /v1/models`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionSummary {
    /// Version.
    pub version: String,
    /// SHA-256 of `model.pt` as the manifest records it (not re-hashed for a listing).
    pub sha256: Option<String>,
    /// Recorded validation results.
    pub validation: Vec<panoptes_schemas::model::ValidationResult>,
    /// The default gate's verdict: `pass`, or the reason it refuses.
    pub gate: String,
    /// Why the manifest cannot be read, when it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn repo_error(e: ModelRepoError) -> ApiError {
    let code = match &e {
        ModelRepoError::NoRepository { .. } => StatusCode::SERVICE_UNAVAILABLE,
        ModelRepoError::BadName(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ModelRepoError::NotFound { .. } => StatusCode::NOT_FOUND,
        ModelRepoError::Integrity { .. } | ModelRepoError::Conflict { .. } => StatusCode::CONFLICT,
        ModelRepoError::Manifest { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ModelRepoError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if code.is_server_error() {
        tracing::warn!(error = %e, "model repository request failed");
    }
    ApiError(code, e.to_string())
}

/// Runs blocking repository work off the runtime.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("handler failed: {e}"),
        )
    })?
}

pub(super) async fn list_models(State(st): State<Shared>) -> ApiResult {
    let repo = st.models.repository()?;
    let gate = st.models.cfg.gate_for("");
    let models = blocking(move || {
        let listed = repo.list().map_err(repo_error)?;
        let mut out = Vec::new();
        for (name, versions) in listed {
            let versions: Vec<VersionSummary> = versions
                .into_iter()
                .map(|v| summary(&repo, &gate, &name, v))
                .collect();
            out.push(json!({ "name": name, "versions": versions }));
        }
        Ok(out)
    })
    .await?;
    ok(StatusCode::OK, json!({ "models": models }))
}

fn summary(repo: &ModelRepository, gate: &GateConfig, name: &str, v: String) -> VersionSummary {
    match repo.manifest(name, &v) {
        Ok(m) => VersionSummary {
            gate: gate
                .evaluate(&m)
                .map_or_else(|r| r.message().to_owned(), |()| "pass".into()),
            version: v,
            sha256: m.sha256,
            validation: m.validation,
            error: None,
        },
        Err(e) => VersionSummary {
            version: v,
            sha256: None,
            validation: Vec::new(),
            gate: "unreadable".into(),
            error: Some(e.to_string()),
        },
    }
}

pub(super) async fn get_model(
    State(st): State<Shared>,
    Path((name, version)): Path<(String, String)>,
) -> ApiResult {
    let repo = st.models.repository()?;
    let manifest = blocking(move || repo.manifest(&name, &version).map_err(repo_error)).await?;
    ok(StatusCode::OK, manifest)
}

pub(super) async fn list_rollouts(State(st): State<Shared>) -> ApiResult {
    let rollouts = redis_call(&st, |c, _| {
        let mut keys_found = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(keys::rollout("*"))
                .arg("COUNT")
                .arg(200)
                .query(c)?;
            keys_found.extend(batch);
            if next == 0 || keys_found.len() > 10_000 {
                break;
            }
            cursor = next;
        }
        keys_found.sort();
        keys_found.dedup();
        let prefix = keys::rollout("");
        let mut out = Vec::new();
        for key in keys_found {
            let group = key.strip_prefix(&prefix).unwrap_or(&key).to_owned();
            out.push(json!({ "group": group, "rollout": read_rollout(c, &group)? }));
        }
        Ok(out)
    })
    .await?;
    ok(StatusCode::OK, json!({ "rollouts": rollouts }))
}

pub(super) async fn get_rollout(State(st): State<Shared>, Path(group): Path<String>) -> ApiResult {
    let view = redis_call(&st, move |c, st| {
        let rollout = read_rollout(c, &group)?;
        if rollout.is_none() && !group_known(c, &st.models.cfg, &group)? {
            return Err(unknown_group(&group));
        }
        Ok(RolloutView {
            workers: group_workers(c, &group)?,
            canary: canary::view(c, &st.models.cfg.canary, &group, rollout.as_ref())?,
            group,
            rollout,
        })
    })
    .await?;
    ok(StatusCode::OK, view)
}

pub(super) async fn promote(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(group): Path<String>,
    body: Bytes,
) -> ApiResult {
    let result = promote_inner(&st, caller, group, body).await;
    counted(&st.models.promotions, result)
}

/// Counts a rollout write request by its result label (`ok`, `unchanged`, or the refusal's)
/// in `counter` and answers it with [`written`].
fn counted(
    counter: &prometheus::IntCounterVec,
    result: Labeled<(ModelRollout, bool, Option<ModelShadow>)>,
) -> ApiResult {
    let label = match &result {
        Ok((_, true, _)) => "ok",
        Ok((_, false, _)) => "unchanged",
        Err((label, _)) => label,
    };
    counter.with_label_values(&[label]).inc();
    match result {
        Ok((rollout, changed, ended)) => written(&rollout, changed, ended.as_ref()),
        Err((_, e)) => Err(e),
    }
}

/// The answer of a rollout change: the record, whether it changed, and the shadow the change
/// ended (`shadow_ended`, only when one did).
fn written(rollout: &ModelRollout, changed: bool, shadow_ended: Option<&ModelShadow>) -> ApiResult {
    let mut v = json!({ "rollout": rollout, "changed": changed });
    if let Some(s) = shadow_ended {
        v["shadow_ended"] = json!(s);
    }
    ok(StatusCode::OK, v)
}

type Labeled<T> = Result<T, (&'static str, ApiError)>;

fn labeled(label: &'static str) -> impl Fn(ApiError) -> (&'static str, ApiError) {
    move |e| (label, e)
}

/// What every candidate passes before a write (a shadow's only these): names, repository,
/// known group, integrity. Returns the current record and the resolved version.
async fn resolve_candidate(
    st: &Shared,
    group: &str,
    model: &str,
    version: &str,
) -> Labeled<(Option<ModelRollout>, ResolvedModel)> {
    for (what, v) in [("model", model), ("version", version)] {
        validate_model_name(what, v)
            .map_err(|m| ApiError(StatusCode::UNPROCESSABLE_ENTITY, m))
            .map_err(labeled("rejected"))?;
    }
    let repo = st.models.repository().map_err(labeled("error"))?;
    let g = group.to_owned();
    let current = redis_call(st, move |c, st| {
        if !group_known(c, &st.models.cfg, &g)? {
            return Err(unknown_group(&g));
        }
        read_rollout(c, &g)
    })
    .await
    .map_err(labeled("rejected"))?;
    let (name, v) = (model.to_owned(), version.to_owned());
    let resolved = blocking(move || repo.resolve(&name, &v).map_err(repo_error))
        .await
        .map_err(|e| {
            let label = if e.0 == StatusCode::CONFLICT {
                "integrity"
            } else {
                "rejected"
            };
            (label, e)
        })?;
    Ok((current, resolved))
}

/// What promote and canary both check before writing: [`resolve_candidate`], then the
/// group's gate.
async fn admit(
    st: &Shared,
    group: &str,
    model: &str,
    version: &str,
) -> Labeled<(Option<ModelRollout>, ResolvedModel)> {
    let (current, resolved) = resolve_candidate(st, group, model, version).await?;
    if let Err(refusal) = st.models.cfg.gate_for(group).evaluate(&resolved.manifest) {
        tracing::info!(group = %group, reason = refusal.message(), "promotion refused by the gate");
        return Err((
            refusal.label(),
            ApiError(StatusCode::CONFLICT, refusal.message().to_owned()),
        ));
    }
    Ok((current, resolved))
}

async fn promote_inner(
    st: &Shared,
    caller: Caller,
    group: String,
    body: Bytes,
) -> Labeled<(ModelRollout, bool, Option<ModelShadow>)> {
    let req: PromoteRequest = parse_body(&body).map_err(labeled("rejected"))?;
    let (current, resolved) = admit(st, &group, &req.model, &req.version).await?;
    let now = panoptes_coordinator_client::now_ms();
    let next = match current
        .as_ref()
        .and_then(|c| c.canary.as_ref().map(|k| (c, k)))
    {
        // A running canary: only its candidate may be promoted, which ends it.
        Some((cur, k)) if cur.model == req.model && k.version == req.version => {
            let reason = format!("promoted by {}", caller.name);
            crate::canary::end(cur, k, true, reason, now)
        }
        Some((cur, k)) => {
            return Err((
                "rejected",
                ApiError(
                    StatusCode::CONFLICT,
                    format!(
                        "a canary of {}@{} is running on group {group:?}: promote {} or roll it back first",
                        cur.model, k.version, k.version
                    ),
                ),
            ));
        }
        None => match &current {
            // Nothing to do; a running shadow keeps running (a retried promote ends nothing).
            Some(cur) if cur.model == req.model && cur.active == req.version => {
                return Ok((cur.clone(), false, None));
            }
            _ => ModelRollout {
                model: req.model.clone(),
                active: req.version.clone(),
                // A different model's version is no rollback target for this one.
                previous: current
                    .as_ref()
                    .filter(|c| c.model == req.model)
                    .map(|c| c.active.clone()),
                generation: current.as_ref().map_or(0, |c| c.generation) + 1,
                updated_ms: now,
                canary: None,
                last_canary: current.as_ref().and_then(|c| c.last_canary.clone()),
                // A new active version ends a shadow: workers hold at most two models.
                shadow: None,
            },
        },
    };
    let ended = current.as_ref().and_then(|c| c.shadow.clone());
    let sha = resolved.manifest.sha256.clone();
    write(
        st,
        caller,
        &group,
        current,
        next.clone(),
        "model.promote",
        sha,
    )
    .await
    .map_err(labeled("error"))?;
    let shadow_ended = ended.as_ref().map(|s| s.version.as_str());
    tracing::info!(group = %group, model = %next.model, version = %next.active, generation = next.generation, ?shadow_ended, "model promoted");
    Ok((next, true, ended))
}

pub(super) async fn rollback(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(group): Path<String>,
) -> ApiResult {
    let repo = st.models.repository()?;
    let g = group.clone();
    let current = redis_call(&st, move |c, _| read_rollout(c, &g)).await?;
    let Some(cur) = current else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("group {group:?} has no model rollout to roll back"),
        ));
    };
    let now = panoptes_coordinator_client::now_ms();
    if let Some(k) = &cur.canary {
        // Ends the canary; the active version, already running everywhere else, stays.
        let reason = format!("rolled back by {}", caller.name);
        let next = crate::canary::end(&cur, k, false, reason, now);
        write(
            &st,
            caller,
            &group,
            Some(cur),
            next.clone(),
            "model.rollback",
            None,
        )
        .await?;
        tracing::info!(group = %group, model = %next.model, version = %next.active, generation = next.generation, "canary rolled back");
        return ok(StatusCode::OK, json!({ "rollout": next, "changed": true }));
    }
    let Some(previous) = cur.previous.clone() else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!(
                "group {group:?} runs {}@{} with no previous version to roll back to",
                cur.model, cur.active
            ),
        ));
    };
    let (name, version) = (cur.model.clone(), previous.clone());
    let resolved = blocking(move || repo.resolve(&name, &version).map_err(repo_error)).await?;
    let next = ModelRollout {
        active: previous,
        previous: Some(cur.active.clone()),
        generation: cur.generation + 1,
        updated_ms: now,
        // A new active version ends a shadow: workers hold at most two models.
        shadow: None,
        ..cur.clone()
    };
    let ended = cur.shadow.clone();
    let sha = resolved.manifest.sha256.clone();
    write(
        &st,
        caller,
        &group,
        Some(cur),
        next.clone(),
        "model.rollback",
        sha,
    )
    .await?;
    let shadow_ended = ended.as_ref().map(|s| s.version.as_str());
    tracing::info!(group = %group, model = %next.model, version = %next.active, generation = next.generation, ?shadow_ended, "model rolled back");
    written(&next, true, ended.as_ref())
}

/// Sets the rollout record if it still holds `current` ([`record::compare_and_set`]),
/// publishes it, audits the change (`sha256`: of the version the change is about, when
/// resolved).
async fn write(
    st: &Shared,
    caller: Caller,
    group: &str,
    current: Option<ModelRollout>,
    next: ModelRollout,
    op: &'static str,
    sha256: Option<String>,
) -> Result<(), ApiError> {
    let group = group.to_owned();
    redis_call(st, move |c, st| {
        if !record::compare_and_set(c, &group, current.as_ref(), &next, None)? {
            return Err(RegistryError::Conflict(format!(
                "the rollout of group {group:?} changed while this request ran; read it again and retry"
            )));
        }
        let ended = current.as_ref().is_some_and(|c| c.canary.is_some()) && next.canary.is_none();
        let shadow_ended = current
            .as_ref()
            .and_then(|c| c.shadow.as_ref())
            .filter(|_| next.shadow.is_none())
            .map(|s| s.version.clone());
        let entry = AuditEntry::change(&caller, op, &group).details(json!({
            "model": next.model,
            "active": next.active,
            "previous": next.previous,
            "generation": next.generation,
            "sha256": sha256,
            "canary": next.canary,
            "canary_ended": ended.then(|| next.last_canary.clone()),
            "shadow": next.shadow,
            "shadow_ended": shadow_ended,
        }));
        audit::record(c, st, &entry);
        if let Some(outcome) = next.last_canary.as_ref().filter(|_| ended) {
            st.models
                .verdicts
                .with_label_values(&[outcome.verdict.as_str(), "operator"])
                .inc();
        }
        Ok(())
    })
    .await
}

fn read_rollout(c: &mut Connection, group: &str) -> Result<Option<ModelRollout>, RegistryError> {
    let raw: Option<String> = redis::cmd("GET").arg(keys::rollout(group)).query(c)?;
    raw.map(|r| {
        ModelRollout::from_json(r.as_bytes()).map_err(|e| {
            RegistryError::Internal(format!(
                "stored rollout of group {group:?} is unreadable: {e}"
            ))
        })
    })
    .transpose()
}

fn unknown_group(group: &str) -> RegistryError {
    RegistryError::NotFound(format!(
        "unknown worker group {group:?} (not used by any camera or worker, not configured under [models.groups])"
    ))
}

/// Whether `group` is a worker group this cluster knows.
fn group_known(c: &mut Connection, cfg: &ModelsConfig, group: &str) -> Result<bool, RegistryError> {
    if cfg.groups.contains_key(group) {
        return Ok(true);
    }
    let (in_groups, rolled_out): (bool, bool) = redis::pipe()
        .cmd("HEXISTS")
        .arg(keys::GROUPS)
        .arg(group)
        .cmd("EXISTS")
        .arg(keys::rollout(group))
        .query(c)?;
    if in_groups || rolled_out {
        return Ok(true);
    }
    let cameras: BTreeMap<String, String> = redis::cmd("HGETALL").arg(keys::CAMERAS).query(c)?;
    let camera_group = cameras.values().any(|raw| {
        serde_json::from_str::<Value>(raw)
            .ok()
            .and_then(|v| v.get("group").and_then(Value::as_str).map(|g| g == group))
            .unwrap_or(false)
    });
    Ok(camera_group || !group_workers(c, group)?.is_empty())
}

/// Live workers of `group` with the model each reports.
fn group_workers(c: &mut Connection, group: &str) -> Result<Vec<WorkerModel>, RegistryError> {
    let kind = MemberKind::Worker;
    let ids: BTreeSet<String> = redis::cmd("SMEMBERS").arg(keys::members(kind)).query(c)?;
    let mut out = Vec::new();
    for id in ids {
        let h: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(keys::member(kind, &id))
            .query(c)?;
        match MemberRecord::from_fields(&h) {
            Some(rec) if rec.group == group => out.push(WorkerModel {
                id,
                model: model_field(&h),
            }),
            _ => {}
        }
    }
    Ok(out)
}
