//! The audit trail of the operator API: every change, and every write a viewer tried, as one
//! entry of the Redis stream [`AUDIT_KEY`], readable with `GET /v1/audit?limit=N`.
//!
//! Contract:
//! - An entry says who (token name and role), what (operation and target), the registry
//!   version before and after (for registry changes), the outcome (`ok` or `denied`) and
//!   details built only from redacted views (camera URLs as `rtsp://user:***@host/...`, ids,
//!   flags): no password or token ever goes into an entry.
//! - Entries are appended after the change succeeded, on the same Redis connection
//!   (`XADD panoptes:audit MAXLEN ~ 10000 * entry <json>`); the stream is capped at about
//!   [`AUDIT_MAX_LEN`] entries. If the append fails the change stands (it is already
//!   committed): the entry is logged at `error` level instead and counted in
//!   `panoptes_coordinator_audit_write_failures_total`.
//! - `GET /v1/audit?limit=N` (viewer) returns the newest `N` entries first (1..=1000,
//!   default 50); a stored entry that does not parse is returned as `{"id", "unreadable"}`.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use redis::Connection;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::Caller;
use super::common::{ApiError, ApiResult, Shared, ok, redis_call};
use crate::config::Role;
use crate::registry::RegistryError;

/// The Redis stream holding the audit trail.
pub const AUDIT_KEY: &str = "panoptes:audit";

/// About how many entries the stream keeps (`MAXLEN ~`).
pub const AUDIT_MAX_LEN: u64 = 10_000;

/// Most entries one `GET /v1/audit` returns.
pub const MAX_LIMIT: usize = 1000;

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Stream id (set when read back).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// When (ms since the epoch, coordinator clock).
    pub time_ms: u64,
    /// Token name of the caller.
    pub who: String,
    /// Its role.
    pub role: Role,
    /// Operation: `camera.create`, `camera.update`, `camera.delete`, `apply`, `node.drain`,
    /// `node.undrain`, or for a denied write the method and route (`POST /v1/cameras`).
    pub op: String,
    /// What it acted on: a camera id, `registry`, `<kind>/<id>`, or the request path.
    pub target: String,
    /// `ok` or `denied`.
    pub outcome: String,
    /// Registry version before the change (registry operations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_before: Option<u64>,
    /// Registry version after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_after: Option<u64>,
    /// Redacted details (the camera as stored, URL redacted; apply's lists of ids; ...).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl AuditEntry {
    /// A change `caller` made.
    pub fn change(caller: &Caller, op: &str, target: impl Into<String>) -> Self {
        Self {
            id: String::new(),
            time_ms: now_ms(),
            who: caller.name.clone(),
            role: caller.role,
            op: op.into(),
            target: target.into(),
            outcome: "ok".into(),
            version_before: None,
            version_after: None,
            details: Value::Null,
        }
    }

    /// A write `caller` was not allowed to make. `target` is the request path: a route
    /// matched it and the caller holds a valid token, so it is bounded by what token holders
    /// send; it is cut to 200 characters.
    pub fn denied(caller: &Caller, op: String, path: &str) -> Self {
        let mut e = Self::change(caller, "", path.chars().take(200).collect::<String>());
        e.op = op;
        e.outcome = "denied".into();
        e
    }

    /// With the registry versions around a change; `changed` false means the write was a
    /// no-op (the version did not move).
    pub fn versions(mut self, after: u64, changed: bool) -> Self {
        self.version_after = Some(after);
        self.version_before = Some(if changed {
            after.saturating_sub(1)
        } else {
            after
        });
        self
    }

    /// With redacted details.
    pub fn details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }
}

/// Appends `entry` to the stream on `c` (also used by the leader for its canary verdicts).
pub(crate) fn append(c: &mut Connection, entry: &AuditEntry) -> Result<(), String> {
    let json = serde_json::to_string(entry).map_err(|e| format!("not encodable: {e}"))?;
    let res: redis::RedisResult<String> = redis::cmd("XADD")
        .arg(AUDIT_KEY)
        .arg("MAXLEN")
        .arg("~")
        .arg(AUDIT_MAX_LEN)
        .arg("*")
        .arg("entry")
        .arg(&json)
        .query(c);
    res.map(drop).map_err(|e| e.to_string())
}

/// Appends `entry` to the stream on `c`; a failure is logged with the entry and counted,
/// never returned (the change it records is already committed).
pub(crate) fn record(c: &mut Connection, st: &super::common::ApiState, entry: &AuditEntry) {
    if let Err(e) = append(c, entry) {
        st.audit_failures.inc();
        tracing::error!(error = %e, audit = ?entry, "audit entry could not be stored; it is logged here instead");
    }
}

/// [`record`] on a pooled connection from an async context (denied writes).
pub(crate) async fn record_async(st: &Shared, entry: AuditEntry) {
    let failed = redis_call(st, move |c, st| {
        record(c, st, &entry);
        Ok(())
    })
    .await;
    if let Err(e) = failed {
        st.audit_failures.inc();
        tracing::error!(error = %e.1, "audit entry could not be stored (no Redis connection)");
    }
}

/// The newest `limit` entries, newest first.
pub(crate) fn read(c: &mut Connection, limit: usize) -> Result<Vec<Value>, RegistryError> {
    let raw: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(AUDIT_KEY)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(limit)
        .query(c)?;
    Ok(raw
        .into_iter()
        .map(|(id, fields)| {
            let entry = fields
                .iter()
                .find(|(k, _)| k == "entry")
                .and_then(|(_, v)| serde_json::from_str::<AuditEntry>(v).ok());
            match entry {
                Some(mut e) => {
                    e.id = id;
                    serde_json::to_value(e).unwrap_or(Value::Null)
                }
                None => serde_json::json!({ "id": id, "unreadable": true }),
            }
        })
        .collect())
}

/// `GET /v1/audit` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    limit: Option<usize>,
}

/// `GET /v1/audit?limit=N` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuditList {
    /// Newest first.
    pub entries: Vec<Value>,
}

pub(super) async fn list(
    State(st): State<Shared>,
    q: Result<Query<AuditQuery>, QueryRejection>,
) -> ApiResult {
    let Query(q) =
        q.map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("query: {}", e.body_text())))?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("limit must be in 1..={MAX_LIMIT}, not {limit}"),
        ));
    }
    let entries = redis_call(&st, move |c, _| read(c, limit)).await?;
    ok(StatusCode::OK, AuditList { entries })
}
