//! The leader loop: one thread per coordinator that campaigns for the lease, renews it while
//! it leads, and runs a placement round (see [`crate::reconcile`]) every tick or when a member
//! publishes on `panoptes:notify:coordinator`.
//!
//! Every tick a leader first makes a fenced write (its heartbeat in `panoptes:leader:info`).
//! A leader that was paused past its lease therefore learns it was deposed from its very first
//! write after resuming: the write is rejected (`FENCED`), counted, and the coordinator steps
//! down before it plans anything. Every assignment write is fenced the same way.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use panoptes_coordinator_client::{CoordError, RedisLink, keys, scripts};
use tokio_util::sync::CancellationToken;

use crate::config::CoordinatorConfig;
use crate::metrics::CoordinatorMetrics;
use crate::reconcile::Reconciler;

/// What the rest of the process may know about leadership.
#[derive(Debug, Default)]
pub struct LeaderState {
    /// Whether this coordinator leads now.
    pub is_leader: AtomicBool,
    /// Its fencing token while it leads.
    pub token: AtomicU64,
    /// Whether the last Redis call succeeded.
    pub redis_ok: AtomicBool,
}

/// Starts the leader thread; it runs until `cancel` fires, then resigns the lease if it holds
/// it, so a follower takes over at once.
pub fn spawn(
    cfg: Arc<CoordinatorConfig>,
    link: RedisLink,
    http: String,
    metrics: CoordinatorMetrics,
    state: Arc<LeaderState>,
    cancel: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("leader".into())
        .spawn(move || {
            let mut l = LeaderLoop {
                reconciler: Reconciler::new(cfg.clone(), metrics.clone()),
                cfg,
                link,
                http,
                metrics,
                state,
                token: None,
                last_renew: Instant::now(),
            };
            while !cancel.is_cancelled() {
                if let Err(e) = l.session(&cancel) {
                    l.state.redis_ok.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, "redis session failed; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            if l.token.is_some()
                && let Ok(mut c) = l.link.connect(Duration::from_secs(1))
            {
                match scripts::leader_resign(&mut c, &l.cfg.id) {
                    Ok(true) => tracing::info!("leader lease resigned"),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(error = %e, "could not resign the leader lease"),
                }
            }
            l.step_down("shutdown");
        })
}

struct LeaderLoop {
    cfg: Arc<CoordinatorConfig>,
    link: RedisLink,
    http: String,
    metrics: CoordinatorMetrics,
    state: Arc<LeaderState>,
    reconciler: Reconciler,
    token: Option<u64>,
    last_renew: Instant,
}

impl LeaderLoop {
    fn session(&mut self, cancel: &CancellationToken) -> Result<(), CoordError> {
        let timeout = (self.cfg.leader.ttl / 3).max(Duration::from_millis(200));
        let mut c = self.link.connect(timeout)?;
        let mut sub_conn = self.link.connect(timeout)?;
        let mut sub = sub_conn.as_pubsub();
        sub.subscribe(keys::NOTIFY_COORDINATOR)?;
        self.state.redis_ok.store(true, Ordering::Relaxed);
        let ttl_ms = self.cfg.leader.ttl.as_millis() as u64;
        let renew_every = self.cfg.leader.ttl / 3;
        while !cancel.is_cancelled() {
            let round_start = Instant::now();
            match self.token {
                Some(token) => {
                    let beat = vec![vec![
                        "HSET".to_string(),
                        keys::LEADER_INFO.to_string(),
                        "tick_ms".to_string(),
                        panoptes_coordinator_client::now_ms().to_string(),
                    ]];
                    match scripts::fenced_batch(&mut c, token, &beat) {
                        Err(CoordError::Fenced) => {
                            self.metrics.fenced_writes.inc();
                            self.step_down("fenced");
                        }
                        Err(e) => return Err(e),
                        Ok(_) => {}
                    }
                    if self.token.is_some() && self.last_renew.elapsed() >= renew_every {
                        if scripts::leader_renew(&mut c, &self.cfg.id, token, ttl_ms)? {
                            self.last_renew = Instant::now();
                        } else {
                            self.step_down("lease lost");
                        }
                    }
                }
                None => {
                    if let Some(t) =
                        scripts::leader_acquire(&mut c, &self.cfg.id, ttl_ms, &self.http)?
                    {
                        self.token = Some(t);
                        self.last_renew = Instant::now();
                        self.state.token.store(t, Ordering::Relaxed);
                        self.state.is_leader.store(true, Ordering::Relaxed);
                        self.metrics.is_leader.set(1);
                        self.metrics.elections.inc();
                        self.reconciler.elected();
                        tracing::info!(token = t, id = %self.cfg.id, "elected leader");
                        println!("LEADER={t}");
                    }
                }
            }
            if let Some(token) = self.token {
                match self.reconciler.round(&mut c, token) {
                    Ok(()) => {}
                    Err(CoordError::Fenced) => {
                        self.metrics.fenced_writes.inc();
                        self.step_down("fenced");
                    }
                    Err(e) => return Err(e),
                }
                self.metrics
                    .round
                    .observe(round_start.elapsed().as_secs_f64());
            }
            let wait = self
                .cfg
                .placement
                .tick
                .saturating_sub(round_start.elapsed())
                .max(Duration::from_millis(5));
            sub.set_read_timeout(Some(wait))?;
            match sub.get_message() {
                Ok(_) => {}
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn step_down(&mut self, why: &str) {
        if self.token.take().is_some() {
            tracing::warn!(reason = why, "no longer the leader");
            println!("FOLLOWER={why}");
        }
        self.state.is_leader.store(false, Ordering::Relaxed);
        self.metrics.is_leader.set(0);
    }
}
