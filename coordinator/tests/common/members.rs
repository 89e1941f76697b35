//! Lightweight members for the coordinator's tests: the real lease/report protocol of
//! `MemberAgent`, no media.

use std::thread::JoinHandle;
use std::time::Duration;

use panoptes_coordinator_client::{MemberAgent, MemberConfig, MemberKind};
use panoptes_testkit::RedisServer;
use tokio_util::sync::CancellationToken;

/// A member in region `local`, group `default`, capacity 100, with a 1 s lease renewed every
/// 100 ms, reading `topic`.
pub fn member(kind: MemberKind, id: &str, redis: &RedisServer, topic: &str) -> MemberConfig {
    let mut m = MemberConfig::new(kind, id, &redis.url)
        .placed("local", "default", 100.0)
        .timing(Duration::from_secs(1), Duration::from_millis(100));
    m.frames_topic = topic.to_string();
    m
}

/// Starts ingest member `i1` and worker `w1` until `cancel`; their threads.
pub fn start_i1_and_w1(
    redis: &RedisServer,
    topic: &str,
    cancel: &CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::new();
    for (kind, id) in [(MemberKind::Ingest, "i1"), (MemberKind::Worker, "w1")] {
        let (_agent, t) = MemberAgent::start(member(kind, id, redis, topic), cancel.clone())?;
        threads.push(t);
    }
    Ok(threads)
}
