//! The camera registry routes: `GET/POST /v1/cameras`, `GET/PUT/DELETE /v1/cameras/{id}`,
//! `POST /v1/apply`. Every change is audited on the connection that made it (details carry
//! the redacted view of the camera, never its password).

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use panoptes_coordinator_client::keys;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::audit::{self, AuditEntry};
use super::auth::Caller;
use super::common::{ApiError, ApiResult, Shared, ok, parse_body, redis_call, registry_write};
use crate::registry::{self, CameraSpec, CameraView};

/// `GET /v1/cameras` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct CameraList {
    /// Registry version.
    pub version: u64,
    /// Cameras, by id, URLs redacted.
    pub cameras: Vec<CameraView>,
    /// Ids whose stored record cannot be read (replace them with PUT or delete them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
}

/// Answer of a camera write.
#[derive(Debug, Serialize, Deserialize)]
pub struct CameraWritten {
    /// The camera as stored (URL redacted).
    pub camera: CameraView,
    /// Registry version after the write.
    pub version: u64,
}

pub(super) async fn list_cameras(State(st): State<Shared>) -> ApiResult {
    let snap = redis_call(&st, |c, _| registry::read(c)).await?;
    ok(
        StatusCode::OK,
        CameraList {
            version: snap.version,
            cameras: snap.cameras.values().map(CameraView::from).collect(),
            unreadable: snap.unreadable.keys().cloned().collect(),
        },
    )
}

pub(super) async fn get_camera(State(st): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let snap = redis_call(&st, |c, _| registry::read(c)).await?;
    match (snap.cameras.get(&id), snap.unreadable.get(&id)) {
        (Some(r), _) => ok(StatusCode::OK, CameraView::from(r)),
        (None, Some(why)) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "stored record of camera {id} is unreadable ({why}); replace it with PUT or delete it"
            ),
        )),
        (None, None) => Err(registry::unknown_camera(&id).into()),
    }
}

pub(super) async fn create_camera(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let spec: CameraSpec = parse_body(&body)?;
    let (rec, version) = registry_write(&st, move |c, st, limits| {
        let (rec, version) = registry::create(c, limits, &spec)?;
        let entry = AuditEntry::change(&caller, "camera.create", &rec.id)
            .versions(version, true)
            .details(json!({ "camera": CameraView::from(&rec) }));
        audit::record(c, st, &entry);
        Ok((rec, version))
    })
    .await?;
    written(StatusCode::CREATED, "created", &rec, version)
}

pub(super) async fn put_camera(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult {
    let mut spec: CameraSpec = parse_body(&body)?;
    if spec.id.is_empty() {
        spec.id.clone_from(&id);
    } else if spec.id != id {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("body id {:?} differs from the path's {id:?}", spec.id),
        ));
    }
    let (rec, version) = registry_write(&st, move |c, st, limits| {
        // The version just before: an update that changes nothing does not move it. (A
        // concurrent change between this read and the update's transaction makes a no-op
        // update look like a change; the entry then says so with before = after - 1.)
        let before: Option<u64> = redis::cmd("GET").arg(keys::CAMERAS_VERSION).query(c)?;
        let (rec, version) = registry::update(c, limits, &spec)?;
        let entry = AuditEntry::change(&caller, "camera.update", &rec.id)
            .versions(version, version != before.unwrap_or(0))
            .details(json!({ "camera": CameraView::from(&rec) }));
        audit::record(c, st, &entry);
        Ok((rec, version))
    })
    .await?;
    written(StatusCode::OK, "updated", &rec, version)
}

/// Logs a camera write and answers with the stored camera (URL redacted) and the registry
/// version it made.
fn written(
    status: StatusCode,
    what: &str,
    rec: &panoptes_coordinator_client::CameraRecord,
    version: u64,
) -> ApiResult {
    tracing::info!(camera = %rec.id, partition = rec.partition, version, "camera {what}");
    ok(
        status,
        CameraWritten {
            camera: CameraView::from(rec),
            version,
        },
    )
}

pub(super) async fn delete_camera(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult {
    let id2 = id.clone();
    let version = redis_call(&st, move |c, st| {
        let version = registry::delete(c, &id2)?;
        let entry = AuditEntry::change(&caller, "camera.delete", id2).versions(version, true);
        audit::record(c, st, &entry);
        Ok(version)
    })
    .await?;
    tracing::info!(camera = %id, version, "camera deleted");
    ok(StatusCode::OK, json!({ "deleted": id, "version": version }))
}

/// `POST /v1/apply` body.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    /// The cameras the registry should hold.
    pub cameras: Vec<CameraSpec>,
    /// Delete registered cameras missing from `cameras` (default false).
    #[serde(default)]
    pub prune: bool,
    /// Apply only if the registry version is still this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u64>,
}

pub(super) async fn apply(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> ApiResult {
    let req: ApplyRequest = parse_body(&body)?;
    let sum = registry_write(&st, move |c, st, limits| {
        let sum = registry::apply(c, limits, &req.cameras, req.prune, req.if_version)?;
        let changed = !(sum.added.is_empty() && sum.updated.is_empty() && sum.removed.is_empty());
        let entry = AuditEntry::change(&caller, "apply", "registry")
            .versions(sum.version, changed)
            .details(json!({
                "added": sum.added,
                "updated": sum.updated,
                "removed": sum.removed,
                "unchanged": sum.unchanged.len(),
                "prune": req.prune,
                "if_version": req.if_version,
            }));
        audit::record(c, st, &entry);
        Ok(sum)
    })
    .await?;
    tracing::info!(
        added = sum.added.len(),
        updated = sum.updated.len(),
        removed = sum.removed.len(),
        unchanged = sum.unchanged.len(),
        version = sum.version,
        "camera registry applied"
    );
    ok(StatusCode::OK, sum)
}
