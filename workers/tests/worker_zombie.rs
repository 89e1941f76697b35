//! Guarantee 3, "no duplicates from zombies", with real processes and the Redis assignment
//! source: worker A owns every frames partition at epoch 1 (Redis says so); it is frozen
//! (`SIGSTOP`) mid-stream, Redis hands the partitions to worker B at epoch 2, B takes over
//! from the group's committed offsets, then A is thawed (`SIGCONT`). A must notice before
//! its next commit that it was superseded, abort and release; nothing it produces after the
//! takeover may be accepted by the checker's epoch rule, and its offsets must never be
//! committed over B's.
//!
//! The development broker (librdkafka's mock cluster) does **not** fence B's
//! `init_transactions` against A, although both use the same transactional id
//! (`panoptes-worker.<frames topic>.<partition>`): on Kafka, A's producer would be fenced and
//! its open transaction aborted. So this test checks the application-side defence only (the
//! epoch check against Redis before every commit, and the epoch in every record). The mock
//! also shows records of never-committed transactions to `read_committed` readers, so the
//! records A wrote in the transaction that was open when it froze stay visible and are
//! accepted (their epoch was the newest when read); B then processes those frames again.
//! Those, and only those, are the duplicates the checker reports; Kafka hides them.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use common::node::{
    Offsets, Rig, Worker, camera_configs, checker, exactly_once, partition_log, settle_and_read,
    start_ingest, start_worker,
};
use panoptes_scene::camera::CameraConfig;
use panoptes_testkit::Topics;
use panoptes_testkit::{CamSim, RedisServer, metric_value, wait_until};
use panoptes_workers::config::AssignmentSource;

const PARTITIONS: i32 = 3;

/// An exactly-once worker `id` (reference detector) in the rig's group owning partitions
/// 0..3 as long as `redis` says so, checking with it (`check_timeout`) before every commit,
/// committing every `commit_interval` (`None`: the tests' usual 300 ms).
fn redis_worker(
    id: &str,
    rig: &Rig,
    redis: &RedisServer,
    check_timeout: Duration,
    commit_interval: Option<Duration>,
) -> Result<Worker> {
    let Rig { broker, t, group } = rig;
    let model = &common::models().reference;
    start_worker(id, &broker.bootstrap, t, group, model, |c| {
        exactly_once(c);
        c.partitions = (0..PARTITIONS).collect();
        c.assignment.source = AssignmentSource::Redis;
        c.assignment.redis.redis_url = redis.url.clone();
        c.assignment.check_timeout = check_timeout;
        if let Some(every) = commit_interval {
            c.commit_interval = every;
        }
    })
}

/// Redis, a rig, the three cameras simulated, and every frames partition assigned to
/// `worker-a` at epoch 1.
fn a_owns_everything() -> Result<(RedisServer, Rig, Vec<CameraConfig>, CamSim)> {
    let redis = RedisServer::start()?;
    let rig = Rig::new(PARTITIONS as u32)?;
    let cams = camera_configs();
    let sim = CamSim::with_configs(&cams)?;
    assign_all(&redis, &rig.t, "worker-a", 1)?;
    Ok((redis, rig, cams, sim))
}

/// Assigns every frames partition of `t` to `owner` at `epoch` in `redis`.
fn assign_all(redis: &RedisServer, t: &Topics, owner: &str, epoch: u64) -> Result<()> {
    for p in 0..PARTITIONS {
        redis.set_assignment("local", &t.frames, p, owner, epoch)?;
    }
    Ok(())
}
const SUPERSEDED: &str = "panoptes_worker_transactions_aborted_total{reason=\"superseded\"}";

#[test]
fn thawed_zombie_is_superseded() -> Result<()> {
    let (redis, rig, cams, sim) = a_owns_everything()?;
    let Rig { broker, t, group } = &rig;
    let checker = checker(&broker.bootstrap, t, cams)?;
    let check = Duration::from_millis(500);
    // A commits every 2 s, so the freeze below almost always falls between two commits. A
    // freeze inside `commit_transaction` itself lands that commit once A thaws: Kafka would
    // fence A's transactional id when B initialises it, the development broker does not (see
    // the module doc). The worker re-checks its epoch when the first check went stale before
    // the commit call, so only the commit call itself is exposed.
    let a = redis_worker(
        "worker-a",
        &rig,
        &redis,
        check,
        Some(Duration::from_secs(2)),
    )?;
    let mut ingest = start_ingest(&broker.bootstrap, &t.frames, &sim)?;
    let offsets = Offsets::new(&broker.bootstrap, group, &t.frames, PARTITIONS)?;
    offsets.wait_all_past("A commits on every partition", 5, Duration::from_secs(20))?;

    // Freeze A mid-stream, hand its partitions to B.
    a.proc.signal("STOP")?;
    std::thread::sleep(Duration::from_millis(300));
    let at_stop = offsets.now()?;
    println!("committed offsets when A froze: {at_stop:?}");
    assign_all(&redis, t, "worker-b", 2)?;

    // Sample the group's committed offsets from here on: they must never go back.
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (bootstrap, group, topic, stop) = (
            broker.bootstrap.clone(),
            group.clone(),
            t.frames.clone(),
            stop_sampling.clone(),
        );
        std::thread::spawn(move || -> Result<Vec<BTreeMap<i32, i64>>> {
            let offsets = Offsets::new(&bootstrap, &group, &topic, PARTITIONS)?;
            let mut samples = Vec::new();
            while !stop.load(Ordering::Acquire) {
                samples.push(offsets.now()?);
                std::thread::sleep(Duration::from_millis(150));
            }
            Ok(samples)
        })
    };

    let b = redis_worker("worker-b", &rig, &redis, check, None)?;
    offsets.wait_past(
        "B commits past A on every partition",
        0..PARTITIONS,
        |p| at_stop[&p],
        Duration::from_secs(15),
    )?;
    std::thread::sleep(Duration::from_secs(1));

    // Thaw A: it must find out it was superseded before its next commit.
    a.proc.signal("CONT")?;
    let superseded_by_a = wait_until("A aborts as superseded", Duration::from_secs(10), || {
        metric_value(&a.metrics(), SUPERSEDED).filter(|&n| n >= 1.0)
    })?;
    std::thread::sleep(Duration::from_secs(3));
    let superseded_by_a = metric_value(&a.metrics(), SUPERSEDED).unwrap_or(superseded_by_a);
    assert_eq!(metric_value(&b.metrics(), SUPERSEDED).unwrap_or(0.0), 0.0);

    assert!(ingest.proc.terminate(Duration::from_secs(10))?);
    let (report, records) =
        settle_and_read(checker, &broker.bootstrap, t, Duration::from_secs(30))?;
    stop_sampling.store(true, Ordering::Release);
    let samples = sampler.join().expect("sampler thread")?;

    // B's committed offsets only move forward (A's thawed output was never committed).
    for p in 0..PARTITIONS {
        let series: Vec<i64> = samples.iter().filter_map(|s| s.get(&p).copied()).collect();
        assert!(
            series.windows(2).all(|w| w[0] <= w[1]),
            "partition {p}: committed offsets went back: {series:?}"
        );
    }

    // Classify A's records per frames partition, in the order a reader sees them.
    let (mut leftovers, mut zombies, mut by_b) = (0u64, 0u64, 0u64);
    for p in 0..PARTITIONS {
        let (mine, first_b) = partition_log(&records, p, "worker-b")?;
        let b_from = mine[first_b].offset;
        assert_eq!(
            Some(&b_from),
            at_stop.get(&p),
            "partition {p}: B resumes at the offset A committed last"
        );
        for (i, r) in mine.iter().enumerate() {
            match r.worker_id.as_str() {
                "worker-b" => {
                    assert_eq!(r.epoch, 2);
                    by_b += 1;
                }
                "worker-a" => {
                    assert_eq!(r.epoch, 1, "A only ever writes epoch 1");
                    if i > first_b {
                        zombies += 1;
                    } else if r.offset >= b_from {
                        leftovers += 1;
                    }
                }
                other => anyhow::bail!("unexpected worker {other}"),
            }
        }
    }
    let total = &report.total;
    println!(
        "A superseded aborts: {superseded_by_a}; records: {} total, {by_b} by B, {zombies} by A \
         after B took over (checker superseded {}), {leftovers} from A's transaction open at the \
         freeze (mock shows them; duplicates {}); lost {}",
        records.len(),
        total.superseded,
        total.duplicated,
        total.lost
    );
    assert!(superseded_by_a >= 1.0);
    assert!(total.frames >= 60, "{}", total.frames);
    assert_eq!(total.lost, 0, "{:?}", total.lost_examples);
    assert_eq!(
        total.superseded, zombies,
        "every record A wrote after the takeover is discarded"
    );
    assert_eq!(
        total.duplicated, leftovers,
        "only A's never-committed transaction repeats"
    );
    assert!(by_b > 0);
    drop((a, b, redis));
    Ok(())
}

/// Redis goes away mid-stream: the next commit check cannot be answered, so the worker aborts
/// the open transaction (never commits blindly) and stops; the group's offsets stay where the
/// last checked commit left them, for a restart to resume from.
#[test]
fn unreachable_redis_fails_closed() -> Result<()> {
    let (redis, rig, _, sim) = a_owns_everything()?;
    let Rig { broker, t, group } = &rig;
    let check = Duration::from_millis(300);
    let mut a = redis_worker("worker-a", &rig, &redis, check, None)?;
    let _ingest = start_ingest(&broker.bootstrap, &t.frames, &sim)?;
    // Any committed offset (offsets are never negative).
    let offsets = Offsets::new(&broker.bootstrap, group, &t.frames, PARTITIONS)?;
    offsets.wait_all_past("A commits on every partition", -1, Duration::from_secs(20))?;
    drop(redis);
    std::thread::sleep(Duration::from_millis(500));
    let after_kill = offsets.now()?;
    wait_until("A stops", Duration::from_secs(20), || {
        (!a.proc.is_running()).then_some(())
    })?;
    let at_exit = offsets.now()?;
    let log = a.proc.log_text();
    println!("committed after Redis died: {after_kill:?}, at exit: {at_exit:?}");
    assert!(log.contains("assignment check failed"), "{log}");
    assert_eq!(after_kill, at_exit, "nothing committed without Redis");
    Ok(())
}
