//! The rollout watcher: follows the group's `panoptes:rollout:<group>` record into the node's
//! [`ModelSwitch`].
//!
//! One OS thread (it never blocks the async runtime), with two Redis connections: one
//! subscribed to `panoptes:notify:rollout:<group>`, one for `GET`. It reads the record at
//! start, after every message on the channel, and every [`FALLBACK`] whatever happens (a
//! missed message or a Redis failover costs at most that). A record for another model
//! name, or one that does not parse, is logged once per generation and ignored. Redis
//! unreachable: it retries every second and the running model keeps serving.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use panoptes_coordinator_client::{CoordError, RedisLink, keys};
use panoptes_schemas::model::ModelRollout;

use super::ModelSwitch;

/// Longest time between two reads of the record.
pub const FALLBACK: Duration = Duration::from_secs(2);

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
    /// Starts following `group`'s record for model `name` into `switch`.
    pub fn start(
        link: RedisLink,
        group: String,
        name: String,
        switch: ModelSwitch,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        std::thread::Builder::new()
            .name("rollout-watch".into())
            .spawn(move || {
                let mut ignored = 0u64;
                while !s.load(Ordering::Acquire) {
                    if let Err(e) = session(&link, &group, &name, &switch, &s, &mut ignored) {
                        tracing::warn!(error = %e, group, "rollout watcher lost Redis: retrying in 1 s");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            })?;
        Ok(Self { stop })
    }
}

fn session(
    link: &RedisLink,
    group: &str,
    name: &str,
    switch: &ModelSwitch,
    stop: &AtomicBool,
    ignored: &mut u64,
) -> Result<(), CoordError> {
    let mut conn = link.connect(Duration::from_secs(2))?;
    let mut sub_conn = link.connect(Duration::from_secs(2))?;
    let mut sub = sub_conn.as_pubsub();
    sub.subscribe(keys::rollout_notify(group))?;
    sub.set_read_timeout(Some(FALLBACK))?;
    while !stop.load(Ordering::Acquire) {
        match read_rollout(&mut conn, group) {
            Ok(Some(r)) if r.model == name => {
                if switch.request(&r.active, r.generation) {
                    tracing::info!(group, model = name, version = %r.active, generation = r.generation, "rollout record: version requested");
                }
            }
            Ok(Some(r)) => {
                if *ignored != r.generation {
                    *ignored = r.generation;
                    tracing::error!(group, model = %r.model, expected = name, "rollout record names another model: ignored");
                }
            }
            Ok(None) => {}
            Err(CoordError::Invalid(e)) => {
                tracing::error!(group, error = %e, "rollout record unreadable: ignored");
            }
            Err(e) => return Err(e),
        }
        match sub.get_message() {
            Ok(_) => {}
            Err(e) if e.is_timeout() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
