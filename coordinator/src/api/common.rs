//! What every handler of the operator API shares: the state behind the routes, the error
//! answer and its mapping from [`RegistryError`], the blocking Redis call, body parsing.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use panoptes_runtime::redact::redact_text;
use redis::Connection;
use serde::Serialize;
use serde_json::json;

use super::auth::Access;
use crate::registry::{Limits, Pool, RegistryError};

pub(crate) struct ApiState {
    pub(crate) pool: Pool,
    pub(crate) limits: Limits,
    pub(crate) access: Access,
    pub(crate) frames_topic: String,
    pub(crate) requests: prometheus::IntCounterVec,
    pub(crate) auth_failures: prometheus::IntCounterVec,
    pub(crate) audit_failures: prometheus::IntCounter,
    pub(crate) models: super::models::ModelsState,
}

pub(crate) type Shared = Arc<ApiState>;

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

pub(crate) type ApiResult = Result<Response, ApiError>;

/// Runs `f` with a pooled Redis connection on a blocking thread.
pub(crate) async fn redis_call<T: Send + 'static>(
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
pub(crate) fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("request body: {}", redact_text(&e.to_string())),
        )
    })
}

pub(crate) fn ok(code: StatusCode, v: impl Serialize) -> ApiResult {
    Ok((code, axum::Json(v)).into_response())
}
