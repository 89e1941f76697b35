//! Leader election against a real `redis-server` with real coordinator processes: one leads
//! at a time; a killed leader is replaced within 3 s; a leader paused past its lease is
//! deposed, and the writes it tries after resuming are rejected by the fencing token.

use std::time::{Duration, Instant};

use anyhow::Result;
use panoptes_coordinator::config::CoordinatorConfig;
use panoptes_coordinator_client::{MemberKind, keys, scripts};
use panoptes_testkit::coordinator::config;
use panoptes_testkit::{Coordinator, RedisServer, unique_name, wait_until};

fn spec(id: &str, redis: &RedisServer) -> CoordinatorConfig {
    let mut c = config(id, &redis.url, "127.0.0.1:9", &unique_name("frames"), 8);
    c.leader.ttl = Duration::from_secs(1);
    c
}

fn leader_id(redis: &RedisServer) -> Option<String> {
    let mut c = redis.connection().ok()?;
    redis::cmd("GET").arg(keys::LEADER).query(&mut c).ok()?
}

fn fence(redis: &RedisServer) -> u64 {
    let mut c = redis.connection().expect("redis");
    redis::cmd("GET")
        .arg(keys::FENCE)
        .query::<Option<u64>>(&mut c)
        .expect("GET")
        .unwrap_or(0)
}

#[test]
fn killed_leader_is_replaced_within_three_seconds() -> Result<()> {
    let redis = RedisServer::start()?;
    let mut coords = vec![
        Coordinator::start(&spec("c1", &redis))?,
        Coordinator::start(&spec("c2", &redis))?,
        Coordinator::start(&spec("c3", &redis))?,
    ];
    let first = wait_until("a leader", Duration::from_secs(10), || leader_id(&redis))?;
    std::thread::sleep(Duration::from_millis(500));
    let leading: Vec<&str> = coords
        .iter()
        .filter(|c| c.is_leader())
        .map(|c| c.id.as_str())
        .collect();
    assert_eq!(leading, vec![first.as_str()], "exactly one leader");

    let mut takeovers = Vec::new();
    for round in 0..2 {
        let idx = coords.iter().position(|c| c.is_leader()).expect("a leader");
        let old = coords[idx].id.clone();
        let token_before = fence(&redis);
        let killed = Instant::now();
        coords[idx].child.signal("KILL")?;
        let new = wait_until("a new leader", Duration::from_secs(5), || {
            leader_id(&redis).filter(|l| *l != old)
        })?;
        let took = killed.elapsed();
        takeovers.push(took);
        eprintln!("round {round}: {old} killed, {new} leads after {took:?}");
        assert!(took < Duration::from_secs(3), "takeover took {took:?}");
        assert!(
            fence(&redis) > token_before,
            "a new election raises the fencing token"
        );
        coords.remove(idx);
        let survivor = coords
            .iter()
            .find(|c| c.id == new)
            .expect("new leader is a survivor");
        survivor.wait_leader(Duration::from_secs(2))?;
    }
    eprintln!("takeover times: {takeovers:?}");
    Ok(())
}

#[test]
fn paused_leader_is_fenced_after_resuming() -> Result<()> {
    let redis = RedisServer::start()?;
    let a = Coordinator::start(&spec("a", &redis))?;
    a.wait_leader(Duration::from_secs(10))?;
    let b = Coordinator::start(&spec("b", &redis))?;
    std::thread::sleep(Duration::from_millis(500));
    assert!(!b.is_leader());
    let old_token = fence(&redis);

    a.child.signal("STOP")?;
    let paused = Instant::now();
    b.wait_leader(Duration::from_secs(5))?;
    eprintln!("b leads {:?} after a was paused", paused.elapsed());
    let new_token = fence(&redis);
    assert!(new_token > old_token);

    // The deposed leader's token no longer writes: checked directly on the script...
    let mut c = redis.connection()?;
    let rejected = scripts::grant(
        &mut c,
        old_token,
        MemberKind::Worker,
        &keys::partition_assign("local", "t", 0),
        &keys::partition_epoch("t", 0),
        "local:0",
        "w-zombie",
        &[],
    );
    assert!(
        matches!(
            rejected,
            Err(panoptes_coordinator_client::CoordError::Fenced)
        ),
        "{rejected:?}"
    );
    let owner: Option<String> = redis::cmd("HGET")
        .arg(keys::partition_assign("local", "t", 0))
        .arg("owner")
        .query(&mut c)?;
    assert_eq!(owner, None, "a fenced write changes nothing");

    // ...and by the process itself once it resumes.
    a.child.signal("CONT")?;
    let fenced = wait_until(
        "the resumed leader's writes to be rejected",
        Duration::from_secs(5),
        || {
            a.metric("panoptes_coordinator_fenced_writes_total")
                .filter(|v| *v >= 1.0)
        },
    )?;
    wait_until(
        "the old leader to step down",
        Duration::from_secs(3),
        || (!a.is_leader()).then_some(()),
    )?;
    assert!(b.is_leader(), "the new leader keeps leading");
    assert_eq!(leader_id(&redis).as_deref(), Some("b"));
    let info_id: Option<String> = redis::cmd("HGET")
        .arg(keys::LEADER_INFO)
        .arg("id")
        .query(&mut c)?;
    assert_eq!(info_id.as_deref(), Some("b"));
    assert_eq!(
        fence(&redis),
        new_token,
        "no election happened because of the zombie"
    );
    eprintln!("rejected writes from the resumed leader: {fenced}");
    Ok(())
}
