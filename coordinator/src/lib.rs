//! Panoptes coordinator: membership, leader election, load- and region-aware placement of
//! cameras on ingest nodes and of frames partitions on workers, and the operator API.
//!
//! - [`config`]: typed configuration;
//! - [`leader`]: the thread that campaigns for the leader lease and runs placement rounds;
//! - [`state`]: reading the coordination state from Redis;
//! - [`placement`]: the pure placement decisions;
//! - [`reconcile`]: one placement round, written with fenced scripts;
//! - [`canary`]: canary rollouts by share of cameras (choice, criteria, the leader's verdicts);
//! - [`degrade`], [`cost`]: degradation by priority under overload; cost per camera-hour and
//!   packing per worker group;
//! - [`registry`], [`api`]: the camera registry and the operator HTTP API (bearer token);
//! - [`growth`]: growing the frames topic in every region when the registry needs partitions;
//! - [`cli`]: the `panoptes` operator CLI on top of the API;
//! - [`metrics`]: what the coordinator exports.
//!
//! The protocol shared with the nodes is in `panoptes-coordinator-client`; the reference is
//! `docs/coordination-keys.md`, the behaviour is described in `docs/coordinator.md`.

pub mod api;
pub mod canary;
pub mod cli;
pub mod config;
pub mod cost;
pub mod degrade;
pub mod growth;
pub mod leader;
pub mod metrics;
pub mod placement;
pub mod reconcile;
pub mod recovery;
pub mod registry;
pub mod state;
pub mod trace;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use panoptes_runtime::health::{self, Readiness};
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
    /// The operator API could not start (no token, TLS files, port).
    #[error(transparent)]
    Api(#[from] api::serve::ServeError),
}

/// Runs the coordinator until `cancel` fires; a leader resigns its lease on the way out.
pub async fn run(
    config: CoordinatorConfig,
    cancel: CancellationToken,
) -> Result<(), CoordinatorError> {
    config.validate()?;
    // Fail closed before serving anything: the Redis link (TLS files, password) and the
    // camera keyring must be readable.
    let link = panoptes_coordinator_client::RedisLink::open(&config.redis)
        .map_err(|e| config::ConfigInvalid(e.to_string()))?;
    let camera_keys = config.camera_keys()?;
    tracing::info!(redis = %link.describe(), camera_keys = ?camera_keys, "coordination state");
    let cfg = Arc::new(config);
    let metrics = CoordinatorMetrics::new()?;
    let _traces = panoptes_runtime::trace::install(
        &cfg.tracing,
        "panoptes-coordinator",
        &cfg.id,
        &metrics.registry,
        "coordinator",
    )
    .map_err(|e| config::ConfigInvalid(e.to_string()))?;
    let readiness = Readiness::default();
    readiness.set("redis", false, "not connected yet");
    let state = Arc::new(LeaderState::default());

    let http_cancel = CancellationToken::new();
    let health = health::router(metrics.registry.clone(), readiness.clone());
    let server = api::start(&cfg, health, &metrics, http_cancel.clone()).await?;
    let (base_url, http_task) = (server.base_url(), server.task);
    tracing::info!(url = %base_url, id = %cfg.id, "coordinator listening");
    println!("HTTP={base_url}");

    let leader_cancel = CancellationToken::new();
    if let Some(keys) = camera_keys {
        registry::spawn_reseal(link.clone(), keys);
    }
    let leader_thread = leader::spawn(
        cfg.clone(),
        link,
        base_url,
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
