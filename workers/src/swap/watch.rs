//! The rollout watcher: follows the group's `panoptes:rollout:<group>` record into the node's
//! [`ModelSwitch`].
//!
//! One OS thread (it never blocks the async runtime), with two Redis connections: one
//! subscribed to `panoptes:notify:rollout:<group>`, one for `GET`. It reads the record at
//! start, after every message on the channel, and every [`FALLBACK`] whatever happens (a
//! missed message or a Redis failover costs at most that). A record for another model
//! name, or one that does not parse, is logged once per generation and ignored. Redis
//! unreachable: it retries every second and the running model keeps serving.
//!
//! While the record holds a canary, the watcher also writes the node's
//! [`super::canary::CanaryBook`] every [`REPORT_EVERY`] into the canary's report hash
//! (`panoptes:canary:<group>:<since_generation>`, field = worker id, expiring
//! [`keys::CANARY_REPORT_TTL_S`] after the last write), where the coordinator judges it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use panoptes_coordinator_client::{CoordError, RedisLink, keys};
use panoptes_schemas::model::ModelRollout;

use super::{CandidateRequest, ModelSwitch, Role};

/// Longest time between two reads of the record.
pub const FALLBACK: Duration = Duration::from_secs(2);

/// How often a running canary's figures are written.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// What the lanes follow: the record's active version and candidate (canary or shadow, at its
/// generation), into `switch`; the node's canary book follows the record's canary. Returns
/// whether the request was new.
pub fn follow(switch: &ModelSwitch, r: &ModelRollout) -> bool {
    switch
        .book
        .follow(r.canary.as_ref().map(|c| c.since_generation));
    let canary = r.canary.as_ref().map(|c| CandidateRequest {
        version: c.version.clone(),
        role: Role::Canary(Arc::new(c.cameras.iter().cloned().collect::<BTreeSet<_>>())),
    });
    let shadow = r.shadow.as_ref().map(|s| CandidateRequest {
        version: s.version.clone(),
        role: Role::Shadow(s.percent),
    });
    switch.request(&r.active, canary.or(shadow), r.generation)
}

/// Reads the rollout record of `group` once: `None` when there is none.
pub fn read_rollout(
    conn: &mut redis::Connection,
    group: &str,
) -> Result<Option<ModelRollout>, CoordError> {
    let raw: Option<Vec<u8>> = redis::cmd("GET").arg(keys::rollout(group)).query(conn)?;
    raw.map(|b| ModelRollout::from_json(&b).map_err(CoordError::Invalid))
        .transpose()
}

/// The running watcher; stops (within [`FALLBACK`]) when dropped.
pub struct RolloutWatch {
    stop: Arc<AtomicBool>,
}

impl Drop for RolloutWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl RolloutWatch {
    /// Starts following `group`'s record for model `name` into `switch`; canary figures are
    /// reported under `worker`.
    pub fn start(
        link: RedisLink,
        group: String,
        name: String,
        worker: String,
        switch: ModelSwitch,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::Builder::new()
            .name("rollout-watch".into())
            .spawn(move || {
                let mut ignored = 0u64;
                let me = Watcher {
                    group: &group,
                    name: &name,
                    worker: &worker,
                    switch: &switch,
                    stop: &s,
                };
                while !s.load(Ordering::Acquire) {
                    if let Err(e) = me.session(&link, &mut ignored) {
                        tracing::warn!(error = %e, group, "rollout watcher lost Redis: retrying in 1 s");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            })?;
        Ok(Self { stop })
    }
}

/// One watcher's fixed parts.
struct Watcher<'a> {
    group: &'a str,
    name: &'a str,
    worker: &'a str,
    switch: &'a ModelSwitch,
    stop: &'a AtomicBool,
}

impl Watcher<'_> {
    /// Follows the record over one pair of Redis connections until one fails or `stop`.
    fn session(&self, link: &RedisLink, ignored: &mut u64) -> Result<(), CoordError> {
        let group = self.group;
        let mut conn = link.connect(Duration::from_secs(2))?;
        let mut sub_conn = link.connect(Duration::from_secs(2))?;
        let mut sub = sub_conn.as_pubsub();
        sub.subscribe(keys::rollout_notify(group))?;
        sub.set_read_timeout(Some(REPORT_EVERY))?;
        let mut read_at: Option<std::time::Instant> = None;
        let mut notified = true;
        while !self.stop.load(Ordering::Acquire) {
            if notified || read_at.is_none_or(|t| t.elapsed() >= FALLBACK) {
                read_at = Some(std::time::Instant::now());
                self.read(&mut conn, ignored)?;
            }
            self.report(&mut conn)?;
            notified = match sub.get_message() {
                Ok(_) => true,
                Err(e) if e.is_timeout() => false,
                Err(e) => return Err(e.into()),
            };
        }
        Ok(())
    }

    /// Reads the record and follows it.
    fn read(&self, conn: &mut redis::Connection, ignored: &mut u64) -> Result<(), CoordError> {
        let (group, name) = (self.group, self.name);
        match read_rollout(conn, group) {
            Ok(Some(r)) if r.model == name => {
                if follow(self.switch, &r) {
                    let canary = r.canary.as_ref().map(|c| c.version.as_str());
                    let shadow = r.shadow.as_ref().map(|s| s.version.as_str());
                    tracing::info!(group, model = name, version = %r.active, canary, shadow, generation = r.generation, "rollout record: version requested");
                }
            }
            Ok(Some(r)) => {
                self.switch.book.follow(None);
                if *ignored != r.generation {
                    *ignored = r.generation;
                    tracing::error!(group, model = %r.model, expected = name, "rollout record names another model: ignored");
                }
            }
            Ok(None) => self.switch.book.follow(None),
            Err(CoordError::Invalid(e)) => {
                tracing::error!(group, error = %e, "rollout record unreadable: ignored");
            }
            Err(e) => return Err(e),
        }
        Ok(())
    }

    /// Writes the canary's figures, while one runs.
    fn report(&self, conn: &mut redis::Connection) -> Result<(), CoordError> {
        let now = panoptes_coordinator_client::now_ms();
        let Some((since, report)) = self.switch.book.report(now) else {
            return Ok(());
        };
        let key = keys::canary_report(self.group, since);
        redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg(self.worker)
            .arg(report.to_json())
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(keys::CANARY_REPORT_TTL_S * 1000)
            .ignore()
            .query::<()>(conn)?;
        Ok(())
    }
}
