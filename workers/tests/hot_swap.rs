//! Warm hot swap with real processes: a worker (`[assignment] source = "redis"`, at-least-once,
//! the default delivery mode) on a real `redis-server` and the development broker, running
//! the reference detector from a model repository and following its group's rollout record
//! (`panoptes:rollout:<group>`), which the test writes and publishes as the coordinator's
//! operator API would.
//!
//! One run, in phases, on synthetic frames produced at a steady rate (3 cameras, camera i →
//! frames partition i):
//! 1. steady state on version `1` (the rollout record's `active`, read at start);
//! 2. the record moves to version `2` (generation 2): the worker loads, warms up and switches
//!    without stopping; every camera's records name `1` up to one frame and `2` from the next
//!    on, never back; records keep flowing through the swap (its latency cost, p99 during
//!    swaps over steady state, is measured by `panoptes-bench-shadow` over many swaps);
//! 3. the record names broken candidates in turn (generations 3, 4, 5): a version whose
//!    `model.pt` no longer matches its SHA-256, one that is not TorchScript, one whose output
//!    contradicts its manifest's contract: each is refused (`panoptes_worker_model_swaps_total`
//!    by result) while version `2` keeps producing every record;
//! 4. the checker: nothing lost, nothing duplicated, per-camera order kept.
//!
//! A second run: a canary on `cam0` whose forward pass fails on every real frame (it loads
//! and warms up on zeros): the worker keeps running, ends the canary, reports the candidate
//! refused in its canary report (what makes the coordinator roll it back), and every frame,
//! `cam0`'s included, is answered by the active version: nothing lost.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::node::{Rig, Worker, settle_and_read};
use panoptes_checker::Checker;
use panoptes_coordinator_client::keys;
use panoptes_coordinator_client::models::ModelRepository;
use panoptes_models::variant::{Degradation, generate_variant};
use panoptes_schemas::DetectionRecord;
use panoptes_schemas::model::{CanaryReport, ModelCanary, ModelManifest, ModelRollout};
use panoptes_testkit::kafka::{Producing, now_us};
use panoptes_testkit::{RedisServer, wait_until};
use panoptes_workers::config::{AssignmentSource, StalePolicy};

const REGION: &str = "local";
const GROUP: &str = "hot";
const PARTITIONS: i32 = 3;
const FPS: u64 = 8;
const MODEL: &str = "reference-detector";

/// Pushes `model_pt` as `<MODEL>@<version>` with `manifest` (renamed), as `panoptes models
/// push` does; returns the stored `model.pt`.
fn push(
    repo: &ModelRepository,
    version: &str,
    model_pt: &Path,
    manifest: &ModelManifest,
) -> Result<PathBuf> {
    let mut m = manifest.clone();
    m.name = MODEL.into();
    m.version = version.into();
    m.sha256 = None;
    Ok(repo.push(model_pt, &m)?.model_path)
}

/// SET + PUBLISH of the group's rollout record, as the operator API does.
fn roll_out(redis: &RedisServer, active: &str, previous: &str, generation: u64) -> Result<()> {
    write_record(redis, active, previous, generation, None)
}

/// SET + PUBLISH of a rollout record with an optional canary.
fn write_record(
    redis: &RedisServer,
    active: &str,
    previous: &str,
    generation: u64,
    canary: Option<ModelCanary>,
) -> Result<()> {
    let record = ModelRollout {
        model: MODEL.into(),
        active: active.into(),
        previous: Some(previous.into()),
        generation,
        updated_ms: (now_us() / 1000) as u64,
        canary,
        last_canary: None,
        shadow: None,
    };
    redis.write_rollout(GROUP, &record)
}

/// Settles the checker: every one of `produced` frames answered once, in order; the records.
fn accounted(checker: Checker, rig: &Rig, produced: u64) -> Result<Vec<DetectionRecord>> {
    let (bootstrap, t) = (&rig.broker.bootstrap, &rig.t);
    let (report, records) = settle_and_read(checker, bootstrap, t, Duration::from_secs(60))?;
    let total = &report.total;
    assert_eq!(total.frames, produced, "every frame has its record");
    assert_eq!(total.lost, 0, "{:?}", total.lost_examples);
    assert_eq!(total.duplicated, 0);
    assert_eq!(total.reordered, 0);
    Ok(records)
}

/// The swaps counted with `result` so far.
fn swaps(w: &Worker, result: &str) -> f64 {
    let series = format!("panoptes_worker_model_swaps_total{{result=\"{result}\"}}");
    w.metric(&series).unwrap_or(0.0)
}

/// Waits until the worker counted one more swap with `result` than `before`.
fn wait_swap(w: &Worker, result: &str, before: f64) -> Result<()> {
    wait_until(result, Duration::from_secs(60), || {
        (swaps(w, result) > before).then_some(())
    })
}

/// p99 of the end-to-end latency (ms) of records captured in `[from_us, to_us)`, and how many.
fn p99_ms(records: &[&DetectionRecord], from_us: i64, to_us: i64) -> (f64, usize) {
    let mut ms: Vec<f64> = records
        .iter()
        .filter(|r| (from_us..to_us).contains(&r.capture_time_us))
        .map(|r| (r.published_time_us - r.capture_time_us) as f64 / 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let at = ((n as f64 * 0.99).ceil() as usize).clamp(1, n.max(1)) - 1;
    (ms.get(at).copied().unwrap_or(f64::NAN), n)
}

/// Per camera in capture order: the versions never go back (a run of `from`, then `to`
/// only), and both appear. Returns the capture time of the first `to` record.
fn switched_once(records: &[&DetectionRecord], from: &str, to: &str) -> Result<i64> {
    let mut by_camera: BTreeMap<&str, Vec<&DetectionRecord>> = BTreeMap::new();
    for r in records {
        by_camera.entry(&r.camera_id).or_default().push(r);
    }
    let mut first_new = i64::MAX;
    for (cam, rs) in &mut by_camera {
        rs.sort_by_key(|r| r.seq);
        let versions: Vec<&str> = rs.iter().map(|r| r.model.version.as_str()).collect();
        let cut = versions
            .iter()
            .position(|v| *v == to)
            .context("no new version")?;
        ensure!(cut > 0, "{cam}: never ran {from}");
        ensure!(
            versions[..cut].iter().all(|v| *v == from) && versions[cut..].iter().all(|v| *v == to),
            "{cam}: versions mixed: {versions:?}"
        );
        first_new = first_new.min(rs[cut].capture_time_us);
    }
    Ok(first_new)
}

#[test]
fn hot_swap_under_load_and_broken_candidates_refused() -> Result<()> {
    let redis = RedisServer::start()?;
    let rig = Rig::new(PARTITIONS as u32)?;
    let checker = rig.checker(Vec::new())?;
    let models = common::models();
    let dir = tempfile::tempdir()?;
    let repo = ModelRepository::open(dir.path())?;
    let (reference, manifest) = (&models.reference.model_path, &models.reference.manifest);
    push(&repo, "1", reference, manifest)?;
    push(&repo, "2", reference, manifest)?;
    // Broken candidates: bytes changed after the push; not TorchScript; a raw YOLO output
    // under a manifest that promises post-NMS rows.
    let corrupt = push(&repo, "3-corrupt", reference, manifest)?;
    let mut bytes = std::fs::read(&corrupt)?;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xFF;
    std::fs::write(&corrupt, bytes)?;
    let garbage = dir.path().join("garbage.pt");
    std::fs::write(&garbage, b"not a model")?;
    push(&repo, "4-not-torchscript", &garbage, manifest)?;
    push(&repo, "5-wrong-contract", &models.yolo.model_path, manifest)?;
    roll_out(&redis, "1", "1", 1)?;

    let worker_id = "worker-hot";
    for p in 0..PARTITIONS {
        redis.set_assignment(REGION, &rig.t.frames, p, worker_id, 1)?;
    }
    let (bootstrap, t, group) = (&rig.broker.bootstrap, &rig.t, &rig.group);
    let w = common::node::start_worker(worker_id, bootstrap, t, group, &models.reference, |c| {
        c.region = REGION.into();
        c.group = GROUP.into();
        c.partitions = (0..PARTITIONS).collect();
        c.assignment.source = AssignmentSource::Redis;
        c.assignment.redis.redis_url = redis.url.clone();
        c.staleness.policy = StalePolicy::Lossless;
        c.model.repository = Some(dir.path().to_path_buf());
        c.model.name = Some(MODEL.into());
        c.model.version = None;
    })?;
    let info = "panoptes_worker_model_info{model=\"reference-detector\",version=\"1\"}";
    assert_eq!(w.metric(info), Some(1.0), "starts on the record's version");

    // 1. Steady state.
    let producing = Producing::start(bootstrap, &t.frames, PARTITIONS, FPS);
    std::thread::sleep(Duration::from_secs(12));
    // 2. Blue-green switch to 2.
    let requested_us = now_us();
    roll_out(&redis, "2", "1", 2)?;
    wait_swap(&w, "ok", 0.0)?;
    let switched_us = now_us();
    println!(
        "swap took {} ms from the record's write to the metric",
        (switched_us - requested_us) / 1000
    );
    std::thread::sleep(Duration::from_secs(5));
    // 3. Broken candidates, each refused while 2 keeps serving.
    let broken = [
        ("3-corrupt", "refused_integrity"),
        ("4-not-torchscript", "refused_load"),
        ("5-wrong-contract", "refused_contract"),
    ];
    for (generation, (version, result)) in (3..).zip(broken) {
        roll_out(&redis, version, "2", generation)?;
        wait_swap(&w, result, 0.0)?;
    }
    std::thread::sleep(Duration::from_secs(3));
    let produced = producing.finish()?;
    let info2 = "panoptes_worker_model_info{model=\"reference-detector\",version=\"2\"}";
    assert_eq!(w.metric(info2), Some(1.0));
    assert_eq!(
        w.metric(info),
        None,
        "the replaced version's series is removed"
    );
    assert_eq!(swaps(&w, "ok"), 1.0);

    // 4. Accounting.
    let records = accounted(checker, &rig, produced)?;
    let records: Vec<&DetectionRecord> = records.iter().collect();
    let first_new_us = switched_once(&records, "1", "2")?;
    // The switch happens after the warm-up, on the next frame consumed (within a frame
    // interval or so of the metric moving).
    ensure!(
        (requested_us..=switched_us + 1_000_000).contains(&first_new_us),
        "first record of 2 captured {} ms after the request",
        (first_new_us - requested_us) / 1000
    );
    let (steady, n_steady) = p99_ms(&records, requested_us - 8_000_000, requested_us);
    let (swap, n_swap) = p99_ms(&records, requested_us, switched_us + 2_000_000);
    println!(
        "end-to-end p99: steady {steady:.1} ms over {n_steady} records, swap window \
         {swap:.1} ms over {n_swap} records, ratio {:.2}",
        swap / steady
    );
    // Records kept flowing through the swap. Its latency cost (the issue's "p99 within 1.5×
    // of steady state") is a benchmark figure, over many swaps (`panoptes-bench-shadow`,
    // decision 139): one swap window here holds ~60 records, whose p99 is their maximum.
    assert!(n_steady >= 100 && n_swap >= 30, "{n_steady} / {n_swap}");
    drop(w);
    Ok(())
}

#[test]
fn canary_failing_on_real_frames_is_ended_and_reported_without_a_lost_frame() -> Result<()> {
    let redis = RedisServer::start()?;
    let rig = Rig::new(2)?;
    let checker = rig.checker(Vec::new())?;
    let models = common::models();
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("repository"))?;
    let repo = ModelRepository::open(dir.path().join("repository"))?;
    let (reference, manifest) = (&models.reference.model_path, &models.reference.manifest);
    push(&repo, "1", reference, manifest)?;
    let fails = generate_variant(
        reference,
        manifest,
        &Degradation::FailOnFrames,
        &dir.path().join("fails"),
        Some("2-fails"),
    )?;
    push(&repo, "2-fails", &fails.model_path, &fails.manifest)?;
    roll_out(&redis, "1", "1", 1)?;
    let worker_id = "worker-canary";
    for p in 0..2 {
        redis.set_assignment(REGION, &rig.t.frames, p, worker_id, 1)?;
    }
    let (bootstrap, t, group) = (&rig.broker.bootstrap, &rig.t, &rig.group);
    let w = common::node::start_worker(worker_id, bootstrap, t, group, &models.reference, |c| {
        c.region = REGION.into();
        c.group = GROUP.into();
        c.partitions = vec![0, 1];
        c.assignment.source = AssignmentSource::Redis;
        c.assignment.redis.redis_url = redis.url.clone();
        c.staleness.policy = StalePolicy::Lossless;
        c.model.repository = Some(dir.path().join("repository"));
        c.model.name = Some(MODEL.into());
        c.model.version = None;
    })?;
    let producing = Producing::start(bootstrap, &t.frames, 2, FPS);
    std::thread::sleep(Duration::from_secs(3));
    let canary = ModelCanary {
        version: "2-fails".into(),
        percent: 50,
        cameras: vec!["cam0".into()],
        since_generation: 2,
        started_ms: (now_us() / 1000) as u64,
    };
    write_record(&redis, "1", "1", 2, Some(canary))?;
    // The canary installs (warm-up on zeros passes), then fails on cam0's first frame.
    wait_swap(&w, "failed_canary", 0.0)?;
    let refused = wait_until(
        "the canary report's refusal",
        Duration::from_secs(10),
        || {
            let mut c = redis.connection().ok()?;
            let raw: Vec<u8> = redis::cmd("HGET")
                .arg(keys::canary_report(GROUP, 2))
                .arg(worker_id)
                .query(&mut c)
                .ok()?;
            let report = CanaryReport::from_json(&raw).ok()?;
            report.refused.get("2-fails").cloned()
        },
    )?;
    println!("canary report: refused 2-fails: {refused}");
    ensure!(refused.starts_with("forward pass failed"), "{refused}");
    ensure!(
        !refused.contains('\n') && refused.chars().count() <= 320,
        "one short line: {refused}"
    );
    std::thread::sleep(Duration::from_secs(3));
    let produced = producing.finish()?;
    assert_eq!(swaps(&w, "ok"), 1.0, "the canary had installed");
    assert!(
        w.metric("panoptes_worker_inference_errors_total") >= Some(1.0),
        "the failure is counted"
    );
    let info = "panoptes_worker_model_info{model=\"reference-detector\",version=\"2-fails\"}";
    assert_eq!(
        w.metric(info),
        None,
        "the failed canary's series is removed"
    );

    let records = accounted(checker, &rig, produced)?;
    let versions: BTreeMap<&str, usize> = records.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.model.version.as_str()).or_default() += 1;
        m
    });
    assert_eq!(
        versions.keys().copied().collect::<Vec<_>>(),
        vec!["1"],
        "every record by the active version: {versions:?}"
    );
    drop(w);
    Ok(())
}
