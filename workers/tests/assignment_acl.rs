//! The worker's commit check over Redis with TLS and the worker's own ACL user: it reads the
//! coordinator's records (the epoch check before every commit works), and its credentials
//! cannot move a partition to itself. Needs `redis-server` with TLS.

use std::time::Duration;

use panoptes_coordinator_client::MemberKind;
use panoptes_coordinator_client::acl::Role;
use panoptes_testkit::RedisServer;
use panoptes_workers::assignment::{Assignment, RedisAssignment};

#[test]
fn the_commit_check_works_as_the_workers_user_and_cannot_write_grants() -> anyhow::Result<()> {
    let worker = Role::Member {
        kind: MemberKind::Worker,
        id: Some("w1".into()),
    };
    let redis = RedisServer::start_secured(&[("w1", worker)], false)?;
    // The harness writes as its admin user, standing in for the coordinator.
    redis.set_assignment("local", "frames", 0, "w1", 4)?;
    redis.set_assignment("local", "frames", 1, "w2", 9)?;
    let as_w1 = redis.client_config("w1");
    let t = Duration::from_secs(2);
    let (a, epochs) = RedisAssignment::connect(&as_w1, t, "w1", "local", "frames", &[0])?;
    assert_eq!(epochs.into_iter().collect::<Vec<_>>(), vec![(0, 4)]);
    assert!(a.check(0, 4)?);
    assert!(!a.check(1, 9)?, "partition 1 is w2's");

    // Taking partition 1 with the worker's credentials is refused by Redis.
    let mut c = panoptes_coordinator_client::RedisLink::open(&as_w1)?.connect(t)?;
    let err = redis::cmd("HSET")
        .arg(panoptes_testkit::redis::assignment_key(
            "local", "frames", 1,
        ))
        .arg("owner")
        .arg("w1")
        .query::<i64>(&mut c)
        .unwrap_err();
    assert!(err.to_string().contains("NOPERM"), "{err}");
    assert!(!a.check(1, 9)?, "still w2's");
    Ok(())
}
