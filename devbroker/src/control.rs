//! The control HTTP API (JSON).
//!
//! | Method and path           | Effect                                               |
//! |---------------------------|------------------------------------------------------|
//! | `GET /healthz`            | 200 `{"status":"ok","bootstrap":"…","brokers":N}`    |
//! | `GET /topics`             | 200 `{"topics":[{"name":"…","partitions":N},…]}`     |
//! | `POST /topics`            | body `{"name":"…","partitions":N}` (and `"max_partitions":M` for a topic that may grow to M through CreatePartitions, with `--grow`): 201 with the topic; 400 bad name or partitions outside 1..=1024 or bad JSON; 409 exists |
//! | `GET /brokers`            | 200 `{"brokers":[{"id":1,"up":true},…]}`             |
//! | `POST /brokers/{id}/down` | take broker `id` down: 200 with the broker list and the registered coordinators (after their moves); 404 unknown id |
//! | `POST /brokers/{id}/up`   | bring broker `id` back up                            |
//! | `POST /down`, `POST /up`  | all brokers at once                                  |
//! | `GET /coordinators`       | 200 `{"coordinators":[{"kind":"group","key":"…","broker":N},…]}`: the registered keys and their coordinating brokers |
//! | `POST /coordinators`      | body `{"group":["…"],"transaction":["…"]}` (either may be left out): register keys whose coordinator is kept on a live broker (see [`crate::coordinators`]); 200 with the list; 400 for an empty key, one over 512 bytes, or more than 4096 keys in all |
//! | `POST /errors/produce`    | body `{"errors":["out_of_order_sequence_number",…]}`: the next Produce requests fail with these, one each (`not_leader_for_partition`, `topic_authorization_failed`, `transport` too); 200 |
//!
//! Every error is a JSON object `{"error":"…"}` with a 4xx or 5xx status.
//! A broker that is down closes its connections and refuses new ones; it keeps its data and
//! its port, and partition leadership does not move; the registered coordinators on it move
//! to a live broker, and back to it when it comes back.

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use crate::cluster::{ClusterError, ClusterHandle};
use crate::coordinators::CoordinatorKind;
use crate::topics::TopicSpec;

/// Body of `POST /topics`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    /// Topic name.
    pub name: String,
    /// Partition count, 1..=1024.
    pub partitions: i64,
    /// Growable up to this many partitions through CreatePartitions (`crate::front::growth`;
    /// the broker must run with `--grow`).
    #[serde(default)]
    pub max_partitions: Option<i64>,
}

/// An error response: status and message, rendered as `{"error": message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        let status = match e {
            ClusterError::UnknownBroker { .. } => StatusCode::NOT_FOUND,
            ClusterError::TopicExists(_) => StatusCode::CONFLICT,
            ClusterError::InvalidTopic(_) | ClusterError::Coordinator(_) => StatusCode::BAD_REQUEST,
            ClusterError::Kafka(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ClusterError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, e.to_string())
    }
}

/// Builds the control API router over a running cluster.
pub fn router(cluster: ClusterHandle) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/topics", get(list_topics).post(create_topic))
        .route("/brokers", get(list_brokers))
        .route("/brokers/{id}/{state}", post(broker_state))
        .route("/down", post(all_down))
        .route("/up", post(all_up))
        .route(
            "/coordinators",
            get(list_coordinators).post(register_coordinators),
        )
        .route("/errors/produce", post(fail_produce))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(cluster)
}

/// Body of `POST /coordinators`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterCoordinators {
    #[serde(default)]
    group: Vec<String>,
    #[serde(default)]
    transaction: Vec<String>,
}

async fn list_coordinators(
    State(c): State<ClusterHandle>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let list = c.coordinate(CoordinatorKind::Group, Vec::new()).await?;
    Ok(Json(json!({ "coordinators": list })))
}

async fn register_coordinators(
    State(c): State<ClusterHandle>,
    body: Result<Json<RegisterCoordinators>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let n = body.group.len() + body.transaction.len();
    if n > crate::coordinators::MAX_KEYS {
        return Err(ClusterError::from(crate::coordinators::RegisterError::TooMany).into());
    }
    c.coordinate(CoordinatorKind::Group, body.group).await?;
    let list = c
        .coordinate(CoordinatorKind::Transaction, body.transaction)
        .await?;
    tracing::info!(keys = n, "coordinator keys registered via control API");
    Ok(Json(json!({ "coordinators": list })))
}

/// Body of `POST /errors/produce`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProduceErrors {
    errors: Vec<crate::cluster::InjectedError>,
}

async fn fail_produce(
    State(c): State<ClusterHandle>,
    body: Result<Json<ProduceErrors>, JsonRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Json(body) = body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    let n = body.errors.len();
    c.fail_produce(body.errors).await?;
    tracing::info!(errors = n, "Produce errors injected via control API");
    Ok(Json(json!({ "injected": n })))
}

async fn healthz(State(c): State<ClusterHandle>) -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "bootstrap": c.bootstrap(), "brokers": c.broker_count() }))
}

async fn list_topics(State(c): State<ClusterHandle>) -> Json<serde_json::Value> {
    Json(json!({ "topics": c.topics() }))
}

async fn create_topic(
    State(c): State<ClusterHandle>,
    body: Result<Json<CreateTopic>, JsonRejection>,
) -> Result<(StatusCode, Json<TopicSpec>), ApiError> {
    let Json(body) = body.map_err(|e| {
        let status = if e.status().is_client_error() {
            e.status()
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, e.body_text())
    })?;
    let spec = TopicSpec::new(body.name, body.partitions).map_err(ClusterError::from)?;
    let replication = c.broker_count().min(3);
    let max = match body.max_partitions {
        None => None,
        Some(_) if !c.growth().is_served() => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "max_partitions needs a broker started with --grow (its fronts answer CreatePartitions)",
            ));
        }
        Some(m) => {
            crate::topics::validate_partitions(m).map_err(ClusterError::from)?;
            if m < i64::from(spec.partitions) {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("max_partitions {m} is below partitions {}", spec.partitions),
                ));
            }
            Some(m as i32)
        }
    };
    match max {
        Some(m) => {
            c.create_growable_topic(&spec.name, spec.partitions, m, replication)
                .await?
        }
        None => {
            c.create_topic(&spec.name, spec.partitions, replication)
                .await?
        }
    }
    tracing::info!(topic = %spec.name, partitions = spec.partitions, "created topic via control API");
    Ok((StatusCode::CREATED, Json(spec)))
}

async fn list_brokers(State(c): State<ClusterHandle>) -> Json<serde_json::Value> {
    Json(json!({ "brokers": c.brokers() }))
}

fn parse_broker_id(c: &ClusterHandle, raw: &str) -> Result<i32, ApiError> {
    raw.parse::<i32>().map_err(|_| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "unknown broker id {raw:?}: brokers are numbered 1..={}",
                c.broker_count()
            ),
        )
    })
}

async fn set_up(
    c: &ClusterHandle,
    broker: Option<i32>,
    up: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    c.set_up(broker, up).await?;
    let which = broker.map_or_else(|| "all".to_owned(), |id| id.to_string());
    tracing::info!(broker = %which, up, "broker state changed via control API");
    let coordinators = c.coordinate(CoordinatorKind::Group, Vec::new()).await?;
    Ok(Json(
        json!({ "brokers": c.brokers(), "coordinators": coordinators }),
    ))
}

/// `POST /brokers/{id}/down` and `POST /brokers/{id}/up`.
async fn broker_state(
    State(c): State<ClusterHandle>,
    Path((id, state)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let up = match state.as_str() {
        "up" => true,
        "down" => false,
        _ => return Err(ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")),
    };
    let id = parse_broker_id(&c, &id)?;
    set_up(&c, Some(id), up).await
}

async fn all_down(State(c): State<ClusterHandle>) -> Result<Json<serde_json::Value>, ApiError> {
    set_up(&c, None, false).await
}

async fn all_up(State(c): State<ClusterHandle>) -> Result<Json<serde_json::Value>, ApiError> {
    set_up(&c, None, true).await
}
