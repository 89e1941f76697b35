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

/// A camera's assignment as `GET /v1/assignments` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CameraAssignment {
    /// Camera id.
    pub camera: String,
    /// The record.
    #[serde(flatten)]
    pub assign: AssignRecord,
}

/// A partition's assignment as `GET /v1/assignments` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionAssignment {
    /// Region whose Kafka holds this copy of the partition.
    pub cluster: String,
    /// Frames topic.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Owning worker; empty when unassigned.
    pub owner: String,
    /// Epoch of the grant.
    pub epoch: u64,
    /// Worker the coordinator is moving it to.
    pub target: Option<String>,
    /// Epoch the owner released it at.
    pub released: Option<u64>,
}

/// `GET /v1/assignments` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Assignments {
    /// Camera → ingest node.
    pub cameras: Vec<CameraAssignment>,
    /// Partition → worker.
    pub partitions: Vec<PartitionAssignment>,
}

fn scan(c: &mut Connection, pattern: &str) -> Result<Vec<String>, RegistryError> {
    let mut cursor: u64 = 0;
    let mut out = BTreeSet::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(c)?;
        out.extend(batch);
        if next == 0 {
            return Ok(out.into_iter().collect());
        }
        cursor = next;
    }
}

fn hgetall_many(
    c: &mut Connection,
    keys: &[String],
) -> Result<Vec<BTreeMap<String, String>>, RegistryError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("HGETALL").arg(k);
    }
    Ok(pipe.query(c)?)
}

fn read_assignments(c: &mut Connection) -> Result<Assignments, RegistryError> {
    let mut out = Assignments::default();
    let cam_keys = scan(c, "panoptes:camassign:*")?;
    for (k, h) in cam_keys.iter().zip(hgetall_many(c, &cam_keys)?) {
        let Some(camera) = k.strip_prefix("panoptes:camassign:") else {
            continue;
        };
        if h.is_empty() {
            continue;
        }
        let assign = AssignRecord::from_fields(&h)
            .map_err(|e| RegistryError::Internal(format!("{k}: {e}")))?;
        out.cameras.push(CameraAssignment {
            camera: camera.to_string(),
            assign,
        });
    }
    let part_keys = scan(c, "panoptes:assign:*")?;
    for (k, h) in part_keys.iter().zip(hgetall_many(c, &part_keys)?) {
        // panoptes:assign:<cluster>:<topic>:<partition>; the topic may hold dots, not colons.
        let Some(rest) = k.strip_prefix("panoptes:assign:") else {
            continue;
        };
        let mut parts = rest.rsplitn(3, ':');
        let (Some(p), Some(topic), Some(cluster)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(partition) = p.parse::<i32>() else {
            continue;
        };
        if h.is_empty() {
            continue;
        }
        let assign = AssignRecord::from_fields(&h)
            .map_err(|e| RegistryError::Internal(format!("{k}: {e}")))?;
        out.partitions.push(PartitionAssignment {
            cluster: cluster.to_string(),
            topic: topic.to_string(),
            partition,
            owner: assign.owner,
            epoch: assign.epoch,
            target: assign.target,
            released: assign.released,
        });
    }
    out.partitions.sort_by(|a, b| {
        (&a.cluster, &a.topic, a.partition).cmp(&(&b.cluster, &b.topic, b.partition))
    });
    Ok(out)
}

async fn assignments(State(st): State<Shared>) -> ApiResult {
    let a = redis_call(&st, |c, _| read_assignments(c)).await?;
    ok(StatusCode::OK, a)
}

/// The leader as `GET /v1/status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaderView {
    /// Coordinator id.
    pub id: String,
    /// Its HTTP base URL.
    pub http: String,
    /// Fencing token of its term.
    pub token: u64,
    /// Leading since (ms since the epoch).
    pub since_ms: u64,
    /// Last tick (ms since the epoch).
    pub tick_ms: u64,
    /// Whether it still holds the lease (`panoptes:leader` names it).
    pub holds_lease: bool,
}

/// One worker group in `GET /v1/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupView {
    /// Group name.
    pub group: String,
    /// Alive workers in the group.
    pub workers: u64,
    /// Sum of their capacities.
    pub capacity: f64,
    /// Sum of their loads.
    pub load: f64,
    /// Load of the group's cameras (what the registry asks for).
    pub camera_load: f64,
    /// Replicas the reconciler wants (absent until it has written its view).
    pub desired_replicas: Option<u64>,
    /// The reconciler's own view of the group: `{"desired_replicas", "load", "capacity"}`.
    pub reconciler: Value,
}

/// One camera in `GET /v1/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CameraStatus {
    /// Camera id.
    pub id: String,
    /// Home region.
    pub region: String,
    /// Worker group.
    pub group: String,
    /// Frames partition.
    pub partition: i32,
    /// Configured fps.
    pub fps_target: u32,
    /// Owning ingest node (empty when unassigned).
    pub owner: String,
    /// Region whose Kafka gets its frames now.
    pub cluster: Option<String>,
    /// Epoch of the grant.
    pub epoch: u64,
    /// Node it is being moved to.
    pub target: Option<String>,
    /// Measured fps, as the owner reports it.
    pub fps: Option<f64>,
    /// State, as the owner reports it.
    pub state: Option<String>,
}

/// One partition copy in `GET /v1/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// Region whose Kafka holds it.
    pub cluster: String,
    /// Partition number.
    pub partition: i32,
    /// Owning worker (empty when unassigned).
    pub owner: String,
    /// Epoch of the grant.
    pub epoch: u64,
    /// Worker it is being moved to.
    pub target: Option<String>,
    /// Consumer lag (records), as the owner reports it.
    pub lag: Option<i64>,
    /// Frames consumed per second, as the owner reports it.
    pub fps: Option<f64>,
    /// Cameras whose frames go to this partition.
    pub cameras: Vec<String>,
}

/// `GET /v1/status` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusView {
    /// The leader, if one has ever been elected.
    pub leader: Option<LeaderView>,
    /// Registry version.
    pub registry_version: u64,
    /// All members.
    pub nodes: Vec<NodeView>,
    /// Worker groups.
    pub groups: Vec<GroupView>,
    /// Every registered camera.
    pub cameras: Vec<CameraStatus>,
    /// Every partition copy with an assignment record (of the frames topic).
    pub partitions: Vec<PartitionStatus>,
}

fn read_status(c: &mut Connection, frames_topic: &str) -> Result<StatusView, RegistryError> {
    let (info, holder, groups_raw): (
        BTreeMap<String, String>,
        Option<String>,
        BTreeMap<String, String>,
    ) = redis::pipe()
        .cmd("HGETALL")
        .arg(keys::LEADER_INFO)
        .cmd("GET")
        .arg(keys::LEADER)
        .cmd("HGETALL")
        .arg(GROUPS_KEY)
        .query(c)?;
    let num = |k: &str| info.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    let leader = info.get("id").map(|id| LeaderView {
        id: id.clone(),
        http: info.get("http").cloned().unwrap_or_default(),
        token: num("token"),
        since_ms: num("since_ms"),
        tick_ms: num("tick_ms"),
        holds_lease: holder.as_deref() == Some(id.as_str()),
    });
    let snap = registry::read(c)?;
    let nodes = read_nodes(c)?;
    let assigns = read_assignments(c)?;

    let report_of = |kind: MemberKind, id: &str| {
        nodes
            .iter()
            .find(|n| n.kind == kind && n.id == id && n.alive)
            .map(|n| &n.report)
    };

    let mut groups: BTreeMap<String, GroupView> = BTreeMap::new();
    fn group<'a>(groups: &'a mut BTreeMap<String, GroupView>, name: &str) -> &'a mut GroupView {
        groups.entry(name.to_string()).or_insert_with(|| GroupView {
            group: name.to_string(),
            reconciler: Value::Null,
            ..Default::default()
        })
    }
    for n in nodes
        .iter()
        .filter(|n| n.kind == MemberKind::Worker && n.alive)
    {
        let g = group(&mut groups, &n.group);
        g.workers += 1;
        g.capacity += n.capacity;
        g.load += n.load;
    }
    for cam in snap.cameras.values() {
        group(&mut groups, &cam.group).camera_load += cam.load();
    }
    for (name, raw) in &groups_raw {
        let v: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
        let g = group(&mut groups, name);
        g.desired_replicas = v.get("desired_replicas").and_then(Value::as_u64);
        g.reconciler = v;
    }

    let cam_assign: BTreeMap<&str, &AssignRecord> = assigns
        .cameras
        .iter()
        .map(|a| (a.camera.as_str(), &a.assign))
        .collect();
    let cameras = snap
        .cameras
        .values()
        .map(|cam| {
            let a = cam_assign
                .get(cam.id.as_str())
                .copied()
                .cloned()
                .unwrap_or_default();
            let rep = (!a.owner.is_empty())
                .then(|| report_of(MemberKind::Ingest, &a.owner))
                .flatten()
                .and_then(|r| r.get("cameras"))
                .and_then(|cs| cs.get(&cam.id));
            CameraStatus {
                id: cam.id.clone(),
                region: cam.region.clone(),
                group: cam.group.clone(),
                partition: cam.partition,
                fps_target: cam.fps,
                owner: a.owner,
                cluster: a.cluster,
                epoch: a.epoch,
                target: a.target,
                fps: rep.and_then(|r| r.get("fps")).and_then(Value::as_f64),
                state: rep.and_then(|r| r.get("state")).map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
            }
        })
        .collect();

    let partitions = assigns
        .partitions
        .into_iter()
        .filter(|p| p.topic == frames_topic)
        .map(|p| {
            let item = keys::partition_item(&p.cluster, p.partition);
            let rep = (!p.owner.is_empty())
                .then(|| report_of(MemberKind::Worker, &p.owner))
                .flatten()
                .and_then(|r| r.get("items"))
                .and_then(|i| i.get(&item));
            let lag = rep.and_then(|i| i.get("lag")).and_then(Value::as_i64);
            let fps = rep.and_then(|i| i.get("fps")).and_then(Value::as_f64);
            PartitionStatus {
                cameras: snap
                    .cameras
                    .values()
                    .filter(|c| c.partition == p.partition)
                    .map(|c| c.id.clone())
                    .collect(),
                cluster: p.cluster,
                partition: p.partition,
                owner: p.owner,
                epoch: p.epoch,
                target: p.target,
                lag,
                fps,
            }
        })
        .collect();

    Ok(StatusView {
        leader,
        registry_version: snap.version,
        nodes,
        groups: groups.into_values().collect(),
        cameras,
        partitions,
    })
}

async fn status(State(st): State<Shared>) -> ApiResult {
    let s = redis_call(&st, |c, st| read_status(c, &st.frames_topic)).await?;
    ok(StatusCode::OK, s)
}
