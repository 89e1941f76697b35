//! The Redis scenarios: `redis-restart` (Redis restarted with its append-only file) and
//! `redis-restart-empty` (restarted without persistence: everything in it is lost, and
//! epochs, the fencing token and the registry must come back above what they were).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use panoptes_coordinator_client::keys;

use super::super::ScenarioReport;
use super::super::harness::Run;
use super::{P, start};

const REDIS_BOUND: Duration = Duration::from_secs(10);

pub(super) fn redis_restart(p: &P, out: &Path, report: &mut ScenarioReport) -> Result<()> {
    report.description = format!(
        "Redis (every lease, assignment and the camera registry) is killed with kill -9 and a \
         new redis-server is started on the same port 1 s later, loading its append-only file \
         (persistence turned on before the fault, fsync on every write): a real restart, \
         nothing re-registered by the scenario. Members re-register, the leader re-creates \
         what expired. A member process that exits meanwhile is restarted, as a supervisor \
         would (listed in the notes). Recovery = restart → detections of every camera flowing \
         again, bound {} ms.",
        REDIS_BOUND.as_millis()
    );
    let mut run = start(report, out, p.spec(), &["ingest-0"], p.workers, None)?;
    let dir = tempfile::tempdir()?;
    run.stack.redis.enable_persistence(dir.path())?;
    run.note(format!(
        "Redis persistence on: appendonly yes, appendfsync always, dir {}",
        dir.path().display()
    ));
    for _ in 0..p.repeats {
        run.hold(p.before);
        let workers_before = run.worker_ids();
        run.stack.redis.kill()?;
        run.mark("kill -9 redis-server");
        std::thread::sleep(Duration::from_secs(1));
        run.stack.redis.restart()?;
        let t = run.mark("redis-server started again on the same port (AOF loaded)");
        let cams_stored: u64 = {
            let mut c = run.stack.redis.connection()?;
            redis::cmd("HLEN")
                .arg(keys::CAMERAS)
                .query(&mut c)
                .unwrap_or(0)
        };
        if cams_stored as usize != p.cameras {
            run.fail(format!(
                "camera registry after the restart holds {cams_stored} cameras, not {}",
                p.cameras
            ));
        } else {
            run.note(format!(
                "camera registry intact after the restart ({cams_stored} cameras)"
            ));
        }
        detections_after_restart(&mut run, t, &workers_before)?;
    }
    run.hold(p.after);
    for r in run.supervise()? {
        run.mark(&format!("supervisor restarted {r}"));
    }
    run.finish()
}

/// After Redis came back at `t`: restarts exited members (as a supervisor would) until every
/// camera has detections again (≤ 30 s), records each camera's recovery, and names the
/// workers of `workers_before` that had to be restarted culprits.
fn detections_after_restart(
    run: &mut Run,
    t: u64,
    workers_before: &BTreeSet<String>,
) -> Result<()> {
    let cams = run.camera_ids();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = BTreeMap::new();
    while Instant::now() < deadline {
        for r in run.supervise()? {
            run.mark(&format!("supervisor restarted {r}"));
        }
        got = run.wait_cameras_detections(&cams, t, Duration::ZERO);
        if got.values().all(Option::is_some) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for (c, ms) in got {
        run.recovery(
            format!("camera {c} detections after the restart"),
            ms,
            REDIS_BOUND,
        );
    }
    // A worker that stopped itself on losing Redis aborted its open transaction; on the
    // development broker those aborted records are visible like a killed worker's.
    for w in workers_before {
        if run.report.faults.iter().any(|f| {
            f.label
                .starts_with(&format!("supervisor restarted worker {w} "))
        }) {
            run.report.culprits.insert(w.clone());
        }
    }
    Ok(())
}

/// The fencing token and every assignment record's epoch (cameras and partitions).
#[derive(Debug, Clone, Default)]
struct EpochMarks {
    token: u64,
    epochs: BTreeMap<String, u64>,
    cameras: usize,
}

fn epoch_marks(run: &Run) -> Result<EpochMarks> {
    let mut c = run.stack.redis.connection()?;
    let token: Option<u64> = redis::cmd("GET").arg(keys::FENCE).query(&mut c)?;
    let mut epochs = BTreeMap::new();
    for pattern in ["panoptes:assign:*", "panoptes:camassign:*"] {
        let found: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut c)?;
        for k in found {
            let e: Option<u64> = redis::cmd("HGET").arg(&k).arg("epoch").query(&mut c)?;
            epochs.insert(k, e.unwrap_or(0));
        }
    }
    let cameras: usize = redis::cmd("HLEN").arg(keys::CAMERAS).query(&mut c)?;
    Ok(EpochMarks {
        token: token.unwrap_or(0),
        epochs,
        cameras,
    })
}

pub(super) fn redis_restart_empty(p: &P, out: &Path, report: &mut ScenarioReport) -> Result<()> {
    report.description = format!(
        "Redis is killed with kill -9 and a new redis-server is started on the same port 1 s \
         later WITHOUT persistence: it comes back empty (no leases, assignments, epoch \
         counters, fencing token, nor camera registry). The leader notices (its token is \
         gone), is elected again above its old token, restores the registry from its copy at \
         a higher version and grants every camera and partition again above the epochs it \
         remembers; members re-register; a member process that exits meanwhile is restarted, \
         as a supervisor would. Checked: the registry holds every camera again, the fencing \
         token and every assignment epoch end above their values before the loss (≤ 15 s), \
         and no detection record is superseded (a reader keeping the highest epoch per \
         partition drops none of the new owners' output). Recovery = restart → detections of \
         every camera flowing again, bound {} ms.",
        REDIS_BOUND.as_millis()
    );
    let mut run = start(report, out, p.spec(), &["ingest-0"], p.workers, None)?;
    for _ in 0..p.repeats {
        run.hold(p.before);
        let workers_before = run.worker_ids();
        let before = epoch_marks(&run)?;
        // The loss revokes every partition at once: each owner aborts its open transaction,
        // and on the development broker aborted records are visible to read_committed
        // readers (Kafka hides them), as for a killed worker.
        let owners: Vec<String> = run.stack.partitions_by_worker()?.into_keys().collect();
        run.note(format!(
            "workers owning partitions at the loss (their aborted transactions explain \
             duplicates): {owners:?}"
        ));
        run.report.culprits.extend(owners);
        run.stack.redis.kill()?;
        run.mark("kill -9 redis-server");
        std::thread::sleep(Duration::from_secs(1));
        run.stack.redis.restart()?;
        let t = run.mark("redis-server started again on the same port, empty (no persistence)");
        detections_after_restart(&mut run, t, &workers_before)?;
        epochs_above(&mut run, &before)?;
    }
    run.hold(p.after);
    for r in run.supervise()? {
        run.mark(&format!("supervisor restarted {r}"));
    }
    run.finish()?;
    let superseded = super::superseded(report);
    if superseded > 0 {
        report.failures.push(format!(
            "{superseded} detection records superseded: a reader keeping the highest epoch \
             dropped them (epochs went backwards, or a zombie wrote)"
        ));
    } else {
        report
            .notes
            .push("no detection record superseded (checker epoch rule)".into());
    }
    Ok(())
}

/// Waits (≤ 15 s) until the registry holds as many cameras as `before`, the fencing token
/// is above `before`'s and every assignment record of `before` is back above its epoch;
/// notes the figures, or fails the run.
fn epochs_above(run: &mut Run, before: &EpochMarks) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let (mut now, mut behind) = (EpochMarks::default(), Vec::new());
    while Instant::now() < deadline {
        now = epoch_marks(run)?;
        behind = before
            .epochs
            .iter()
            .filter(|(k, e)| now.epochs.get(*k).is_none_or(|n| n <= *e))
            .map(|(k, e)| format!("{k}: {e} -> {:?}", now.epochs.get(k)))
            .collect();
        if behind.is_empty() && now.token > before.token && now.cameras == before.cameras {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let max = |m: &EpochMarks| m.epochs.values().copied().max().unwrap_or(0);
    let figures = format!(
        "fencing token {} -> {}; {} assignment records, highest epoch {} -> {}; registry {} -> {} cameras",
        before.token,
        now.token,
        before.epochs.len(),
        max(before),
        max(&now),
        before.cameras,
        now.cameras
    );
    if behind.is_empty() && now.token > before.token && now.cameras == before.cameras {
        run.note(format!("after the empty restart: {figures}"));
    } else {
        run.fail(format!(
            "after the empty restart: {figures}; records not above their old epoch: {behind:?}"
        ));
    }
    Ok(())
}
