//! Coordinator mode with real processes: worker processes (`[assignment] source =
//! "coordinator"`, exactly-once) on a real `redis-server` and the development broker, with
//! the test playing the coordinator's leader by hand through the protocol's own Lua
//! (`panoptes_coordinator_client::scripts`: `INCR panoptes:fence` for a token, then `grant`
//! and `retarget`).
//!
//! One run, in phases, on synthetic frames (3 cameras, camera i → frames partition i):
//! 1. partitions 0–2 granted to A; A consumes and commits;
//! 2. partition 0 moved to B gracefully: retarget → A stops intake, finishes, commits and
//!    releases → grant to B at a higher epoch; B starts exactly at A's last committed offset;
//!    nothing lost or duplicated there, and every record after the move carries B's epoch;
//! 3. `kill -9` A; once its lease expired, partitions 1–2 granted to B: B resumes from the
//!    committed offsets, nothing lost; the only duplicates are A's records of the transaction
//!    open at the kill (the mock shows uncommitted transactions; Kafka would hide them);
//! 4. SIGTERM B while C is up: B marks itself draining, the leader retargets B's partitions
//!    to C, B releases each and exits 0, its member record is gone; C carries on.
//!
//! The dev broker does not fence transactional ids, so the application-side epoch checks are
//! what is exercised (see `worker_zombie.rs`).

mod common;

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::node::{Offsets, Rig, Worker, checker, exactly_once, partition_log, settle_and_read};
use panoptes_checker::Checker;
use panoptes_coordinator_client::records::{AssignRecord, MemberKind, MemberRecord, RegionRecord};
use panoptes_coordinator_client::{keys, scripts};
use panoptes_testkit::kafka::{Producing, all_records};
use panoptes_testkit::{DevBroker, RedisServer, Topics, metric_value, unique_name, wait_until};
use panoptes_workers::config::{AssignmentSource, DeliveryMode, StalePolicy, WorkerConfig};

const REGION: &str = "local";
const PARTITIONS: i32 = 3;
const FPS: u64 = 5;
/// How long a worker gets to commit past a change of its partitions.
const CATCH_UP: Duration = Duration::from_secs(20);

/// The leader's side, by hand.
struct Leader {
    conn: redis::Connection,
    token: u64,
    topic: String,
}

impl Leader {
    fn new(redis: &RedisServer, topic: &str, bootstrap: &str) -> Result<Self> {
        let mut conn = redis.connection()?;
        let token: u64 = redis::cmd("INCR").arg(keys::FENCE).query(&mut conn)?;
        let mut leader = Self {
            conn: redis.connection()?,
            token,
            topic: topic.to_string(),
        };
        leader.region(REGION, bootstrap)?;
        Ok(leader)
    }

    /// Records a region's Kafka (what the leader writes under `panoptes:regions`).
    fn region(&mut self, name: &str, bootstrap: &str) -> Result<()> {
        let region = RegionRecord {
            bootstrap_servers: bootstrap.to_string(),
        };
        redis::cmd("HSET")
            .arg(keys::REGIONS)
            .arg(name)
            .arg(serde_json::to_string(&region)?)
            .query::<()>(&mut self.conn)?;
        Ok(())
    }

    fn key(&self, p: i32) -> String {
        keys::partition_assign(REGION, &self.topic, p)
    }

    fn grant(&mut self, p: i32, owner: &str) -> Result<u64> {
        self.grant_in(REGION, p, owner)
    }

    /// Grants each partition of `parts` to `owner`; returns the new epochs.
    fn grant_all(&mut self, parts: Range<i32>, owner: &str) -> Result<BTreeMap<i32, u64>> {
        parts.map(|p| Ok((p, self.grant(p, owner)?))).collect()
    }

    /// Grants partition `p` of `cluster` to `owner` (empty: unassigns it) at a new epoch.
    fn grant_in(&mut self, cluster: &str, p: i32, owner: &str) -> Result<u64> {
        let key = keys::partition_assign(cluster, &self.topic, p);
        let epoch_key = keys::partition_epoch(&self.topic, p);
        Ok(scripts::grant(
            &mut self.conn,
            self.token,
            MemberKind::Worker,
            &key,
            &epoch_key,
            &keys::partition_item(cluster, p),
            owner,
            &[],
        )?)
    }

    fn retarget(&mut self, p: i32, owner: &str, epoch: u64, target: &str) -> Result<()> {
        let key = self.key(p);
        let ok = scripts::retarget(
            &mut self.conn,
            self.token,
            MemberKind::Worker,
            &key,
            owner,
            epoch,
            target,
        )?;
        anyhow::ensure!(ok, "retarget of partition {p} refused");
        Ok(())
    }

    /// The partition's record as the leader sees it: with its owner's release applied
    /// (members record releases in their own hash, never in the record).
    fn record(&mut self, p: i32) -> Result<AssignRecord> {
        let key = self.key(p);
        Ok(scripts::read_assignment(
            &mut self.conn,
            MemberKind::Worker,
            &key,
            &keys::partition_item(REGION, p),
        )?)
    }

    fn member(&mut self, id: &str) -> Result<Option<MemberRecord>> {
        let h: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(keys::member(MemberKind::Worker, id))
            .query(&mut self.conn)?;
        Ok(MemberRecord::from_fields(&h))
    }

    /// Waits (5 s at most) until `check` finds what it wants in worker `id`'s member record
    /// (`None` once gone).
    fn wait_member<T>(
        &mut self,
        what: &str,
        id: &str,
        check: impl Fn(Option<MemberRecord>) -> Option<T>,
    ) -> Result<T> {
        wait_until(what, Duration::from_secs(5), || {
            check(self.member(id).ok().flatten())
        })
    }

    /// Retargets, waits for the owner's release, reads the group's committed offset of the
    /// partition (`committed`), grants to `to`. Returns the new epoch, how long the release
    /// took and the committed offset at the release.
    fn move_gracefully(
        &mut self,
        p: i32,
        from: &str,
        to: &str,
        committed_now: impl Fn() -> Result<i64>,
    ) -> Result<(u64, Duration, i64)> {
        let epoch = self.record(p)?.epoch;
        let asked = Instant::now();
        self.retarget(p, from, epoch, to)?;
        let deadline = asked + Duration::from_secs(15);
        while self.record(p)?.released != Some(epoch) {
            if Instant::now() > deadline {
                bail!("{from} did not release partition {p} at epoch {epoch}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let took = asked.elapsed();
        let offset = committed_now()?;
        Ok((self.grant(p, to)?, took, offset))
    }
}

/// Redis, a rig, the leader (by hand) and the checker (accounting only) of a run in
/// [`REGION`].
fn coordinated_run() -> Result<(RedisServer, Rig, Leader, Checker)> {
    let redis = RedisServer::start()?;
    let rig = Rig::new(PARTITIONS as u32)?;
    let leader = Leader::new(&redis, &rig.t.frames, &rig.broker.bootstrap)?;
    let checker = checker(&rig.broker.bootstrap, &rig.t, Vec::new())?;
    Ok((redis, rig, leader, checker))
}

/// Where the workers of a run live: its broker, topics, consumer group and Redis.
struct Pool<'a> {
    broker: &'a DevBroker,
    t: &'a Topics,
    group: &'a str,
    redis: &'a RedisServer,
}

impl<'a> Pool<'a> {
    fn new(broker: &'a DevBroker, t: &'a Topics, group: &'a str, redis: &'a RedisServer) -> Self {
        Self {
            broker,
            t,
            group,
            redis,
        }
    }

    /// A worker of region [`REGION`] in coordinator mode (lossless, 20 s drain), its capacity
    /// given or (`None`) measured; `tune` sets its delivery.
    fn worker_with(
        &self,
        id: &str,
        capacity: Option<f64>,
        tune: impl FnOnce(&mut WorkerConfig),
    ) -> Result<Worker> {
        let model = &common::models().reference;
        let (bootstrap, redis_url) = (&self.broker.bootstrap, &self.redis.url);
        common::node::start_worker(id, bootstrap, self.t, self.group, model, |c| {
            c.region = REGION.into();
            c.assignment.source = AssignmentSource::Coordinator;
            c.assignment.redis.redis_url = redis_url.clone();
            c.assignment.capacity = capacity;
            c.assignment.drain_timeout = Duration::from_secs(20);
            c.staleness.policy = StalePolicy::Lossless;
            tune(c);
        })
    }

    /// [`Pool::worker_with`] delivering exactly once.
    fn worker(&self, id: &str, capacity: Option<f64>) -> Result<Worker> {
        self.worker_with(id, capacity, exactly_once)
    }
}

#[test]
fn partitions_move_between_workers_at_run_time() -> Result<()> {
    let (redis, Rig { broker, t, group }, mut leader, checker) = coordinated_run()?;
    let pool = Pool::new(&broker, &t, &group, &redis);
    let a = pool.worker("worker-a", Some(40.0))?;
    // B measures its capacity (timed forward passes at max_batch).
    let mut b = pool.worker("worker-b", None)?;
    let b_member = leader.member("worker-b")?.context("B registered")?;
    println!(
        "B registered: capacity {:.1} load units/s (measured), region {}, group {}",
        b_member.capacity, b_member.region, b_member.group
    );
    assert!(b_member.capacity > 0.0);
    assert_eq!(
        leader.member("worker-a")?.context("A registered")?.capacity,
        40.0
    );

    // Phase 1: everything to A.
    let first = leader.grant_all(0..PARTITIONS, "worker-a")?;
    assert!(first.values().all(|&e| e == 1), "{first:?}");
    let producer = Producing::start(&broker.bootstrap, &t.frames, PARTITIONS, FPS);
    let offsets = Offsets::new(&broker.bootstrap, &group, &t.frames, PARTITIONS)?;
    offsets.wait_all_past("A commits on every partition", 5, Duration::from_secs(30))?;
    // The record is rewritten every report interval, and its rates are measured over a
    // window: the first record naming all three items may predate the frames, so wait for
    // one that shows them (5 s at most).
    let a_report = leader.wait_member("A reports its items and their load", "worker-a", |m| {
        m.filter(|m| m.report["items"].as_object().is_some_and(|i| i.len() == 3) && m.load > 0.0)
    })?;
    println!(
        "A's member record: load {}, report {}",
        a_report.load, a_report.report
    );

    // Phase 2: partition 0 moves to B gracefully.
    let committed_of =
        |p: i32| -> Result<i64> { offsets.now()?.get(&p).copied().context("nothing committed") };
    let (epoch_b0, took, released_at) =
        leader.move_gracefully(0, "worker-a", "worker-b", || committed_of(0))?;
    println!(
        "partition 0: A released after {took:?} at offset {released_at}; B holds it at epoch {epoch_b0}"
    );
    assert_eq!(epoch_b0, 2);
    offsets.wait_past(
        "B commits on partition 0",
        0..1,
        |_| released_at + 5,
        CATCH_UP,
    )?;
    let handovers = metric_value(
        &a.metrics(),
        "panoptes_worker_handovers_total{result=\"released\"}",
    );
    assert_eq!(handovers, Some(1.0));
    assert_eq!(
        metric_value(&a.metrics(), "panoptes_worker_partitions_owned"),
        Some(2.0)
    );

    // Phase 3: A dies; once its lease is gone, B takes 1 and 2.
    a.proc.signal("KILL")?;
    let killed = Instant::now();
    leader.wait_member("A's lease expires", "worker-a", |m| {
        m.is_none().then_some(())
    })?;
    let at_kill = offsets.now()?;
    let mut epochs = BTreeMap::from([(0, epoch_b0)]);
    epochs.extend(leader.grant_all(1..PARTITIONS, "worker-b")?);
    offsets.wait_past(
        "B commits past A on 1 and 2",
        1..PARTITIONS,
        |p| at_kill[&p],
        CATCH_UP,
    )?;
    println!(
        "A killed; lease expired and B committing on 1, 2 after {:?}; A's last offsets {at_kill:?}",
        killed.elapsed()
    );

    // Phase 4: C joins, B is asked to leave (SIGTERM) and drains to C.
    let c = pool.worker("worker-c", Some(40.0))?;
    b.proc.signal("TERM")?;
    leader.wait_member("B says it is draining", "worker-b", |m| {
        m.filter(|m| m.state == "draining")
    })?;
    let mut drained_epochs = BTreeMap::new();
    let mut after_drain = BTreeMap::new();
    for p in 0..PARTITIONS {
        let (e, took, offset) =
            leader.move_gracefully(p, "worker-b", "worker-c", || committed_of(p))?;
        println!(
            "drain: B released partition {p} after {took:?} at offset {offset}; C holds it at epoch {e}"
        );
        drained_epochs.insert(p, e);
        after_drain.insert(p, offset);
    }
    let exited_ok = b.proc.terminate(Duration::from_secs(25))?;
    assert!(exited_ok, "B exits 0 after draining: {}", b.proc.log_text());
    assert!(
        leader.member("worker-b")?.is_none(),
        "B's member record is gone"
    );
    offsets.wait_past(
        "C commits on every partition",
        0..PARTITIONS,
        |p| after_drain[&p],
        CATCH_UP,
    )?;

    let produced = producer.finish()?;
    let (report, records) =
        settle_and_read(checker, &broker.bootstrap, &t, Duration::from_secs(60))?;

    // Per partition, in log order: who wrote what at which epoch.
    let mut leftovers = 0u64;
    for p in 0..PARTITIONS {
        let (mine, first_b) = partition_log(&records, p, "worker-b")?;
        let (_, first_c) = partition_log(&records, p, "worker-c")?;
        let (first_b, first_c) = (mine[first_b], mine[first_c]);
        let by = |w: &str| mine.iter().filter(|r| r.worker_id == w).count();
        println!(
            "partition {p}: {} records (A {}, B {}, C {})",
            mine.len(),
            by("worker-a"),
            by("worker-b"),
            by("worker-c")
        );
        for r in &mine {
            match r.worker_id.as_str() {
                "worker-a" => {
                    assert_eq!(r.epoch, 1, "A holds everything at epoch 1");
                    if p > 0 && r.offset >= at_kill[&p] {
                        leftovers += 1;
                    }
                }
                "worker-b" => assert_eq!(r.epoch, epochs[&p], "B's records carry B's epoch"),
                "worker-c" => assert_eq!(r.epoch, drained_epochs[&p]),
                other => bail!("unexpected worker {other}"),
            }
        }
        if p == 0 {
            assert_eq!(first_b.offset, released_at, "B starts where A committed");
            assert!(
                mine.iter()
                    .filter(|r| r.offset >= released_at)
                    .all(|r| r.worker_id != "worker-a"),
                "nothing from A after its release"
            );
        } else {
            assert_eq!(
                first_b.offset, at_kill[&p],
                "B resumes at A's committed offset"
            );
        }
        assert_eq!(
            first_c.offset, after_drain[&p],
            "C resumes where B committed when it released"
        );
        assert!(epochs[&p] > 1 && drained_epochs[&p] > epochs[&p]);
    }
    let total = &report.total;
    println!(
        "produced {produced}; checker: frames {}, lost {}, duplicated {}, superseded {}; A's \
         open-transaction leftovers {leftovers}",
        total.frames, total.lost, total.duplicated, total.superseded
    );
    assert_eq!(total.frames, produced);
    assert_eq!(total.lost, 0, "{:?}", total.lost_examples);
    assert_eq!(total.reordered, 0);
    assert_eq!(
        total.duplicated, leftovers,
        "the only duplicates are A's never-committed transaction at the kill"
    );
    drop((c, redis));
    Ok(())
}

/// Region failover and run-time changes in at-least-once mode: a worker of region `local` is
/// granted the partitions of region `eu`, whose Kafka is another broker. It starts a lane for
/// `eu` on demand (its own consumer and model instance), consumes there and publishes the
/// detections to `eu`'s Kafka; a re-grant at a higher epoch (as after a lost lease) restarts
/// the partition at the new epoch; a partition taken away stops at once and its labelled
/// series go; granted back, it resumes from the committed offset. Nothing is lost
/// (at-least-once: duplicates allowed).
#[test]
fn foreign_cluster_partitions_and_regrants() -> Result<()> {
    let redis = RedisServer::start()?;
    let home = DevBroker::start(1)?;
    let eu = DevBroker::start(1)?;
    let t = home.create_topics(PARTITIONS as u32)?;
    eu.create_topics_named(&t, PARTITIONS as u32)?;
    let group = unique_name("group");
    let mut leader = Leader::new(&redis, &t.frames, &home.bootstrap)?;
    leader.region("eu", &eu.bootstrap)?;
    let checker = checker(&eu.bootstrap, &t, Vec::new())?;
    let pool = Pool::new(&home, &t, &group, &redis);
    let w = pool.worker_with("worker-w", Some(40.0), |c| {
        c.delivery = DeliveryMode::AtLeastOnce;
        c.commit_interval = Duration::from_millis(200);
    })?;
    let producer = Producing::start(&eu.bootstrap, &t.frames, PARTITIONS, FPS);
    for p in 0..PARTITIONS {
        assert_eq!(leader.grant_in("eu", p, "worker-w")?, 1);
    }
    let offsets = Offsets::new(&eu.bootstrap, &group, &t.frames, PARTITIONS)?;
    offsets.wait_all_past(
        "W commits on every eu partition",
        5,
        Duration::from_secs(40),
    )?;
    let m = w.metrics();
    assert_eq!(
        metric_value(&m, "panoptes_worker_partitions_owned"),
        Some(3.0)
    );
    assert!(
        m.contains("panoptes_worker_partition_in_flight{partition=\"eu:1\"}"),
        "{m}"
    );

    // Re-granted at a higher epoch: restarts there.
    let e0 = leader.grant_in("eu", 0, "worker-w")?;
    assert_eq!(e0, 2);
    let at_regrant = offsets.now()?;
    // Taken away: stops at once, its series go.
    let gone = leader.grant_in("eu", 1, "")?;
    wait_until("W stops eu:1", Duration::from_secs(5), || {
        let m = w.metrics();
        (metric_value(&m, "panoptes_worker_partitions_owned") == Some(2.0)
            && !m.contains("partition=\"eu:1\""))
        .then_some(())
    })?;
    std::thread::sleep(Duration::from_secs(1));
    // Granted back: resumes from the committed offset.
    let e1 = leader.grant_in("eu", 1, "worker-w")?;
    assert!(e1 > gone);
    offsets.wait_past(
        "W commits past the changes",
        0..PARTITIONS,
        |p| at_regrant[&p] + 5,
        CATCH_UP,
    )?;

    let produced = producer.finish()?;
    let (report, records) = settle_and_read(checker, &eu.bootstrap, &t, Duration::from_secs(60))?;
    let epochs_of = |p: i32| -> Vec<u64> {
        let mut e: Vec<u64> = records
            .iter()
            .filter(|r| r.partition == p)
            .map(|r| r.epoch)
            .collect();
        e.dedup();
        e
    };
    println!(
        "eu records: {}; epochs in log order: p0 {:?}, p1 {:?}, p2 {:?}",
        records.len(),
        epochs_of(0),
        epochs_of(1),
        epochs_of(2)
    );
    assert!(epochs_of(0).ends_with(&[e0]), "eu:0 ends at epoch {e0}");
    assert!(epochs_of(1).ends_with(&[e1]), "eu:1 ends at epoch {e1}");
    assert!(records.iter().all(|r| r.worker_id == "worker-w"));
    assert!(
        all_records(&home.bootstrap, &t.detections)?.is_empty(),
        "eu's detections stay in eu's Kafka"
    );
    let total = &report.total;
    assert_eq!(total.frames, produced);
    assert_eq!(total.lost, 0, "{:?}", total.lost_examples);
    drop((w, redis));
    Ok(())
}

/// A worker paused past its lease (`SIGSTOP`) is a zombie when it wakes: its partitions were
/// granted to B at higher epochs meanwhile. On `SIGCONT` it finds its lease expired
/// (`panoptes_worker_lease_lost_total` 1), re-registers, sees no grants and stops every
/// partition; its epoch checks refuse any commit. Nothing is lost; A's records after the
/// takeover are discarded by the epoch rule; the only duplicates are A's records of the
/// transaction open at the freeze (the mock shows uncommitted transactions).
#[test]
fn paused_worker_loses_its_lease_and_stops() -> Result<()> {
    let (redis, Rig { broker, t, group }, mut leader, checker) = coordinated_run()?;
    let pool = Pool::new(&broker, &t, &group, &redis);
    let a = pool.worker("worker-a", Some(40.0))?;
    let b = pool.worker("worker-b", Some(40.0))?;
    leader.grant_all(0..PARTITIONS, "worker-a")?;
    let producer = Producing::start(&broker.bootstrap, &t.frames, PARTITIONS, FPS);
    let offsets = Offsets::new(&broker.bootstrap, &group, &t.frames, PARTITIONS)?;
    offsets.wait_all_past("A commits on every partition", 5, Duration::from_secs(30))?;
    a.proc.signal("STOP")?;
    leader.wait_member("A's lease expires", "worker-a", |m| {
        m.is_none().then_some(())
    })?;
    let at_freeze = offsets.now()?;
    let second = leader.grant_all(0..PARTITIONS, "worker-b")?;
    assert!(second.values().all(|&e| e == 2), "{second:?}");
    offsets.wait_past(
        "B commits past A",
        0..PARTITIONS,
        |p| at_freeze[&p],
        CATCH_UP,
    )?;
    a.proc.signal("CONT")?;
    // CI once timed out at 10 s here on a busy machine (cause not pinned down; a thawed
    // worker may first finish a commit it had in flight, bounded at 10 s). What the test
    // checks is that it stops, not how fast.
    wait_until("A stops its partitions", Duration::from_secs(30), || {
        let m = a.metrics();
        (metric_value(&m, "panoptes_worker_lease_lost_total") == Some(1.0)
            && metric_value(&m, "panoptes_worker_partitions_owned") == Some(0.0))
        .then_some(())
    })?;
    assert!(leader.member("worker-a")?.is_some(), "A re-registered");
    std::thread::sleep(Duration::from_secs(2));
    let produced = producer.finish()?;
    let (report, records) =
        settle_and_read(checker, &broker.bootstrap, &t, Duration::from_secs(60))?;
    let mut leftovers = 0;
    for p in 0..PARTITIONS {
        let (mine, first_b) = partition_log(&records, p, "worker-b")?;
        assert_eq!(
            mine[first_b].offset, at_freeze[&p],
            "B resumes at A's last commit"
        );
        for (i, r) in mine.iter().enumerate() {
            if r.worker_id == "worker-a" {
                assert_eq!(r.epoch, 1);
                if i < first_b && r.offset >= at_freeze[&p] {
                    leftovers += 1;
                }
            } else {
                assert_eq!(r.epoch, 2);
            }
        }
    }
    let total = &report.total;
    println!(
        "produced {produced}; lost {}, duplicated {}, superseded {}; A's open-transaction \
         leftovers {leftovers}",
        total.lost, total.duplicated, total.superseded
    );
    assert_eq!(total.frames, produced);
    assert_eq!(total.lost, 0, "{:?}", total.lost_examples);
    assert_eq!(total.duplicated, leftovers);
    let after = offsets.now()?;
    for p in 0..PARTITIONS {
        let last_b = records
            .iter()
            .filter(|r| r.partition == p && r.worker_id == "worker-b")
            .map(|r| r.offset)
            .max()
            .context("B's last record")?;
        assert_eq!(
            after[&p],
            last_b + 1,
            "the group's offset is B's, never A's"
        );
    }
    drop((a, b, redis));
    Ok(())
}
