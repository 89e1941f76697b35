//! The member routes: `GET /v1/nodes` and `POST/DELETE /v1/nodes/{kind}/{id}/drain`.

use std::collections::{BTreeMap, BTreeSet};

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use panoptes_coordinator_client::{MemberKind, MemberRecord, keys};
use redis::Connection;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::audit::{self, AuditEntry};
use super::auth::Caller;
use super::common::{ApiResult, Shared, ok, redis_call};
use crate::registry::RegistryError;

/// A member as `GET /v1/nodes` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeView {
    /// `ingest` or `worker`.
    pub kind: MemberKind,
    /// Member id.
    pub id: String,
    /// Whether its lease (member hash) exists.
    pub alive: bool,
    /// Whether the operator asked it to drain.
    pub drain: bool,
    /// `active` or `draining` as the member reports it (empty when dead).
    pub state: String,
    /// Region.
    pub region: String,
    /// Group.
    pub group: String,
    /// Capacity (load units).
    pub capacity: f64,
    /// Node class (what `[cost]` prices; empty when dead).
    #[serde(default)]
    pub node_class: String,
    /// Load (load units).
    pub load: f64,
    /// Its HTTP base URL.
    pub http: String,
    /// Whether it reaches its region's Kafka.
    pub broker_ok: bool,
    /// Items granted to it.
    pub owned: u64,
    /// Last lease renewal (ms since the epoch).
    pub updated_ms: u64,
    /// What the member reports (per camera / per partition).
    pub report: Value,
}

fn kind_of(s: &str) -> Result<MemberKind, RegistryError> {
    MemberKind::parse(s).ok_or_else(|| {
        RegistryError::NotFound(format!("unknown member kind {s:?} (ingest or worker)"))
    })
}

pub(super) fn read_nodes(c: &mut Connection) -> Result<Vec<NodeView>, RegistryError> {
    let mut out = Vec::new();
    for kind in [MemberKind::Ingest, MemberKind::Worker] {
        let ids: BTreeSet<String> = redis::cmd("SMEMBERS").arg(keys::members(kind)).query(c)?;
        if ids.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(keys::member(kind, id));
            pipe.cmd("GET").arg(keys::drain(kind, id));
            pipe.cmd("SCARD").arg(keys::owned(kind, id));
        }
        let vals: Vec<redis::Value> = pipe.query(c)?;
        for (id, chunk) in ids.iter().zip(vals.chunks(3)) {
            let [h, d, n] = chunk else { continue };
            let h: BTreeMap<String, String> = redis::from_redis_value(h)?;
            let d: Option<String> = redis::from_redis_value(d)?;
            let n: u64 = redis::from_redis_value(n)?;
            let rec = MemberRecord::from_fields(&h);
            out.push(NodeView {
                kind,
                id: id.clone(),
                alive: rec.is_some(),
                drain: d.as_deref() == Some("1"),
                state: rec.as_ref().map(|r| r.state.clone()).unwrap_or_default(),
                region: rec.as_ref().map(|r| r.region.clone()).unwrap_or_default(),
                group: rec.as_ref().map(|r| r.group.clone()).unwrap_or_default(),
                capacity: rec.as_ref().map_or(0.0, |r| r.capacity),
                node_class: rec
                    .as_ref()
                    .map(|r| r.node_class.clone())
                    .unwrap_or_default(),
                load: rec.as_ref().map_or(0.0, |r| r.load),
                http: rec.as_ref().map(|r| r.http.clone()).unwrap_or_default(),
                broker_ok: rec.as_ref().is_some_and(|r| r.broker_ok),
                owned: n,
                updated_ms: rec.as_ref().map_or(0, |r| r.updated_ms),
                report: rec.map_or(Value::Null, |r| r.report),
            });
        }
    }
    Ok(out)
}

pub(super) async fn nodes(State(st): State<Shared>) -> ApiResult {
    let nodes = redis_call(&st, |c, _| read_nodes(c)).await?;
    ok(StatusCode::OK, json!({ "nodes": nodes }))
}

async fn set_drain(st: Shared, caller: Caller, kind: String, id: String, on: bool) -> ApiResult {
    let (k, i) = (kind.clone(), id.clone());
    redis_call(&st, move |c, st| {
        let kind = kind_of(&k)?;
        let (known, alive): (bool, bool) = redis::pipe()
            .cmd("SISMEMBER")
            .arg(keys::members(kind))
            .arg(&i)
            .cmd("EXISTS")
            .arg(keys::member(kind, &i))
            .query(c)?;
        if !known && !alive {
            return Err(RegistryError::NotFound(format!(
                "unknown {kind} member {i:?}"
            )));
        }
        if on {
            redis::cmd("SET")
                .arg(keys::drain(kind, &i))
                .arg("1")
                .query::<()>(c)?;
        } else {
            redis::cmd("DEL")
                .arg(keys::drain(kind, &i))
                .query::<()>(c)?;
        }
        let op = if on { "node.drain" } else { "node.undrain" };
        audit::record(
            c,
            st,
            &AuditEntry::change(&caller, op, format!("{kind}/{i}")),
        );
        Ok(())
    })
    .await?;
    tracing::info!(kind = %kind, member = %id, drain = on, "drain flag changed");
    ok(
        StatusCode::OK,
        json!({ "kind": kind, "id": id, "drain": on }),
    )
}

pub(super) async fn drain(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((kind, id)): Path<(String, String)>,
) -> ApiResult {
    set_drain(st, caller, kind, id, true).await
}

pub(super) async fn undrain(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((kind, id)): Path<(String, String)>,
) -> ApiResult {
    set_drain(st, caller, kind, id, false).await
}
