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

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use panoptes_runtime::redact::Secret;
use subtle::ConstantTimeEq;

use crate::registry::{Limits, Pool};

mod cameras;
mod common;
mod nodes;
mod views;

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
