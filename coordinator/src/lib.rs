//! Panoptes coordinator: membership, leader election, load- and region-aware placement of
//! cameras on ingest nodes and of frames partitions on workers, and the operator API.
//!
//! - [`config`]: typed configuration;
//! - [`leader`]: the thread that campaigns for the leader lease and runs placement rounds;
//! - [`state`]: reading the coordination state from Redis;
//! - [`placement`]: the pure placement decisions;
//! - [`reconcile`]: one placement round, written with fenced scripts;
//! - [`registry`], [`api`]: the camera registry and the operator HTTP API (bearer token);
//! - [`cli`]: the `panoptes` operator CLI on top of the API;
//! - [`metrics`]: what the coordinator exports.
//!
//! The protocol shared with the nodes is in `panoptes-coordinator-client`; the reference is
//! `docs/coordination-keys.md`, the behaviour is described in `docs/coordinator.md`.

pub mod api;
pub mod cli;
pub mod config;
pub mod leader;
pub mod metrics;
pub mod placement;
pub mod reconcile;
pub mod registry;
pub mod state;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use panoptes_runtime::health::{self, Readiness};
use panoptes_runtime::redact::Secret;
use tokio_util::sync::CancellationToken;

use crate::config::CoordinatorConfig;
use crate::leader::LeaderState;
use crate::metrics::CoordinatorMetrics;

/// Why the coordinator could not start. All fatal.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] config::ConfigInvalid),
    /// Metrics registration failed (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The HTTP port could not be bound or the leader thread could not start.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Runs the coordinator until `cancel` fires; a leader resigns its lease on the way out.
pub async fn run(
    config: CoordinatorConfig,
    cancel: CancellationToken,
) -> Result<(), CoordinatorError> {
    config.validate()?;
    let token = config.api_token()?;
    let cfg = Arc::new(config);
    let metrics = CoordinatorMetrics::new()?;
    let readiness = Readiness::default();
    readiness.set("redis", false, "not connected yet");
    let state = Arc::new(LeaderState::default());

    let api = api::router(api::ApiContext {
        redis_url: cfg.redis.redis_url.clone(),
        token: token.map(Secret::new),
        frames_topic: cfg.frames_topic.clone(),
        frames_partitions: cfg.frames_partitions,
        regions: cfg.regions.iter().map(|r| r.name.clone()).collect(),
        metrics: metrics.registry.clone(),
    });
    let http_cancel = CancellationToken::new();
    let router = health::router(metrics.registry.clone(), readiness.clone()).merge(api);
    let (addr, http_task) = health::serve(cfg.http.listen, router, http_cancel.clone()).await?;
    tracing::info!(%addr, id = %cfg.id, "coordinator listening");
    println!("HTTP=http://{addr}");

    let leader_cancel = CancellationToken::new();
    let leader_thread = leader::spawn(
        cfg.clone(),
        format!("http://{addr}"),
        metrics.clone(),
        state.clone(),
        leader_cancel.clone(),
    )?;

    loop {
        let ok = state.redis_ok.load(Ordering::Relaxed);
        readiness.set("redis", ok, if ok { "connected" } else { "unreachable" });
        let leads = state.is_leader.load(Ordering::Relaxed);
        readiness.set("election", true, if leads { "leader" } else { "follower" });
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
    tracing::info!("stopping");
    leader_cancel.cancel();
    let _ = tokio::task::spawn_blocking(move || leader_thread.join()).await;
    http_cancel.cancel();
    let _ = http_task.await;
    tracing::info!("coordinator stopped");
    Ok(())
}
