//! Epochs and fencing tokens that never go backwards, against a real `redis-server` that
//! loses everything (`FLUSHALL`: what a restart without persistence leaves): the election and
//! grant scripts honour the caller's floor, a fresh Redis starts tokens at the wall clock, a
//! counter behind its record is overtaken, a lost registry is restored only when it is
//! really gone, and a member keeps reporting the epochs it held across the loss.

use std::time::Duration;

use anyhow::{Context, Result};
use panoptes_coordinator_client::records::{HELD_FIELD, parse_held};
use panoptes_coordinator_client::scripts::{self, ItemKeys};
use panoptes_coordinator_client::{
    CoordError, MemberAgent, MemberConfig, MemberKind, keys, now_ms,
};
use panoptes_testkit::{RedisServer, wait_until};
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "panoptes.frames";

fn flushall(c: &mut redis::Connection) -> Result<()> {
    redis::cmd("FLUSHALL").query::<()>(c)?;
    Ok(())
}

/// A fresh `redis-server`, a connection to it, and the token of `c1` elected on it.
fn elected() -> Result<(RedisServer, redis::Connection, u64)> {
    let redis = RedisServer::start()?;
    let mut c = redis.connection()?;
    let got = scripts::leader_campaign(&mut c, "c1", 60_000, "", 0)?;
    let token = got.elected.context("c1 not elected")?;
    Ok((redis, c, token))
}

fn grant(
    c: &mut redis::Connection,
    token: u64,
    part: i32,
    owner: &str,
    floor: u64,
) -> Result<u64, CoordError> {
    let assign = keys::partition_assign("local", TOPIC, part);
    let epoch = keys::partition_epoch(TOPIC, part);
    let at = ItemKeys {
        assign: &assign,
        epoch: &epoch,
    };
    let item = keys::partition_item("local", part);
    scripts::grant_above(c, token, MemberKind::Worker, at, &item, owner, floor, &[])
}

#[test]
fn tokens_and_epochs_stay_above_what_redis_forgot() -> Result<()> {
    let redis = RedisServer::start()?;
    let mut c = redis.connection()?;
    let before = now_ms();
    let first = scripts::leader_campaign(&mut c, "c1", 60_000, "", 0)?;
    assert!(first.fresh, "{first:?}");
    let t1 = first.elected.expect("elected on an empty Redis");
    assert!(
        t1 >= before,
        "a fresh Redis starts tokens at the clock: {t1} < {before}"
    );
    let follower = scripts::leader_campaign(&mut c, "c2", 60_000, "", 0)?;
    assert_eq!(
        (follower.elected, follower.token, follower.fresh),
        (None, t1, false),
        "a follower learns the current token"
    );
    assert!(scripts::leader_renew(&mut c, "c1", t1, 60_000)?);
    assert_eq!(grant(&mut c, t1, 0, "w1", 0)?, 1);
    assert_eq!(grant(&mut c, t1, 0, "w2", 0)?, 2);

    flushall(&mut c)?;
    assert!(
        matches!(grant(&mut c, t1, 0, "w1", 3), Err(CoordError::Fenced)),
        "a token Redis forgot writes nothing"
    );
    let again = scripts::leader_campaign(&mut c, "c1", 60_000, "", t1 + 1)?;
    assert!(again.fresh);
    let t2 = again.elected.expect("re-elected");
    assert!(t2 > t1, "token {t2} after the loss is not above {t1}");
    assert_eq!(
        grant(&mut c, t2, 1, "w1", 0)?,
        1,
        "no floor: the counter restarts"
    );
    assert_eq!(
        grant(&mut c, t2, 0, "w1", 3)?,
        3,
        "the floor re-seeds the counter"
    );
    assert_eq!(
        grant(&mut c, t2, 0, "w2", 0)?,
        4,
        "and the counter goes on from it"
    );

    // A failover that kept the record but lost the counter's last increments.
    redis::cmd("SET")
        .arg(keys::partition_epoch(TOPIC, 0))
        .arg(1)
        .query::<()>(&mut c)?;
    assert_eq!(
        grant(&mut c, t2, 0, "w1", 0)?,
        5,
        "above the record's epoch"
    );

    // A failover that lost the token's last election: the old token is lower than ours.
    redis::cmd("SET")
        .arg(keys::FENCE)
        .arg(t2 - 1)
        .query::<()>(&mut c)?;
    redis::cmd("DEL").arg(keys::LEADER).query::<()>(&mut c)?;
    let t3 = scripts::leader_campaign(&mut c, "c2", 60_000, "", t2 + 1)?;
    assert_eq!((t3.elected, t3.fresh), (Some(t2 + 1), false));
    Ok(())
}

#[test]
fn a_lost_registry_is_restored_only_when_it_is_gone() -> Result<()> {
    let (_redis, mut c, token) = elected()?;
    let copy = [
        ("cam-a".to_string(), r#"{"id":"cam-a"}"#.to_string()),
        ("cam-b".to_string(), r#"{"id":"cam-b"}"#.to_string()),
    ]
    .into();
    assert_eq!(scripts::restore_registry(&mut c, token, 8, &copy)?, Some(2));
    let version: u64 = redis::cmd("GET").arg(keys::CAMERAS_VERSION).query(&mut c)?;
    let stored: std::collections::BTreeMap<String, String> =
        redis::cmd("HGETALL").arg(keys::CAMERAS).query(&mut c)?;
    assert_eq!((version, &stored), (8, &copy));

    // An operator emptied the registry (the version stays): nothing is restored.
    redis::cmd("DEL").arg(keys::CAMERAS).query::<()>(&mut c)?;
    assert_eq!(scripts::restore_registry(&mut c, token, 9, &copy)?, None);
    let n: u64 = redis::cmd("HLEN").arg(keys::CAMERAS).query(&mut c)?;
    assert_eq!(n, 0);
    assert!(matches!(
        scripts::restore_registry(&mut c, token + 1, 9, &copy),
        Err(CoordError::Fenced)
    ));
    Ok(())
}

#[test]
fn a_member_reports_the_epochs_it_held_across_a_loss() -> Result<()> {
    let (redis, mut c, token) = elected()?;
    let cfg = MemberConfig::new(MemberKind::Worker, "w1", &redis.url)
        .timing(Duration::from_secs(1), Duration::from_millis(100));
    let cancel = CancellationToken::new();
    let (agent, thread) = MemberAgent::start(cfg, cancel.clone())?;
    for _ in 0..3 {
        grant(&mut c, token, 2, "w1", 0)?;
    }
    let held = |c: &mut redis::Connection| -> Option<u64> {
        let h: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(keys::member(MemberKind::Worker, "w1"))
            .query(c)
            .ok()?;
        h.contains_key(HELD_FIELD)
            .then(|| parse_held(&h).get("local:2").copied())
            .flatten()
    };
    wait_until("w1 to report epoch 3", Duration::from_secs(5), || {
        held(&mut c).filter(|e| *e == 3)
    })?;
    flushall(&mut c)?;
    wait_until(
        "w1 to re-register, still reporting epoch 3",
        Duration::from_secs(5),
        || held(&mut c).filter(|e| *e == 3),
    )?;
    wait_until(
        "the grant Redis forgot to be dropped",
        Duration::from_secs(5),
        || agent.desired().grants.is_empty().then_some(()),
    )?;
    cancel.cancel();
    thread.join().expect("member thread");
    Ok(())
}
