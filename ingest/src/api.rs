//! The node's own HTTP routes (beside `/healthz`, `/readyz`, `/metrics`).
//!
//! `GET /cameras` and `GET /cameras/{id}` report each camera's state, last error and
//! counters. URLs are shown with the password replaced by `***`. Changing the camera set
//! over HTTP is left to the coordinator protocol; in-process, use [`crate::node::IngestNode::apply`].

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::node::IngestNode;

/// Routes for camera status.
pub fn router(node: Arc<IngestNode>) -> Router {
    Router::new()
        .route("/cameras", get(list))
        .route("/cameras/{id}", get(one))
        .with_state(node)
}

async fn list(State(node): State<Arc<IngestNode>>) -> Response {
    axum::Json(node.statuses()).into_response()
}

async fn one(State(node): State<Arc<IngestNode>>, Path(id): Path<String>) -> Response {
    match node.status(&id) {
        Some(s) => axum::Json(s).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({ "error": "no such camera on this node" })),
        )
            .into_response(),
    }
}
