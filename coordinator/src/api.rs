//! The operator API: HTTP + JSON under `/v1`, bearer tokens with roles, every change
//! audited.
//!
//! - `GET/POST /v1/cameras`, `GET/PUT/DELETE /v1/cameras/{id}`: the camera registry;
//! - `POST /v1/apply`: make the registry match a list of cameras, atomically;
//! - `GET /v1/nodes`, `GET /v1/assignments`, `GET /v1/status`: what the cluster does;
//! - `POST/DELETE /v1/nodes/{kind}/{id}/drain`: ask a member to drain, or stop asking;
//! - `GET /v1/audit?limit=N`: the newest changes, who made them ([`audit`]);
//! - `GET /v1/models[/{name}/{version}]`, `GET /v1/rollouts[/{group}]`,
//!   `POST /v1/rollouts/{group}/promote|rollback|canary|shadow`,
//!   `DELETE /v1/rollouts/{group}/shadow`: model repository and rollouts ([`models`]).
//!
//! Access ([`auth`]): `viewer` tokens read (`GET`), `operator` tokens also write. Errors are
//! `{"error": "..."}` with 400 (body or query not understood), 401 (no or unknown token),
//! 403 (a viewer writing), 404 (unknown camera, member or route), 405 (method), 409
//! (conflict with the registry's state), 413 (body over `api.max_body_bytes`), 422 (invalid
//! field), 503 (Redis unreachable). Camera URLs are only ever shown redacted. Handlers run
//! their Redis calls on blocking threads (`spawn_blocking`) with pooled synchronous
//! connections. Requests are counted with bounded labels ([`observe`]). The port is served
//! over TLS or plain TCP by [`serve`]. The reference is `docs/operator.md`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::StatusCode;
use axum::middleware;
use axum::routing::{any, get, post};

use tokio_util::sync::CancellationToken;

use crate::config::CoordinatorConfig;
use crate::registry::{Limits, Pool};

pub mod audit;
pub mod auth;
mod cameras;
mod common;
pub mod models;
mod nodes;
pub mod observe;
pub mod serve;
mod views;

pub use audit::{AUDIT_KEY, AuditEntry, AuditList};
pub use auth::{Access, ApiToken, Caller};
pub use cameras::{ApplyRequest, CameraList, CameraWritten};
pub use common::ApiError;
use common::{ApiState, Shared};
pub use nodes::NodeView;
pub use views::{
    Assignments, CameraAssignment, CameraStatus, GroupView, LeaderView, PartitionAssignment,
    PartitionStatus, StatusView,
};

/// How long one Redis call of a handler may take.
const REDIS_TIMEOUT: Duration = Duration::from_secs(3);

/// What the operator API needs.
pub struct ApiContext {
    /// The coordination database (URL, TLS, the coordinator's ACL user): the API's reads
    /// and writes go through the coordinator's Redis user.
    pub redis: crate::config::RedisClientConfig,
    /// Seals camera passwords written to the registry (`None`: passwords are refused).
    pub camera_keys: Option<panoptes_coordinator_client::sealed::Keyring>,
    /// Who may call it ([`Access::from_config`]).
    pub access: Access,
    /// Name of the frames topic (in every region's Kafka).
    pub frames_topic: String,
    /// Partitions per region frames topic; camera partitions are allocated in `[0, n)`.
    pub frames_partitions: i32,
    /// Growing the frames topic past `frames_partitions` (`crate::growth`;
    /// [`crate::growth::FramesGrowth::off`] never grows).
    pub growth: crate::growth::FramesGrowth,
    /// Known region names (a camera's region must be one of them).
    pub regions: Vec<String>,
    /// Largest request body (bytes).
    pub max_body_bytes: usize,
    /// Where the API registers its metrics.
    pub metrics: prometheus::Registry,
}

/// The API's own counters.
struct ApiMetrics {
    requests: prometheus::IntCounterVec,
    auth_failures: prometheus::IntCounterVec,
    audit_failures: prometheus::IntCounter,
    growths: prometheus::IntCounterVec,
}

impl ApiMetrics {
    fn new(registry: &prometheus::Registry) -> Self {
        let requests = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "panoptes_coordinator_api_requests_total",
                "Operator API requests by route template, method (fixed set or other) and status code",
            ),
            &["route", "method", "code"],
        )
        .expect("valid metric");
        let auth_failures = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "panoptes_coordinator_api_auth_failures_total",
                "Operator API requests refused by authentication (missing, invalid) or role (forbidden)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let audit_failures = prometheus::IntCounter::new(
            "panoptes_coordinator_audit_write_failures_total",
            "Audit entries that could not be stored in Redis (they are logged instead)",
        )
        .expect("valid metric");
        let growths = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "panoptes_coordinator_frames_growth_total",
                "Registry writes that needed more frames partitions, by outcome (grown: every region's topic grown; refused: growth off or at its maximum; failed: a region's Kafka refused or did not answer)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(auth_failures.clone()),
            Box::new(audit_failures.clone()),
            Box::new(growths.clone()),
        ] {
            if let Err(e) = registry.register(c) {
                tracing::warn!(error = %e, "could not register an operator API metric");
            }
        }
        Self {
            requests,
            auth_failures,
            audit_failures,
            growths,
        }
    }
}

/// The `/v1` routes, without a model repository (see [`router_with_models`]).
pub fn router(ctx: ApiContext) -> Router {
    router_with_models(ctx, models::ModelsConfig::default())
}

/// The `/v1` routes, the model routes serving `[models]` ([`models`]).
pub fn router_with_models(ctx: ApiContext, models_cfg: models::ModelsConfig) -> Router {
    build(ctx, models_cfg, None)
}

/// The routes; `verdicts`: the coordinator's canary verdict counter, shared with its leader
/// (`None`: the API registers its own).
fn build(
    ctx: ApiContext,
    models_cfg: models::ModelsConfig,
    verdicts: Option<prometheus::IntCounterVec>,
) -> Router {
    if matches!(ctx.access, Access::InsecureNoAuth) {
        tracing::warn!(
            "operator API runs WITHOUT authentication (api.insecure_no_auth, loopback only): development only"
        );
    }
    let m = ApiMetrics::new(&ctx.metrics);
    let state: Shared = Arc::new(ApiState {
        pool: Pool::new(ctx.redis, REDIS_TIMEOUT),
        limits: Limits {
            frames_partitions: ctx.frames_partitions,
            regions: ctx.regions,
            camera_keys: ctx.camera_keys,
        },
        growth: ctx.growth,
        growths: m.growths,
        access: ctx.access,
        frames_topic: ctx.frames_topic,
        requests: m.requests,
        auth_failures: m.auth_failures,
        audit_failures: m.audit_failures,
        models: models::ModelsState::new(models_cfg, &ctx.metrics, verdicts),
    });
    Router::new()
        .route(
            "/v1/cameras",
            get(cameras::list_cameras).post(cameras::create_camera),
        )
        .route(
            "/v1/cameras/{id}",
            get(cameras::get_camera)
                .put(cameras::put_camera)
                .delete(cameras::delete_camera),
        )
        .route("/v1/apply", post(cameras::apply))
        .route("/v1/nodes", get(nodes::nodes))
        .route(
            "/v1/nodes/{kind}/{id}/drain",
            post(nodes::drain).delete(nodes::undrain),
        )
        .route("/v1/assignments", get(views::assignments))
        .route("/v1/status", get(views::status))
        .route("/v1/audit", get(audit::list))
        .route("/v1/models", get(models::list_models))
        .route("/v1/models/{name}/{version}", get(models::get_model))
        .route("/v1/rollouts", get(models::list_rollouts))
        .route("/v1/rollouts/{group}", get(models::get_rollout))
        .route("/v1/rollouts/{group}/promote", post(models::promote))
        .route("/v1/rollouts/{group}/rollback", post(models::rollback))
        .route("/v1/rollouts/{group}/canary", post(models::canary::start))
        .route(
            "/v1/rollouts/{group}/shadow",
            post(models::shadow::start).delete(models::shadow::stop),
        )
        // Unknown /v1 paths answer like the rest of the API (no router-wide fallback: the
        // coordinator merges these routes with its health routes). Authenticated like the
        // rest, so an unauthenticated client learns nothing about which routes exist.
        .route(
            "/v1/{*rest}",
            any(|| async { ApiError(StatusCode::NOT_FOUND, "no such API route".into()) }),
        )
        .layer(DefaultBodyLimit::max(ctx.max_body_bytes))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            observe::count,
        ))
        .with_state(state)
}

/// Builds the operator API from `cfg` (reading every token; refusing to start without one
/// unless insecure on loopback), merges it with `health` (`/healthz`, `/readyz`, `/metrics`)
/// and serves both on `http.listen`, over TLS when `api.tls` has a certificate.
pub async fn start(
    cfg: &CoordinatorConfig,
    health: Router,
    metrics: &crate::metrics::CoordinatorMetrics,
    cancel: CancellationToken,
) -> Result<serve::Server, serve::ServeError> {
    cfg.api.validate(cfg.http.listen)?;
    let access = Access::from_config(&cfg.api)?;
    let ctx = ApiContext {
        redis: cfg.redis.clone(),
        camera_keys: cfg.camera_keys()?,
        access,
        frames_topic: cfg.frames_topic.clone(),
        frames_partitions: cfg.frames_partitions,
        growth: crate::growth::FramesGrowth::new(
            &cfg.frames_topic,
            cfg.frames_partitions,
            &cfg.frames_growth,
            cfg.regions
                .iter()
                .map(|r| (r.name.clone(), r.bootstrap_servers.clone())),
        ),
        regions: cfg.regions.iter().map(|r| r.name.clone()).collect(),
        max_body_bytes: cfg.api.max_body_bytes,
        metrics: metrics.registry.clone(),
    };
    let api = build(
        ctx,
        cfg.models.clone(),
        Some(metrics.canary.verdicts.clone()),
    );
    let opts = serve::ServeOptions {
        listen: cfg.http.listen,
        tls: cfg.api.tls_enabled().then(|| cfg.api.tls.clone()),
        max_connections: cfg.api.max_connections,
        handshake_timeout: cfg.api.handshake_timeout,
    };
    let conn_metrics = serve::ConnMetrics::new(&metrics.registry)?;
    serve::serve(opts, health.merge(api), conn_metrics, cancel).await
}

/// The matched route template of a request (for audit entries of denied writes).
pub(crate) fn route_of(req: &Request) -> String {
    observe::route_label(req)
}
