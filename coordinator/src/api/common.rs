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
use crate::growth::{self, FramesGrowth, GrowthError};
use crate::registry::{Limits, Pool, RegistryError};

pub(crate) struct ApiState {
    pub(crate) pool: Pool,
    /// The limits from configuration; [`ApiState::limits_now`] adds the grown partitions.
    pub(crate) limits: Limits,
    /// Growing the frames topic when a write needs more partitions (`crate::growth`).
    pub(crate) growth: FramesGrowth,
    /// Growth attempts by outcome (`grown`, `refused`, `failed`).
    pub(crate) growths: prometheus::IntCounterVec,
    pub(crate) access: Access,
    pub(crate) frames_topic: String,
    pub(crate) requests: prometheus::IntCounterVec,
    pub(crate) auth_failures: prometheus::IntCounterVec,
    pub(crate) audit_failures: prometheus::IntCounter,
    pub(crate) models: super::models::ModelsState,
}

pub(crate) type Shared = Arc<ApiState>;

impl ApiState {
    /// The limits a registry write is checked against now: the partition count includes
    /// growth recorded by any coordinator.
    pub(crate) fn limits_now(&self, c: &mut Connection) -> Result<Limits, RegistryError> {
        let mut limits = self.limits.clone();
        limits.frames_partitions = self.growth.current(c)?;
        Ok(limits)
    }
}

impl From<GrowthError> for ApiError {
    fn from(e: GrowthError) -> Self {
        let code = match &e {
            GrowthError::NotAllowed(_) => StatusCode::CONFLICT,
            GrowthError::Kafka { .. } => StatusCode::SERVICE_UNAVAILABLE,
            GrowthError::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if code != StatusCode::CONFLICT {
            tracing::warn!(error = %e, "growing the frames topic failed");
        }
        Self(code, e.to_string())
    }
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
            RegistryError::Conflict(_) | RegistryError::NoFreePartition { .. } => {
                StatusCode::CONFLICT
            }
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
    registry_call(st, f).await.map_err(ApiError::from)
}

/// [`redis_call`] keeping the registry's error.
async fn registry_call<T: Send + 'static>(
    st: &Shared,
    f: impl FnOnce(&mut Connection, &ApiState) -> Result<T, RegistryError> + Send + 'static,
) -> Result<T, RegistryError> {
    let st = st.clone();
    tokio::task::spawn_blocking(move || st.pool.with(|c| f(c, &st)))
        .await
        .map_err(|e| RegistryError::Internal(format!("handler failed: {e}")))?
}

/// Runs a registry write `f` against [`ApiState::limits_now`]; when it needs more partitions
/// than the frames topic has, grows the topic in every region (refused with what to do when
/// growth is off or at its maximum), records the new count, and runs `f` once more.
pub(crate) async fn registry_write<T: Send + 'static>(
    st: &Shared,
    f: impl Fn(&mut Connection, &ApiState, &Limits) -> Result<T, RegistryError> + Send + Sync + 'static,
) -> Result<T, ApiError> {
    let f = Arc::new(f);
    let (have, need) = match attempt(st, f.clone()).await {
        Err(RegistryError::NoFreePartition { have, need, .. }) => (have, need),
        other => return other.map_err(ApiError::from),
    };
    let grown = async {
        st.growth.check(have, need)?;
        st.growth.grow(need).await
    };
    if let Err(e) = grown.await {
        let outcome = match e {
            GrowthError::NotAllowed(_) => "refused",
            _ => "failed",
        };
        st.growths.with_label_values(&[outcome]).inc();
        return Err(e.into());
    }
    st.growths.with_label_values(&["grown"]).inc();
    redis_call(st, move |c, _| Ok(growth::record(c, need)?)).await?;
    tracing::info!(from = have, to = need, "frames topic grown in every region");
    attempt(st, f).await.map_err(ApiError::from)
}

/// One try of a [`registry_write`].
async fn attempt<T, F>(st: &Shared, f: Arc<F>) -> Result<T, RegistryError>
where
    T: Send + 'static,
    F: Fn(&mut Connection, &ApiState, &Limits) -> Result<T, RegistryError> + Send + Sync + 'static,
{
    registry_call(st, move |c, st| {
        let limits = st.limits_now(c)?;
        f(c, st, &limits)
    })
    .await
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
