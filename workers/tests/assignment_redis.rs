//! The Redis assignment source against a real `redis-server`: start-up takes the epochs of
//! owned partitions, the commit check follows the coordinator's records, and a Redis that
//! does not answer fails closed.

use std::time::Duration;

use panoptes_testkit::RedisServer;
use panoptes_workers::assignment::{Assignment, AssignmentError, RedisAssignment};

#[test]
fn follows_redis_and_fails_closed() -> anyhow::Result<()> {
    let redis = RedisServer::start()?;
    let timeout = Duration::from_millis(300);
    redis.set_assignment("local", "frames", 0, "w1", 4)?;
    redis.set_assignment("local", "frames", 1, "w2", 1)?;

    // Partition 1 belongs to someone else; partition 2 has no record.
    for parts in [&[0, 1][..], &[2][..]] {
        let err = RedisAssignment::connect(&redis.url, timeout, "w1", "local", "frames", parts)
            .unwrap_err();
        assert!(matches!(err, AssignmentError::NotOwned { .. }), "{err}");
        assert!(!err.is_retryable());
    }
    let (a, epochs) = RedisAssignment::connect(&redis.url, timeout, "w1", "local", "frames", &[0])?;
    assert_eq!(epochs.into_iter().collect::<Vec<_>>(), vec![(0, 4)]);
    assert!(a.check(0, 4)?);
    assert!(!a.check(0, 3)?);

    // Moved on: new owner, or same owner at a later epoch.
    redis.set_assignment("local", "frames", 0, "w1", 5)?;
    assert!(!a.check(0, 4)?);
    redis.set_assignment("local", "frames", 0, "w2", 4)?;
    assert!(!a.check(0, 4)?);
    assert_eq!(a.epoch(0), None);

    // Redis gone: the check errors (retryable), and is_current says no.
    redis.set_assignment("local", "frames", 0, "w1", 4)?;
    assert!(a.check(0, 4)?);
    drop(redis);
    let err = a.check(0, 4).unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(!a.is_current(0, 4));
    let err = RedisAssignment::connect(
        "redis://127.0.0.1:1/0",
        timeout,
        "w1",
        "local",
        "frames",
        &[0],
    )
    .unwrap_err();
    assert!(err.is_retryable(), "{err}");
    Ok(())
}
