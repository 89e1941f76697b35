//! The operator API: HTTP + JSON under `/v1`, bearer-token authenticated.
//!
//! - `GET/POST /v1/cameras`, `GET/PUT/DELETE /v1/cameras/{id}`: the camera registry;
//! - `POST /v1/apply`: make the registry match a list of cameras, atomically;
//! - `GET /v1/nodes`, `GET /v1/assignments`, `GET /v1/status`: what the cluster does;
//! - `POST/DELETE /v1/nodes/{kind}/{id}/drain`: ask a member to drain, or stop asking.
//!
//! Errors are `{"error": "..."}` with 400 (body not understood), 401 (token), 404 (unknown
//! camera or member), 409 (conflict with the registry's state), 422 (invalid field), 503
//! (Redis unreachable). Camera URLs are only ever shown redacted. Handlers run their Redis
//! calls on blocking threads (`spawn_blocking`) with pooled synchronous connections.
//! The reference is `docs/operator.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use panoptes_coordinator_client::{AssignRecord, MemberKind, MemberRecord, keys};
use panoptes_runtime::redact::{Secret, redact_text};
use redis::Connection;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::registry::{self, CameraSpec, CameraView, Limits, Pool, RegistryError};

mod views;

pub use views::{
    Assignments, CameraAssignment, CameraStatus, GroupView, LeaderView, PartitionAssignment,
    PartitionStatus, StatusView,
};
use views::{assignments, status};

/// Hash group name → `{"desired_replicas": n, "load": x, "capacity": y}`, written by the
/// leader's reconciler; read by `GET /v1/status`.
pub const GROUPS_KEY: &str = panoptes_coordinator_client::keys::GROUPS;

/// How long one Redis call of a handler may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);

/// What the operator API needs.
pub struct ApiContext {
    /// Redis URL of the coordination database.
    pub redis_url: String,
    /// Bearer token every request must carry; `None` disables authentication (development
    /// only: a warning is logged).
    pub token: Option<Secret>,
    /// Name of the frames topic (in every region's Kafka).
    pub frames_topic: String,
    /// Partitions per region frames topic; camera partitions are allocated in `[0, n)`.
    pub frames_partitions: i32,
    /// Known region names (a camera's region must be one of them).
    pub regions: Vec<String>,
    /// Where the API registers its metrics.
    pub metrics: prometheus::Registry,
}

struct ApiState {
    pool: Pool,
    limits: Limits,
    token: Option<Secret>,
    frames_topic: String,
    requests: prometheus::IntCounterVec,
}

type Shared = Arc<ApiState>;

/// The `/v1` routes.
pub fn router(ctx: ApiContext) -> Router {
    if ctx.token.is_none() {
        tracing::warn!(
            "operator API runs WITHOUT authentication (no token configured): development only"
        );
    }
    let requests = prometheus::IntCounterVec::new(
        prometheus::Opts::new(
            "panoptes_coordinator_api_requests_total",
            "Operator API requests by route, method and HTTP status code",
        ),
        &["route", "method", "code"],
    )
    .expect("valid metric");
    if let Err(e) = ctx.metrics.register(Box::new(requests.clone())) {
        tracing::warn!(error = %e, "could not register the operator API metrics");
    }
    let state: Shared = Arc::new(ApiState {
        pool: Pool::new(ctx.redis_url, REDIS_TIMEOUT),
        limits: Limits {
            frames_partitions: ctx.frames_partitions,
            regions: ctx.regions,
        },
        token: ctx.token,
        frames_topic: ctx.frames_topic,
        requests,
    });
    Router::new()
        .route("/v1/cameras", get(list_cameras).post(create_camera))
        .route(
            "/v1/cameras/{id}",
            get(get_camera).put(put_camera).delete(delete_camera),
        )
        .route("/v1/apply", post(apply))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{kind}/{id}/drain", post(drain).delete(undrain))
        .route("/v1/assignments", get(assignments))
        .route("/v1/status", get(status))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .route_layer(middleware::from_fn_with_state(state.clone(), count))
        // Unknown /v1 paths answer like the rest of the API (no router-wide fallback: the
        // coordinator merges these routes with its health routes).
        .route(
            "/v1/{*rest}",
            any(|| async { ApiError(StatusCode::NOT_FOUND, "no such API route".into()) }),
        )
        .with_state(state)
}

/// An error answer: `{"error": message}`.
#[derive(Debug)]
pub struct ApiError(pub StatusCode, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.0, axum::Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let code = match &e {
            RegistryError::BadRequest(_) => StatusCode::BAD_REQUEST,
            RegistryError::NotFound(_) => StatusCode::NOT_FOUND,
            RegistryError::Conflict(_) => StatusCode::CONFLICT,
            RegistryError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            RegistryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            RegistryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if code.is_server_error() {
            tracing::warn!(error = %e, "operator API request failed");
        }
        Self(code, e.to_string())
    }
}

type ApiResult = Result<Response, ApiError>;

async fn authenticate(State(st): State<Shared>, req: Request, next: Next) -> Response {
    if let Some(token) = &st.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        let Some(given) = given else {
            return ApiError(
                StatusCode::UNAUTHORIZED,
                "missing bearer token: send the header 'Authorization: Bearer <token>' (panoptes --token or PANOPTES_TOKEN)".into(),
            )
            .into_response();
        };
        if !bool::from(given.as_bytes().ct_eq(token.expose().as_bytes())) {
            return ApiError(StatusCode::UNAUTHORIZED, "invalid bearer token".into())
                .into_response();
        }
    }
    next.run(req).await
}

async fn count(State(st): State<Shared>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().to_owned());
    let method = req.method().clone();
    let resp = next.run(req).await;
    st.requests
        .with_label_values(&[route.as_str(), method.as_str(), resp.status().as_str()])
        .inc();
    resp
}

/// Runs `f` with a pooled Redis connection on a blocking thread.
async fn redis_call<T: Send + 'static>(
    st: &Shared,
    f: impl FnOnce(&mut Connection, &ApiState) -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, ApiError> {
    let st = st.clone();
    tokio::task::spawn_blocking(move || st.pool.with(|c| f(c, &st)))
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("handler failed: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

/// Parses a JSON body; 400 with serde's message (passwords redacted) when it does not fit.
fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("request body: {}", redact_text(&e.to_string())),
        )
    })
}

fn ok(code: StatusCode, v: impl Serialize) -> ApiResult {
    Ok((code, axum::Json(v)).into_response())
}

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

async fn list_cameras(State(st): State<Shared>) -> ApiResult {
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

async fn get_camera(State(st): State<Shared>, Path(id): Path<String>) -> ApiResult {
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

async fn create_camera(State(st): State<Shared>, body: Bytes) -> ApiResult {
    let spec: CameraSpec = parse_body(&body)?;
    let (rec, version) =
        redis_call(&st, move |c, st| registry::create(c, &st.limits, &spec)).await?;
    tracing::info!(camera = %rec.id, partition = rec.partition, version, "camera created");
    ok(
        StatusCode::CREATED,
        CameraWritten {
            camera: CameraView::from(&rec),
            version,
        },
    )
}

async fn put_camera(State(st): State<Shared>, Path(id): Path<String>, body: Bytes) -> ApiResult {
    let mut spec: CameraSpec = parse_body(&body)?;
    if spec.id.is_empty() {
        spec.id.clone_from(&id);
    } else if spec.id != id {
        return Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("body id {:?} differs from the path's {id:?}", spec.id),
        ));
    }
    let (rec, version) =
        redis_call(&st, move |c, st| registry::update(c, &st.limits, &spec)).await?;
    tracing::info!(camera = %rec.id, partition = rec.partition, version, "camera updated");
    ok(
        StatusCode::OK,
        CameraWritten {
            camera: CameraView::from(&rec),
            version,
        },
    )
}

async fn delete_camera(State(st): State<Shared>, Path(id): Path<String>) -> ApiResult {
    let id2 = id.clone();
    let version = redis_call(&st, move |c, _| registry::delete(c, &id2)).await?;
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

async fn apply(State(st): State<Shared>, body: Bytes) -> ApiResult {
    let req: ApplyRequest = parse_body(&body)?;
    let sum = redis_call(&st, move |c, st| {
        registry::apply(c, &st.limits, &req.cameras, req.prune, req.if_version)
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

fn read_nodes(c: &mut Connection) -> Result<Vec<NodeView>, RegistryError> {
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

async fn nodes(State(st): State<Shared>) -> ApiResult {
    let nodes = redis_call(&st, |c, _| read_nodes(c)).await?;
    ok(StatusCode::OK, json!({ "nodes": nodes }))
}

async fn set_drain(st: Shared, kind: String, id: String, on: bool) -> ApiResult {
    let (k, i) = (kind.clone(), id.clone());
    redis_call(&st, move |c, _| {
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
        Ok(())
    })
    .await?;
    tracing::info!(kind = %kind, member = %id, drain = on, "drain flag changed");
    ok(
        StatusCode::OK,
        json!({ "kind": kind, "id": id, "drain": on }),
    )
}

async fn drain(State(st): State<Shared>, Path((kind, id)): Path<(String, String)>) -> ApiResult {
    set_drain(st, kind, id, true).await
}

async fn undrain(State(st): State<Shared>, Path((kind, id)): Path<(String, String)>) -> ApiResult {
    set_drain(st, kind, id, false).await
}
