//! Epochs that never go backwards (design guarantee 7) with real coordinator processes, a
//! real `redis-server` restarted without persistence (it comes back empty), and one ingest
//! and one worker member (`MemberAgent`, as the nodes run it):
//!
//! 1. the leader survives the loss: it notices (its token is gone), is elected again above
//!    its old token, restores the camera registry from its copy at a higher version, and
//!    grants the camera and its partition again at higher epochs;
//! 2. a new coordinator that reads the first one's state file, on a Redis emptied again,
//!    does the same from the file;
//! 3. a new coordinator with neither copy nor state file, only the declarative camera file,
//!    learns the epochs from the members' reports and grants above them.

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use panoptes_coordinator::config::CoordinatorConfig;
use panoptes_coordinator_client::keys;
use panoptes_testkit::coordinator::config;
use panoptes_testkit::{Coordinator, RedisServer, unique_name, wait_until};
use tokio_util::sync::CancellationToken;

use common::members::start_i1_and_w1;

const CAM: &str = "cam-epochs";
const PART: i32 = 0;

/// What Redis holds for the camera, its partition, the fence and the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Marks {
    token: u64,
    camera: u64,
    partition: u64,
    version: u64,
    cameras: u64,
}

fn marks(redis: &RedisServer, topic: &str) -> Result<Marks> {
    let mut c = redis.connection()?;
    let epoch = |c: &mut redis::Connection, key: String| -> Result<u64> {
        let e: Option<u64> = redis::cmd("HGET").arg(key).arg("epoch").query(c)?;
        Ok(e.unwrap_or(0))
    };
    let get = |c: &mut redis::Connection, key: &str| -> Result<u64> {
        let v: Option<u64> = redis::cmd("GET").arg(key).query(c)?;
        Ok(v.unwrap_or(0))
    };
    Ok(Marks {
        token: get(&mut c, keys::FENCE)?,
        camera: epoch(&mut c, keys::camera_assign(CAM))?,
        partition: epoch(&mut c, keys::partition_assign("local", topic, PART))?,
        version: get(&mut c, keys::CAMERAS_VERSION)?,
        cameras: redis::cmd("HLEN").arg(keys::CAMERAS).query(&mut c)?,
    })
}

/// Waits until Redis holds the camera granted at epochs above `old`'s, the registry back
/// and a token above `old`'s; prints how long that took and returns the new marks.
fn wait_above(redis: &RedisServer, topic: &str, old: Marks, what: &str) -> Result<Marks> {
    let t = std::time::Instant::now();
    let m = wait_until(what, Duration::from_secs(15), || {
        marks(redis, topic).ok().filter(|m| {
            m.cameras == 1
                && m.token > old.token
                && m.camera > old.camera
                && m.partition > old.partition
        })
    })?;
    eprintln!(
        "{what}: grants above the lost epochs, {m:?}, after {:?}",
        t.elapsed()
    );
    Ok(m)
}

fn coordinator(id: &str, redis: &RedisServer, topic: &str) -> CoordinatorConfig {
    let mut c = config(id, &redis.url, "127.0.0.1:9", topic, 4);
    c.leader.ttl = Duration::from_secs(1);
    c
}

fn write_camera_file(dir: &Path) -> Result<std::path::PathBuf> {
    let path = dir.join("cameras.yaml");
    std::fs::write(
        &path,
        format!(
            "cameras:\n  - id: {CAM}\n    url: rtsp://127.0.0.1:1/cam\n    partition: {PART}\n"
        ),
    )?;
    Ok(path)
}

/// Kills the coordinator `c` (SIGKILL) and empties Redis (`FLUSHALL`).
fn kill_and_empty(c: Coordinator, redis: &RedisServer) -> Result<()> {
    c.child.signal("KILL")?;
    drop(c);
    redis::cmd("FLUSHALL").query::<()>(&mut redis.connection()?)?;
    Ok(())
}

#[test]
fn epochs_tokens_and_the_registry_survive_an_empty_redis() -> Result<()> {
    let mut redis = RedisServer::start()?;
    let topic = unique_name("frames");
    let dir = tempfile::tempdir()?;
    let state_file = dir.path().join("coordinator-state.json");
    let mut cfg = coordinator("c1", &redis, &topic);
    cfg.recovery.state_file = Some(state_file.clone());
    let c1 = Coordinator::start(&cfg)?;
    c1.wait_leader(Duration::from_secs(10))?;
    c1.add_camera(&serde_json::json!({
        "id": CAM, "url": "rtsp://127.0.0.1:1/cam", "partition": PART
    }))?;
    let cancel = CancellationToken::new();
    let threads = start_i1_and_w1(&redis, &topic, &cancel)?;
    let start = Marks {
        token: 0,
        camera: 0,
        partition: 0,
        version: 0,
        cameras: 0,
    };
    let m0 = wait_above(&redis, &topic, start, "the first grants")?;

    // 1. Redis restarts empty under a living leader.
    redis.kill()?;
    redis.restart()?;
    let m1 = wait_above(&redis, &topic, m0, "same leader")?;
    assert!(
        m1.version > m0.version,
        "registry version went back: {m1:?}"
    );
    assert!(c1.metric("panoptes_coordinator_redis_lost_writes_total") >= Some(1.0));
    let restored = c1.metric("panoptes_coordinator_registry_restores_total{source=\"copy\"}");
    assert_eq!(restored, Some(1.0));

    // 2. The leader dies and Redis is emptied again: its successor reads its state file.
    kill_and_empty(c1, &redis)?;
    let c2 = Coordinator::start(&cfg)?;
    let m2 = wait_above(&redis, &topic, m1, "state file")?;
    assert!(
        m2.version > m1.version,
        "registry version went back: {m2:?}"
    );

    // 3. Again, and the successor has no state file, only the declarative camera file: the
    //    epochs come from the members' reports.
    kill_and_empty(c2, &redis)?;
    let mut cfg3 = coordinator("c3", &redis, &topic);
    cfg3.recovery.camera_file = Some(write_camera_file(dir.path())?);
    let c3 = Coordinator::start(&cfg3)?;
    let m3 = wait_above(&redis, &topic, m2, "member reports")?;
    assert_eq!(
        m3.version, 1,
        "the camera file applied to an empty registry"
    );
    assert_eq!(
        c3.metric("panoptes_coordinator_registry_restores_total{source=\"camera_file\"}"),
        Some(1.0)
    );
    assert_eq!(
        c3.metric("panoptes_coordinator_reseed_holds_total"),
        Some(1.0),
        "grants waited for the members' reports"
    );
    cancel.cancel();
    for t in threads {
        t.join().ok().context("member thread")?;
    }
    Ok(())
}
