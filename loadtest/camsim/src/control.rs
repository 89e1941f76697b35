//! HTTP fault-control API (axum, JSON).
//!
//! - `GET /cameras` → `[CameraStatus]`; `GET /cameras/{id}` → `CameraStatus`
//! - `POST /cameras/{id}/{stall|drop|stop|resume}` → the camera's `CameraStatus` after the action
//! - `POST /cameras/{id}/{normal|dark|covered|blurred|scene_changed}` → switches the picture
//!   variant (`panoptes_scene::variant`), answers the camera's `CameraStatus`
//! - `POST /formats/{id}` with a [`crate::formats::FormatChange`] (`{"format": "h265",
//!   "width": 320, "height": 240, "fps": 15}`, any subset) → the format camera as served now
//!   ([`crate::formats::FormatStatus`]); a size or rate change applies in the running sessions,
//!   a format change ends them
//! - unknown camera or action → `404 {"error": "..."}`; internal failure → `500 {"error": ...}`

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};

use super::{CamSimCore, Error, FaultAction};

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match self {
            Error::UnknownCamera(_) | Error::UnknownAction(_) => StatusCode::NOT_FOUND,
            Error::Config(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = serde_json::json!({ "error": self.to_string() });
        (status, Json(body)).into_response()
    }
}

/// The control router over the simulator's shared core.
pub(crate) fn router(core: Arc<CamSimCore>) -> Router {
    Router::new()
        .route("/cameras", get(list))
        .route("/cameras/{id}", get(one))
        .route("/cameras/{id}/{action}", post(act))
        .route("/formats/{id}", post(change_format))
        .with_state(core)
}

async fn list(State(core): State<Arc<CamSimCore>>) -> Result<Response, Error> {
    Ok(Json(core.status().await?).into_response())
}

async fn one(
    State(core): State<Arc<CamSimCore>>,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    Ok(Json(core.camera_status(&id).await?).into_response())
}

async fn change_format(
    State(core): State<Arc<CamSimCore>>,
    Path(id): Path<String>,
    Json(change): Json<crate::formats::FormatChange>,
) -> Result<Response, Error> {
    Ok(Json(core.change_format(&id, &change).await?).into_response())
}

async fn act(
    State(core): State<Arc<CamSimCore>>,
    Path((id, action)): Path<(String, String)>,
) -> Result<Response, Error> {
    if let Ok(v) = action.parse::<super::Variant>() {
        return Ok(Json(core.set_variant(&id, v).await?).into_response());
    }
    let action: FaultAction = action.parse()?;
    Ok(Json(core.apply(&id, action).await?).into_response())
}
