//! The HTTP server every Panoptes process runs: `/healthz`, `/readyz` and `/metrics`.
//!
//! Liveness (`/healthz`) only says the process answers. Readiness (`/readyz`) is the AND of
//! named checks that the component sets as it goes ("kafka", "model", ...), so an operator
//! sees which one is failing. `/metrics` renders the component's own explicit Prometheus
//! registry. Components add their own routes by merging a router into [`router`]'s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::{Encoder, Registry, TextEncoder};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One readiness check's last known result.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CheckState {
    /// Whether this check currently passes.
    pub ok: bool,
    /// A short human-readable reason, e.g. the last error.
    pub detail: String,
}

/// Named readiness checks; the process is ready when there is at least one and all pass.
#[derive(Debug, Clone, Default)]
pub struct Readiness {
    checks: Arc<RwLock<BTreeMap<String, CheckState>>>,
}

impl Readiness {
    /// Records the result of check `name`.
    pub fn set(&self, name: &str, ok: bool, detail: impl Into<String>) {
        let mut checks = self.checks.write().unwrap_or_else(|e| e.into_inner());
        checks.insert(
            name.to_string(),
            CheckState {
                ok,
                detail: detail.into(),
            },
        );
    }

    /// True when every registered check passes (and there is at least one).
    pub fn is_ready(&self) -> bool {
        let checks = self.checks.read().unwrap_or_else(|e| e.into_inner());
        !checks.is_empty() && checks.values().all(|c| c.ok)
    }

    /// A copy of all checks, for reporting.
    pub fn snapshot(&self) -> BTreeMap<String, CheckState> {
        self.checks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

#[derive(Clone)]
struct HealthState {
    registry: Registry,
    readiness: Readiness,
}

/// The router with `/healthz`, `/readyz` and `/metrics`; merge component routes into it.
/// `/metrics` also carries the standard `process_*` metrics (registered here in `registry`,
/// once), so every node that serves its registry exports them.
pub fn router(registry: Registry, readiness: Readiness) -> Router {
    if let Err(e) = crate::metrics::register_process_metrics(&registry) {
        // A name clash with a component's own metric: a bug, but no reason not to serve.
        tracing::warn!(error = %e, "process metrics not registered");
    }
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(HealthState {
            registry,
            readiness,
        })
}

async fn readyz(State(state): State<HealthState>) -> Response {
    let ready = state.readiness.is_ready();
    let body = serde_json::json!({ "ready": ready, "checks": state.readiness.snapshot() });
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<HealthState>) -> Response {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&state.registry.gather(), &mut buf) {
        Ok(()) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], buf).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Binds `addr` and serves `router` until `cancel` fires. Returns the bound address (useful
/// with port 0) and the server task.
pub async fn serve(
    addr: SocketAddr,
    router: Router,
    cancel: CancellationToken,
) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        let shutdown = cancel.cancelled_owned();
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
    Ok((local, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_all_checks() {
        let r = Readiness::default();
        assert!(!r.is_ready(), "no checks yet means not ready");
        r.set("kafka", true, "");
        assert!(r.is_ready());
        r.set("model", false, "loading");
        assert!(!r.is_ready());
        r.set("model", true, "");
        assert!(r.is_ready());
    }

    #[tokio::test]
    async fn serves_health_ready_and_metrics() {
        let registry = Registry::new();
        let c = prometheus::IntCounter::new("panoptes_test_total", "test").unwrap();
        registry.register(Box::new(c.clone())).unwrap();
        c.inc();
        let readiness = Readiness::default();
        let cancel = CancellationToken::new();
        let (addr, task) = serve(
            "127.0.0.1:0".parse().unwrap(),
            router(registry, readiness.clone()),
            cancel.clone(),
        )
        .await
        .unwrap();
        let base = format!("http://{addr}");
        let client = reqwest::Client::new();
        let get = |path: &str| client.get(format!("{base}{path}")).send();
        assert_eq!(get("/healthz").await.unwrap().status(), 200);
        assert_eq!(get("/readyz").await.unwrap().status(), 503);
        readiness.set("kafka", true, "connected");
        assert_eq!(get("/readyz").await.unwrap().status(), 200);
        let text = get("/metrics").await.unwrap().text().await.unwrap();
        assert!(text.contains("panoptes_test_total 1"), "{text}");
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        cancel.cancel();
        task.await.unwrap();
    }
}
