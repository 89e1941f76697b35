//! The member driver against a real Redis, with a runner that only records what it is
//! told: a grant runs, a revoke stops, a target is handed over and released (once), a drain
//! ends when nothing is held, and a member that fails closed stops everything once Redis is
//! gone. Needs `redis-server`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use panoptes_coordinator_client::keys;
use panoptes_coordinator_client::{
    Desired, Driver, DriverConfig, Grant, HandoverOutcome, ItemRunner, MemberAgent, MemberConfig,
    MemberKind, Prepared, Report,
};
use panoptes_testkit::RedisServer;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "panoptes.frames";
const ID: &str = "w1";

#[derive(Default)]
struct Fake {
    running: Mutex<BTreeMap<String, u64>>,
    log: Mutex<Vec<String>>,
}

impl Fake {
    fn saw(&self, what: &str) -> bool {
        self.log.lock().iter().any(|l| l == what)
    }
    fn count(&self, what: &str) -> usize {
        self.log.lock().iter().filter(|l| *l == what).count()
    }
}

impl ItemRunner for Fake {
    fn running(&self) -> BTreeMap<String, u64> {
        self.running.lock().clone()
    }
    fn stop(&self, items: &[String]) {
        for i in items {
            self.running.lock().remove(i);
            self.log.lock().push(format!("stop {i}"));
        }
    }
    fn run(&self, grants: &[Grant], _desired: &Desired) {
        for g in grants {
            let prev = self.running.lock().insert(g.item.clone(), g.epoch());
            if prev != Some(g.epoch()) {
                self.log
                    .lock()
                    .push(format!("run {} {}", g.item, g.epoch()));
            }
        }
    }
    fn hand_over(&self, grant: &Grant, ran: bool, _timeout: Duration) -> Prepared {
        self.running.lock().remove(&grant.item);
        self.log
            .lock()
            .push(format!("hand_over {} {ran}", grant.item));
        Prepared::Ready {
            next_seq: None,
            complete: true,
        }
    }
    fn handed_over(&self, grant: &Grant, _ran: bool, outcome: HandoverOutcome) {
        let what = match outcome {
            HandoverOutcome::Released { .. } => "released",
            _ => "not released",
        };
        self.log.lock().push(format!("{what} {}", grant.item));
    }
    fn report(&self, _desired: &Desired) -> Report {
        Report {
            load: self.running.lock().len() as f64,
            ..Report::default()
        }
    }
}

fn start(redis: &RedisServer, cfg: DriverConfig) -> Result<(Driver<Fake>, Arc<Fake>)> {
    let member = MemberConfig::new(MemberKind::Worker, ID, &redis.url)
        .placed("eu", "default", 10.0)
        .timing(Duration::from_secs(1), Duration::from_millis(100));
    let cancel = CancellationToken::new();
    let (agent, thread) = MemberAgent::start(member, cancel.clone())?;
    let fake = Arc::new(Fake::default());
    let driver = Driver::start(agent, cancel, thread, fake.clone(), cfg)?;
    Ok((driver, fake))
}

/// Writes the assignment record of partition `p` in `eu` the way the leader does.
fn grant(redis: &RedisServer, p: i32, epoch: u64, target: Option<&str>) -> Result<()> {
    let mut c = redis.connection()?;
    let key = keys::partition_assign("eu", TOPIC, p);
    let mut fields = vec![("owner", ID.to_string()), ("epoch", epoch.to_string())];
    if let Some(t) = target {
        fields.push(("target", t.to_string()));
    }
    redis::pipe()
        .del(&key)
        .hset_multiple(&key, &fields)
        .sadd(
            keys::owned(MemberKind::Worker, ID),
            keys::partition_item("eu", p),
        )
        .query::<()>(&mut c)?;
    Ok(())
}

fn revoke(redis: &RedisServer, p: i32) -> Result<()> {
    let mut c = redis.connection()?;
    redis::pipe()
        .del(keys::partition_assign("eu", TOPIC, p))
        .srem(
            keys::owned(MemberKind::Worker, ID),
            keys::partition_item("eu", p),
        )
        .query::<()>(&mut c)?;
    Ok(())
}

fn wait(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("timed out waiting for {what}")
}

#[test]
fn grants_run_revokes_stop_targets_are_released_once_and_a_drain_ends() -> Result<()> {
    let redis = RedisServer::start()?;
    let (driver, fake) = start(&redis, DriverConfig::new(Duration::from_secs(1)))?;
    let t = Duration::from_secs(3);

    grant(&redis, 0, 1, None)?;
    grant(&redis, 1, 4, None)?;
    wait("both granted partitions run", t, || {
        fake.saw("run eu:0 1") && fake.saw("run eu:1 4")
    })?;

    revoke(&redis, 1)?;
    wait("the revoked partition stops", t, || fake.saw("stop eu:1"))?;

    grant(&redis, 0, 1, Some("w2"))?;
    wait("the moving partition is released", t, || {
        fake.saw("released eu:0")
    })?;
    assert!(fake.saw("hand_over eu:0 true"), "{:?}", fake.log.lock());
    let mut c = redis.connection()?;
    let rec = panoptes_coordinator_client::scripts::read_assignment(
        &mut c,
        MemberKind::Worker,
        &keys::partition_assign("eu", TOPIC, 0),
        "eu:0",
    )?;
    assert_eq!(
        rec.released,
        Some(1),
        "release recorded at the grant's epoch"
    );
    let raw: Option<String> = redis::cmd("HGET")
        .arg(keys::partition_assign("eu", TOPIC, 0))
        .arg("released")
        .query(&mut c)?;
    assert_eq!(raw, None, "the member never writes the assignment record");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        fake.count("hand_over eu:0 true"),
        1,
        "{:?}",
        fake.log.lock()
    );
    assert!(!fake.saw("stop eu:0"), "handed over, not stopped");

    // Nothing held, running or moving: the drain ends at once, with the member draining.
    assert!(driver.drain(t, || false));
    wait("the member record says draining", t, || {
        let state: Option<String> = redis::cmd("HGET")
            .arg(keys::member(MemberKind::Worker, ID))
            .arg("state")
            .query(&mut c)
            .unwrap_or_default();
        state.as_deref() == Some("draining")
    })?;
    driver.end_membership();
    let exists: bool = redis::cmd("EXISTS")
        .arg(keys::member(MemberKind::Worker, ID))
        .query(&mut c)?;
    assert!(!exists, "the member record goes last");
    Ok(())
}

#[test]
fn a_member_that_fails_closed_stops_everything_without_redis() -> Result<()> {
    let mut redis = RedisServer::start()?;
    let cfg = DriverConfig {
        fail_closed_after: Some(Duration::from_millis(750)),
        ..DriverConfig::new(Duration::from_secs(1))
    };
    let (driver, fake) = start(&redis, cfg)?;
    grant(&redis, 0, 2, None)?;
    wait("the partition runs", Duration::from_secs(3), || {
        fake.saw("run eu:0 2")
    })?;
    let t = Instant::now();
    redis.kill()?;
    wait("everything stops", Duration::from_secs(5), || {
        fake.saw("stop eu:0")
    })?;
    let after = t.elapsed();
    assert!(
        after >= Duration::from_millis(750),
        "stopped after {after:?}"
    );
    assert!(fake.running.lock().is_empty());
    driver.stop();
    Ok(())
}
