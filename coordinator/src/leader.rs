//! The leader loop: one thread per coordinator that campaigns for the lease, renews it while
//! it leads, and runs a placement round (see [`crate::reconcile`]) every tick or when a member
//! publishes on `panoptes:notify:coordinator`.
//!
//! Every tick a leader first makes a fenced write (its heartbeat in `panoptes:leader:info`).
//! A leader that was paused past its lease therefore learns it was deposed from its very first
//! write after resuming: the write is rejected (`FENCED`), counted, and the coordinator steps
//! down before it plans anything. Every assignment write is fenced the same way.
//!
//! Tokens never go backwards ([`crate::recovery`]): every campaign passes the highest token
//! this process has seen + 1 as the floor and notes the token Redis answers with, leader or
//! not. A leader whose write is fenced while Redis holds no token or a lower one knows that
//! Redis lost its writes (restarted empty, failed over): it counts it, steps down and is
//! elected again above its old token, keeping everything it remembers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use panoptes_coordinator_client::{CoordError, RedisLink, keys, scripts};
use tokio_util::sync::CancellationToken;

use crate::config::CoordinatorConfig;
use crate::metrics::CoordinatorMetrics;
use crate::reconcile::Reconciler;
use crate::recovery::HighWater;

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
/// it, so a follower takes over at once. Fails when `recovery.state_file` is unreadable.
pub fn spawn(
    cfg: Arc<CoordinatorConfig>,
    link: RedisLink,
    http: String,
    metrics: CoordinatorMetrics,
    state: Arc<LeaderState>,
    cancel: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let high = match &cfg.recovery.state_file {
        Some(path) => HighWater::load(path)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?,
        None => HighWater::default(),
    };
    tracing::info!(
        token = high.token(),
        registry_version = high.registry().map(|r| r.version),
        "remembered high-water marks"
    );
    std::thread::Builder::new()
        .name("leader".into())
        .spawn(move || {
            let mut l = LeaderLoop {
                reconciler: Reconciler::new(cfg.clone(), metrics.clone()).with_high_water(high),
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
        // A new connection: Redis may have restarted or failed over; read everything again.
        self.reconciler.resync();
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
                            self.fenced(&mut c, token)?;
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
                None => self.campaign(&mut c, ttl_ms)?,
            }
            if let Some(token) = self.token {
                match self.reconciler.round(&mut c, token) {
                    Ok(()) => {}
                    Err(CoordError::Fenced) => {
                        self.metrics.fenced_writes.inc();
                        self.fenced(&mut c, token)?;
                    }
                    Err(e) => return Err(e),
                }
                self.metrics
                    .round
                    .observe(round_start.elapsed().as_secs_f64());
            }
            self.reconciler.save_marks();
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

    /// One campaign above every token seen; notes the token Redis answers with.
    fn campaign(&mut self, c: &mut redis::Connection, ttl_ms: u64) -> Result<(), CoordError> {
        let floor = self.reconciler.high_water().token_floor();
        let got = scripts::leader_campaign(c, &self.cfg.id, ttl_ms, &self.http, floor)?;
        self.reconciler.high_water().observe_token(got.token);
        if let Some(t) = got.elected {
            self.token = Some(t);
            self.last_renew = Instant::now();
            self.state.token.store(t, Ordering::Relaxed);
            self.state.is_leader.store(true, Ordering::Relaxed);
            self.metrics.is_leader.set(1);
            self.metrics.elections.inc();
            self.reconciler.elected(got.fresh);
            tracing::info!(token = t, id = %self.cfg.id, fresh_redis = got.fresh, "elected leader");
            println!("LEADER={t}");
        }
        Ok(())
    }

    /// A write with `token` was fenced: a newer election happened, or Redis lost the token
    /// (missing or lower: it restarted empty or failed over). Steps down either way.
    fn fenced(&mut self, c: &mut redis::Connection, token: u64) -> Result<(), CoordError> {
        let now: Option<u64> = redis::cmd("GET").arg(keys::FENCE).query(c)?;
        if now.is_none_or(|t| t < token) {
            tracing::warn!(
                token,
                redis_token = now,
                "Redis lost this leader's writes (fencing token missing or lower): re-electing above it"
            );
            self.reconciler.redis_lost_writes();
            self.step_down("redis lost writes");
        } else {
            self.step_down("fenced");
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
