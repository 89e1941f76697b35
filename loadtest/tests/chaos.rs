//! The chaos scenarios at CI scale, one test each, through the library entry point that
//! `panoptes-loadtest chaos --scenario NAME --scale ci` runs. Each starts a whole deployment as
//! real processes, injects its fault, and fails when the checker finds loss, reordering or
//! duplicates not explained by a culprit (a killed or paused worker, or one that gave a run
//! up with its transaction open), or when a recovery exceeded its bound. Reports land in a
//! temporary folder (printed on failure).
//!
//! The scenarios load the 2-core machine heavily: they run one at a time (a lock), whatever
//! the test harness's thread count.

use std::sync::Mutex;

use panoptes_loadtest::chaos::{self, Scale, Verdict};

static SERIAL: Mutex<()> = Mutex::new(());

fn scenario(name: &str) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join(name);
    let started = std::time::Instant::now();
    let report = chaos::run_scenario(name, Scale::Ci, &out).expect("scenario ran");
    eprintln!("{}", report.to_markdown());
    eprintln!(
        "{name}: {:?} in {:.0} s",
        report.verdict,
        started.elapsed().as_secs_f64()
    );
    assert!(out.join("report.json").is_file() && out.join("report.md").is_file());
    if report.verdict != Verdict::Passed {
        let keep = dir.keep();
        panic!(
            "{name}: {:?}: {:?} {:?} (report in {})",
            report.verdict,
            report.skipped,
            report.failures,
            keep.display()
        );
    }
    // Every scenario reports the error budget it burned, measured on every camera.
    let slo = report.slo.as_ref().expect("an error-budget section");
    assert!(
        slo.camera_windows >= report_cameras(&report),
        "{name}: {slo:?}"
    );
    assert!(slo.records > 0, "{name}: {slo:?}");
}

/// Cameras of the scenario's run, as its checker counted them (one window each at least).
fn report_cameras(report: &chaos::ScenarioReport) -> u64 {
    report
        .regions
        .values()
        .map(|r| r.checker.cameras.len() as u64)
        .sum()
}

#[test]
fn worker_kill() {
    scenario("worker-kill");
}

#[test]
fn worker_pause() {
    scenario("worker-pause");
}

#[test]
fn ingest_kill() {
    scenario("ingest-kill");
}

#[test]
fn leader_kill() {
    scenario("leader-kill");
}

#[test]
fn redis_restart() {
    scenario("redis-restart");
}

#[test]
fn redis_restart_empty() {
    scenario("redis-restart-empty");
}

/// The outage of broker 1, the workers' group coordinator and a frames partition leader on
/// the development broker, stands for both broker scenarios in CI: it takes every path
/// `broker-down` takes (a partition leader away, coordinators moved) plus wedged transaction
/// calls given up at a new epoch, for ~3 s more than `broker-down` alone (CI time is short).
#[test]
fn broker_down_coordinator() {
    scenario("broker-down-coordinator");
}

#[test]
fn camera_flap() {
    scenario("camera-flap");
}

#[test]
fn network() {
    scenario("network");
}
