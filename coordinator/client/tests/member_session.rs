//! Member sessions against a real Redis: a second process with a live member's id is
//! refused at start (naming the id and the other session); a crashed predecessor's lease is
//! waited out; a member whose session was replaced stops (fence closed, grants dropped) and
//! leaves its successor's record alone; an ingest member releases the cameras still granted
//! to a predecessor so they are granted again at a new epoch. Needs `redis-server`.

use std::time::{Duration, Instant};

use anyhow::Result;
use panoptes_coordinator_client::{MemberAgent, MemberConfig, MemberKind, keys};
use panoptes_testkit::{RedisServer, wait_until};
use tokio_util::sync::CancellationToken;

const TTL: Duration = Duration::from_millis(300);

fn member(redis: &RedisServer, kind: MemberKind, id: &str) -> MemberConfig {
    MemberConfig::new(kind, id, &redis.url).timing(TTL, Duration::from_millis(100))
}

#[test]
fn a_second_process_with_a_live_id_is_refused() -> Result<()> {
    let redis = RedisServer::start()?;
    let cancel = CancellationToken::new();
    let (first, thread) =
        MemberAgent::start(member(&redis, MemberKind::Worker, "w1"), cancel.clone())?;
    assert!(first.fence().holds(), "registered: the lease holds");

    let started = Instant::now();
    let err = MemberAgent::start(
        member(&redis, MemberKind::Worker, "w1"),
        CancellationToken::new(),
    )
    .expect_err("a duplicate id is refused");
    let waited = started.elapsed();
    let text = err.to_string();
    eprintln!("refused after {waited:?}: {text}");
    assert!(!err.is_retryable());
    assert!(text.contains("member id \"w1\""), "{text}");
    assert!(text.contains(first.session_id()), "{text}");
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_secs(5));
    // The first one was left alone.
    assert!(first.fence().holds());
    assert_eq!(first.replaced(), None);
    cancel.cancel();
    thread.join().expect("agent thread");
    Ok(())
}

#[test]
fn a_crashed_predecessors_lease_is_waited_out() -> Result<()> {
    let redis = RedisServer::start()?;
    let mut c = redis.connection()?;
    let key = keys::member(MemberKind::Worker, "w2");
    // A predecessor that died without leaving: its lease runs out by itself.
    redis::pipe()
        .hset(&key, "session", "dead0000dead0000")
        .pexpire(&key, 600)
        .query::<()>(&mut c)?;
    let started = Instant::now();
    let cancel = CancellationToken::new();
    let (agent, thread) =
        MemberAgent::start(member(&redis, MemberKind::Worker, "w2"), cancel.clone())?;
    let waited = started.elapsed();
    eprintln!("registered after {waited:?}");
    assert!(waited >= Duration::from_millis(400), "{waited:?}");
    let session: String = redis::cmd("HGET").arg(&key).arg("session").query(&mut c)?;
    assert_eq!(session, agent.session_id());
    cancel.cancel();
    thread.join().expect("agent thread");
    Ok(())
}

#[test]
fn a_replaced_session_stops_and_leaves_its_successor_alone() -> Result<()> {
    let redis = RedisServer::start()?;
    let mut c = redis.connection()?;
    let cancel = CancellationToken::new();
    let (agent, thread) =
        MemberAgent::start(member(&redis, MemberKind::Worker, "w3"), cancel.clone())?;
    let key = keys::member(MemberKind::Worker, "w3");
    // Another process took the id over (this one was paused past its lease).
    redis::cmd("HSET")
        .arg(&key)
        .arg("session")
        .arg("beef0000beef0000")
        .query::<()>(&mut c)?;
    wait_until("the agent to notice", Duration::from_secs(5), || {
        agent.replaced()
    })?;
    assert_eq!(agent.replaced().as_deref(), Some("beef0000beef0000"));
    assert!(!agent.fence().holds(), "a replaced member holds no lease");
    assert!(agent.desired().grants.is_empty());
    cancel.cancel();
    thread.join().expect("agent thread");
    let session: Option<String> = redis::cmd("HGET").arg(&key).arg("session").query(&mut c)?;
    assert_eq!(
        session.as_deref(),
        Some("beef0000beef0000"),
        "the successor's record stays"
    );
    Ok(())
}

#[test]
fn cameras_granted_to_a_predecessor_are_released() -> Result<()> {
    let redis = RedisServer::start()?;
    let mut c = redis.connection()?;
    // A camera granted to "in-1" at epoch 3 (by a leader, before this process started).
    redis::pipe()
        .hset_multiple(
            keys::camera_assign("cam0"),
            &[("owner", "in-1"), ("epoch", "3")],
        )
        .sadd(keys::owned(MemberKind::Ingest, "in-1"), "cam0")
        .query::<()>(&mut c)?;
    let cancel = CancellationToken::new();
    let (agent, thread) =
        MemberAgent::start(member(&redis, MemberKind::Ingest, "in-1"), cancel.clone())?;
    let entry: Option<String> = redis::cmd("HGET")
        .arg(keys::released(MemberKind::Ingest, "in-1"))
        .arg("cam0")
        .query(&mut c)?;
    assert_eq!(
        entry.as_deref(),
        Some("3"),
        "released at its epoch, without a next seq"
    );
    assert!(agent.desired().grants.is_empty(), "not run by this process");
    cancel.cancel();
    thread.join().expect("agent thread");
    Ok(())
}
