//! A model's life end to end, through the real processes an operator runs: `panoptes-models`
//! (golden set, a degraded variant), `panoptes models push`, `panoptes-model-validate
//! --write`, the coordinator's promotion gate (`panoptes models promote`), and a worker in
//! coordinator mode on real Redis, broker, camera simulator and ingest node following its
//! group's rollout record.
//!
//! 1. A golden set, the reference detector and a variant that never reports cars, pushed into
//!    a repository; the reference again as version 1.1.0 (same bytes, its own manifest).
//! 2. Each version validated on the CPU (`--write` stores the result in its manifest).
//! 3. The gate (`[models]` of the coordinator's typed config: `min_recall` 0.85, between the
//!    variant's measured recall and the reference's, with a margin the test checks): the
//!    variant is refused with 409 and a reason naming recall, nothing is rolled out; the
//!    reference (1.0.0) is accepted.
//! 4. A worker of group `default` configured with the repository and the model name only
//!    starts on the rollout's version; promoting 1.1.0 switches every camera's records to
//!    1.1.0 within [`SWITCH_WITHIN`], `rollback` brings 1.0.0 back as fast; per camera, in
//!    sequence order, the records name 1.0.0, then 1.1.0, then 1.0.0, never mixed.
//! 5. Canaries at 25 % of the 4 cameras (`panoptes models canary`), judged by the coordinator
//!    from the worker's per-version figures (`[models.canary]`, short windows for a test): a
//!    3× slower variant (it passes the gate: its latency is within this test's budget) is
//!    rolled back automatically within [`VERDICT_WITHIN`] with a reason naming latency, its
//!    camera back on 1.0.0; then 1.1.0 (the reference again) is promoted automatically once
//!    it was observed long enough, and every camera runs it. Only the canary's camera ever
//!    names the slow variant.
//! 6. Shadows (`panoptes models shadow`, [`SHADOW_PERCENT`] % of frames): 1.0.0 beside the
//!    active 1.1.0 (the same weights) agrees fully on every class; the variant that never
//!    reports cars (refused by the gate, but a shadow's output reaches no consumer) agrees
//!    on persons and bicycles and not at all on cars; both publish to the shadow topic, and
//!    every primary record still names 1.1.0. Stopping the shadow removes its agreement
//!    series. The checker finds nothing lost, duplicated or reordered over the whole run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use panoptes_coordinator::api::models::ModelsConfig;
use panoptes_coordinator::canary::CanaryCriteria;
use panoptes_loadtest::stack::{Stack, StackCamera, StackSpec, Watching};
use panoptes_loadtest::watch::{SeenDetection, Watch, wall_ms};
use panoptes_schemas::model::{ModelManifest, ValidationResult};
use panoptes_testkit::coordinator::TEST_TOKEN;
use panoptes_testkit::{bin_path, wait_until};
use panoptes_testkit_stack::stack::generate_models;

const MODEL: &str = "reference-detector";
const V1: &str = "1.0.0";
const V2: &str = "1.1.0";
const DROPPED: &str = "car";
const NO_CAR: &str = "1.0.0-no-car";
const SLOW: &str = "1.0.0-slow3";
const GROUP: &str = "default";
/// Golden frames (≈ 180 objects; cars are about a third of them).
const GOLDEN_FRAMES: &str = "40";
const MIN_PRECISION: f64 = 0.9;
/// The reference finds ≥ 0.95 of the objects, the variant about 0.68.
const MIN_RECALL: f64 = 0.85;
/// Measured figures must clear the gate's thresholds by this much either way.
const MARGIN: f64 = 0.05;
/// The CPU forward pass of the reference at batch 4 takes tens of ms; latency is not what
/// this test's gate decides on.
const MAX_LATENCY_MS: f64 = 10_000.0;
/// 25 % of them is exactly one camera.
const CAMERAS: usize = 4;
const CANARY_PERCENT: &str = "25";
/// From a canary request to the coordinator's verdict in the record: the slow variant's
/// rollback (20 canary frames at 5 fps, reports and judgement every second) and the good
/// candidate's promotion ([`OBSERVE`] plus as much).
const VERDICT_WITHIN: Duration = Duration::from_secs(25);
/// How long a passing canary is observed before its promotion, in this test.
const OBSERVE: Duration = Duration::from_secs(8);
/// Share of frames a shadow infers again.
const SHADOW_PERCENT: &str = "50";
/// Frames each shadow infers before its agreement is read.
const SHADOW_FRAMES: f64 = 30.0;
const FPS: u32 = 5;
/// The bound on a rollout: from the promote (or rollback) request to a record naming the new
/// version for every camera.
const SWITCH_WITHIN: Duration = Duration::from_secs(10);

/// Runs a workspace binary; its output whatever the exit status.
fn run(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
    let mut cmd = Command::new(bin_path(bin));
    for var in [
        "PANOPTES_API_TOKEN",
        "PANOPTES_API_TOKEN_FILE",
        "PANOPTES_URL",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied())
        .args(args)
        .output()
        .with_context(|| format!("running {bin}"))
}

/// Runs a workspace binary that must succeed; its stdout.
fn ok(bin: &str, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let out = run(bin, args, env)?;
    ensure!(
        out.status.success(),
        "{bin} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn utf8(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

/// The repository with the reference as [`V1`] and [`V2`] and the variants as [`NO_CAR`] and
/// [`SLOW`], and the golden set's folder.
fn prepare(work: &Path, repo: &Path) -> Result<PathBuf> {
    let models = generate_models()?;
    let reference = models.path().join(format!("{MODEL}.pt"));
    let manifest = models.path().join(format!("{MODEL}.json"));
    let (golden, variant) = (work.join("golden"), work.join("variant"));
    let printed = ok(
        "panoptes-models",
        &["golden", "--out", utf8(&golden)?, "--frames", GOLDEN_FRAMES],
        &[],
    )?;
    eprint!("{printed}");
    let (from, out) = (utf8(&reference)?, utf8(&variant)?);
    let args = [
        "variant",
        "--from",
        from,
        "--out",
        out,
        "--drop-class",
        DROPPED,
    ];
    eprint!("{}", ok("panoptes-models", &args, &[])?);
    let slow = work.join("slow");
    let args = [
        "variant",
        "--from",
        from,
        "--out",
        utf8(&slow)?,
        "--slow-factor",
        "3",
    ];
    eprint!("{}", ok("panoptes-models", &args, &[])?);
    // The same TorchScript under a second version: a manifest of its own.
    let mut m: ModelManifest = serde_json::from_slice(&std::fs::read(&manifest)?)?;
    m.version = V2.into();
    let manifest_v2 = work.join("v2.json");
    std::fs::write(&manifest_v2, serde_json::to_vec_pretty(&m)?)?;
    let env = [("PANOPTES_MODEL_REPOSITORY", utf8(repo)?)];
    for (model, manifest) in [
        (reference.clone(), manifest),
        (variant.join("model.pt"), variant.join("manifest.json")),
        (slow.join("model.pt"), slow.join("manifest.json")),
        (reference, manifest_v2),
    ] {
        let args = [
            "models",
            "push",
            utf8(&model)?,
            "--manifest",
            utf8(&manifest)?,
        ];
        eprint!("{}", ok("panoptes", &args, &env)?);
    }
    Ok(golden)
}

/// Validates every version at once (one process each) with `--write`; the results printed.
fn validate(repo: &Path, golden: &Path) -> Result<BTreeMap<&'static str, ValidationResult>> {
    let mut running = Vec::new();
    for version in [V1, NO_CAR, V2, SLOW] {
        let child = Command::new(bin_path("panoptes-model-validate"))
            .args(["--repository", utf8(repo)?, "--model", MODEL])
            .args(["--version", version, "--golden", utf8(golden)?])
            .args(["--device", "cpu", "--batch", "4", "--latency-passes", "3"])
            .args(["--threads", "1", "--write", "--json"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        running.push((version, child));
    }
    let mut results = BTreeMap::new();
    for (version, child) in running {
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "validating {version}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: ValidationResult = serde_json::from_slice(&out.stdout)?;
        eprintln!("{MODEL}@{version}: {r:?}");
        results.insert(version, r);
    }
    Ok(results)
}

/// The coordinator's `[models]`: the repository and the gate this test exercises.
fn gate(repo: &Path) -> ModelsConfig {
    ModelsConfig {
        repository: Some(repo.to_path_buf()),
        device_class: "cpu".into(),
        golden_set: Some("scenes".into()),
        min_precision: MIN_PRECISION,
        min_recall: MIN_RECALL,
        max_latency_ms: MAX_LATENCY_MS,
        groups: BTreeMap::new(),
        canary: CanaryCriteria {
            min_frames: 20,
            observe: OBSERVE,
            min_passes: 5,
            ..CanaryCriteria::default()
        },
    }
}

/// `panoptes models <args> --json` against the stack's coordinator; the answer.
fn models_cli(env: &[(&str, &str)], args: &[&str]) -> Result<serde_json::Value> {
    let args = [&["models"], args, &["--json"]].concat();
    Ok(serde_json::from_str(&ok("panoptes", &args, env)?)?)
}

/// Per camera, the arrival (wall ms) of its first record naming `version` that arrived at or
/// after `since_ms`; `None` until every camera has one.
fn first_arrivals(
    seen: &[SeenDetection],
    cameras: &[String],
    version: &str,
    since_ms: u64,
) -> Option<BTreeMap<String, u64>> {
    cameras
        .iter()
        .map(|cam| {
            seen.iter()
                .find(|d| {
                    &d.camera_id == cam && d.model.version == version && d.arrived_ms >= since_ms
                })
                .map(|d| (cam.clone(), d.arrived_ms))
        })
        .collect()
}

/// Waits until every camera's records name `version` (arrived since `since_ms`); returns the
/// slowest camera's delay after `since_ms`.
fn wait_version(
    watch: &Watch<SeenDetection>,
    cameras: &[String],
    version: &str,
    since_ms: u64,
    timeout: Duration,
) -> Result<Duration> {
    let firsts = wait_until(
        &format!("every camera's records to name {version}"),
        timeout,
        || first_arrivals(&watch.seen(), cameras, version, since_ms),
    )?;
    let last = firsts.values().copied().max().unwrap_or(since_ms);
    Ok(Duration::from_millis(last.saturating_sub(since_ms)))
}

/// Per camera in sequence order, the versions its records name, runs collapsed.
fn version_runs(seen: &[SeenDetection]) -> BTreeMap<String, Vec<String>> {
    let mut by_camera: BTreeMap<String, Vec<&SeenDetection>> = BTreeMap::new();
    for d in seen {
        by_camera.entry(d.camera_id.clone()).or_default().push(d);
    }
    by_camera
        .into_iter()
        .map(|(cam, mut ds)| {
            ds.sort_by_key(|d| d.seq);
            let mut runs: Vec<String> = Vec::new();
            for d in ds {
                if runs.last() != Some(&d.model.version) {
                    runs.push(d.model.version.clone());
                }
            }
            (cam, runs)
        })
        .collect()
}

/// Steps 1–3: the repository validated, the variant refused by the gate, the reference
/// promoted.
fn gate_refuses_the_variant_and_accepts_the_reference(
    stack: &Stack,
    env: &[(&str, &str)],
    results: &BTreeMap<&str, ValidationResult>,
) -> Result<()> {
    let (good, bad) = (&results[V1], &results[NO_CAR]);
    ensure!(
        good.recall >= MIN_RECALL + MARGIN && good.precision >= MIN_PRECISION + MARGIN,
        "the reference is not clear of the gate: {good:?}"
    );
    ensure!(
        bad.recall <= MIN_RECALL - MARGIN && bad.precision >= MIN_PRECISION + MARGIN,
        "the variant should fail on recall alone: {bad:?}"
    );
    ensure!(results[V2].recall == good.recall, "{results:?}");
    // `--write` stored each result in the repository's manifest.
    let shown = ok("panoptes", &["models", "show", MODEL, NO_CAR], env)?;
    let stored: ModelManifest = serde_json::from_str(&shown)?;
    ensure!(
        stored.validation == [bad.clone()],
        "{:?}",
        stored.validation
    );

    let refused = run(
        "panoptes",
        &["models", "promote", GROUP, MODEL, NO_CAR],
        env,
    )?;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    eprintln!("promote {NO_CAR}: {stderr}");
    ensure!(!refused.status.success(), "the variant was promoted");
    let why = format!(
        "recall {:.3} is below the required {MIN_RECALL:.3}",
        bad.recall
    );
    ensure!(
        stderr.contains("(HTTP 409)") && stderr.contains(&why) && stderr.contains(NO_CAR),
        "{stderr}"
    );
    let status = models_cli(env, &["status", GROUP])?;
    ensure!(status["rollout"].is_null(), "a refusal wrote {status}");

    let promoted = models_cli(env, &["promote", GROUP, MODEL, V1])?;
    let r = &promoted["rollout"];
    ensure!(promoted["changed"] == true, "{promoted}");
    ensure!(r["active"] == V1 && r["generation"] == 1, "{promoted}");
    let coord = stack.coordinator()?;
    let count = |result: &str| {
        coord.metric(&format!(
            "panoptes_coordinator_model_promotions_total{{result=\"{result}\"}}"
        ))
    };
    ensure!(count("below_threshold") == Some(1.0) && count("ok") == Some(1.0));
    Ok(())
}

/// The worker's model as `panoptes models status <group>` shows it.
fn worker_runs(env: &[(&str, &str)], worker: &str) -> Option<String> {
    let status = models_cli(env, &["status", GROUP]).ok()?;
    let workers = status["workers"].as_array()?;
    let w = workers.iter().find(|w| w["id"] == worker)?;
    w["model"].as_str().map(str::to_owned)
}

/// Step 4: promote [`V2`], roll back; returns the switch times.
fn roll_out_and_back(
    stack: &Stack,
    env: &[(&str, &str)],
    watch: &Watch<SeenDetection>,
) -> Result<(Duration, Duration)> {
    let cameras: Vec<String> = stack.spec.cameras.iter().map(|c| c.id.clone()).collect();
    wait_version(watch, &cameras, V1, 0, Duration::from_secs(60))?;
    std::thread::sleep(Duration::from_secs(2));

    let at = wall_ms();
    let promoted = models_cli(env, &["promote", GROUP, MODEL, V2])?;
    ensure!(promoted["rollout"]["previous"] == V1, "{promoted}");
    let to_v2 = wait_version(watch, &cameras, V2, at, SWITCH_WITHIN)?;
    eprintln!("every camera on {V2} {to_v2:?} after the promote request");
    wait_until("w0 to report running 1.1.0", SWITCH_WITHIN, || {
        (worker_runs(env, "w0")? == format!("{MODEL}@{V2}")).then_some(())
    })?;
    std::thread::sleep(Duration::from_secs(2));

    let at = wall_ms();
    let back = models_cli(env, &["rollback", GROUP])?;
    let r = &back["rollout"];
    ensure!(r["active"] == V1 && r["previous"] == V2, "{back}");
    ensure!(r["generation"] == 3, "{back}");
    let to_v1 = wait_version(watch, &cameras, V1, at, SWITCH_WITHIN)?;
    eprintln!("every camera back on {V1} {to_v1:?} after the rollback request");
    std::thread::sleep(Duration::from_secs(1));
    Ok((to_v2, to_v1))
}

/// Waits until the group's record tells how the canary of `version` ended; the record and the
/// time since `since_ms`.
fn wait_verdict(
    env: &[(&str, &str)],
    version: &str,
    since_ms: u64,
) -> Result<(serde_json::Value, Duration)> {
    let rollout = wait_until(
        &format!("the coordinator's verdict on the canary of {version}"),
        VERDICT_WITHIN,
        || {
            let status = models_cli(env, &["status", GROUP]).ok()?;
            let r = status["rollout"].clone();
            let ended = r["canary"].is_null()
                && r["last_canary"]["version"] == version
                && r["last_canary"]["at_ms"].as_u64()? >= since_ms;
            ended.then_some(r)
        },
    )?;
    let at = rollout["last_canary"]["at_ms"].as_u64().unwrap_or(since_ms);
    Ok((rollout, Duration::from_millis(at.saturating_sub(since_ms))))
}

/// Starts a canary of `version` at [`CANARY_PERCENT`]; its one camera.
fn start_canary(env: &[(&str, &str)], version: &str) -> Result<String> {
    let args = ["canary", GROUP, MODEL, version, "--percent", CANARY_PERCENT];
    let started = models_cli(env, &args)?;
    let canary = &started["rollout"]["canary"];
    ensure!(canary["version"] == version, "{started}");
    let cameras = canary["cameras"].as_array().context("canary cameras")?;
    ensure!(cameras.len() == 1, "25 % of {CAMERAS} cameras: {started}");
    Ok(cameras[0].as_str().context("camera id")?.to_owned())
}

/// Step 5: the slow variant's canary rolled back, then 1.1.0's promoted, automatically;
/// returns the canary's camera and the two verdict times.
fn canaries(
    env: &[(&str, &str)],
    watch: &Watch<SeenDetection>,
    cameras: &[String],
) -> Result<(String, Duration, Duration)> {
    let at = wall_ms();
    let cam = start_canary(env, SLOW)?;
    wait_version(watch, std::slice::from_ref(&cam), SLOW, at, SWITCH_WITHIN)?;
    let (r, rolled_back) = wait_verdict(env, SLOW, at)?;
    let last = &r["last_canary"];
    eprintln!("canary of {SLOW} on {cam}: {last} after {rolled_back:?}");
    ensure!(last["verdict"] == "rolled_back", "{r}");
    let reason = last["reason"].as_str().unwrap_or_default();
    ensure!(
        reason.starts_with("coordinator") && reason.contains("latency"),
        "{r}"
    );
    ensure!(r["active"] == V1, "{r}");
    let ended = last["at_ms"].as_u64().context("verdict time")?;
    wait_version(watch, std::slice::from_ref(&cam), V1, ended, SWITCH_WITHIN)?;

    let at = wall_ms();
    let again = start_canary(env, V2)?;
    ensure!(
        again == cam,
        "the same camera is chosen again: {again} vs {cam}"
    );
    let (r, promoted) = wait_verdict(env, V2, at)?;
    let last = &r["last_canary"];
    eprintln!("canary of {V2} on {cam}: {last} after {promoted:?}");
    ensure!(last["verdict"] == "promoted", "{r}");
    ensure!(r["active"] == V2 && r["previous"] == V1, "{r}");
    ensure!(
        promoted >= OBSERVE,
        "promoted before it was observed: {promoted:?}"
    );
    let at = last["at_ms"].as_u64().context("verdict time")?;
    wait_version(watch, cameras, V2, at, SWITCH_WITHIN)?;
    std::thread::sleep(Duration::from_secs(1));
    Ok((cam, rolled_back, promoted))
}

/// A shadow's figures on `w0`: agreement per class, frames inferred.
struct ShadowProbe<'a>(&'a panoptes_loadtest::stack::Node);

impl ShadowProbe<'_> {
    fn agreement(&self, class: &str) -> Option<f64> {
        self.0.metric(&format!(
            "panoptes_worker_shadow_agreement{{class=\"{class}\"}}"
        ))
    }

    fn inferred(&self) -> f64 {
        self.0
            .metric("panoptes_worker_shadow_frames_total{result=\"inferred\"}")
            .unwrap_or(0.0)
    }

    /// Starts a shadow of `version` and waits for [`SHADOW_FRAMES`] more inferred frames
    /// with its own agreement series (`car` agreement as `car_is`).
    fn run(
        &self,
        env: &[(&str, &str)],
        version: &str,
        car_is: f64,
    ) -> Result<BTreeMap<String, f64>> {
        let args = ["shadow", GROUP, MODEL, version, "--percent", SHADOW_PERCENT];
        let started = models_cli(env, &args)?;
        ensure!(
            started["rollout"]["shadow"]["version"] == version,
            "{started}"
        );
        // The previous shadow keeps inferring until the worker swaps it out, so frames are
        // counted only once this version's own agreement series shows.
        wait_until(
            &format!("the shadow of {version} to report car agreement {car_is}"),
            Duration::from_secs(60),
            || (self.agreement("car") == Some(car_is)).then_some(()),
        )?;
        let before = self.inferred();
        wait_until(
            &format!("the shadow of {version} to infer {SHADOW_FRAMES} frames"),
            Duration::from_secs(60),
            || (self.inferred() >= before + SHADOW_FRAMES).then_some(()),
        )?;
        Ok(CLASSES
            .iter()
            .filter_map(|c| Some((c.to_string(), self.agreement(c)?)))
            .collect())
    }
}

const CLASSES: [&str; 3] = ["person", "car", "bicycle"];

/// Step 6: an identical shadow, then the no-car variant as a shadow, then stopped; the
/// agreement per class of each.
fn shadows(
    stack: &Stack,
    env: &[(&str, &str)],
) -> Result<(BTreeMap<String, f64>, BTreeMap<String, f64>)> {
    let probe = ShadowProbe(&stack.workers["w0"]);
    let same = probe.run(env, V1, 1.0)?;
    eprintln!("shadow {V1} beside {V2}: agreement {same:?}");
    ensure!(
        same.len() == 3 && same.values().all(|a| *a == 1.0),
        "{same:?}"
    );
    let degraded = probe.run(env, NO_CAR, 0.0)?;
    eprintln!("shadow {NO_CAR} beside {V2}: agreement {degraded:?}");
    ensure!(
        degraded["person"] == 1.0 && degraded["bicycle"] == 1.0,
        "{degraded:?}"
    );
    let stopped = models_cli(env, &["shadow", GROUP, "--stop"])?;
    ensure!(stopped["rollout"]["shadow"].is_null(), "{stopped}");
    wait_until("the shadow's series to go", Duration::from_secs(10), || {
        probe.agreement("car").is_none().then_some(())
    })?;
    let shed = stack.workers["w0"].metric("panoptes_worker_shadow_frames_total{result=\"shed\"}");
    eprintln!("shadow frames inferred {}, shed {shed:?}", probe.inferred());
    let records = panoptes_testkit::kafka::all_records(
        &stack.brokers["local"].bootstrap,
        &stack.topics.shadow,
    )?;
    let of = |v: &str| records.iter().filter(|r| r.model.version == v).count() as f64;
    ensure!(
        of(V1) >= SHADOW_FRAMES && of(NO_CAR) >= SHADOW_FRAMES,
        "{} shadow records",
        records.len()
    );
    let cars = records
        .iter()
        .filter(|r| r.model.version == NO_CAR)
        .flat_map(|r| &r.detections)
        .filter(|d| d.label == DROPPED)
        .count();
    ensure!(cars == 0, "the no-car shadow published {cars} cars");
    Ok((same, degraded))
}

#[test]
fn validated_versions_pass_the_gate_and_roll_out_and_back_without_a_lost_frame() -> Result<()> {
    let started = Instant::now();
    let work = tempfile::tempdir()?;
    let repo = work.path().join("repository");
    std::fs::create_dir(&repo)?;
    let golden = prepare(work.path(), &repo)?;
    let prepared = started.elapsed();
    let results = validate(&repo, &golden)?;
    let validated = started.elapsed();

    let cameras = StackCamera::small_set(CAMERAS, "local", FPS);
    let mut spec = StackSpec::single_region(cameras, CAMERAS as i32);
    spec.coordinators = 0;
    let mut stack = Stack::start(spec)?;
    stack.start_coordinator_with("coord-0", |c| c.models = gate(&repo))?;
    // The cameras make group `default` known to the gate.
    stack.register_cameras()?;
    let url = stack.coordinator()?.http.clone();
    let env = [
        ("PANOPTES_URL", url.as_str()),
        ("PANOPTES_API_TOKEN", TEST_TOKEN),
        ("PANOPTES_MODEL_REPOSITORY", utf8(&repo)?),
    ];
    gate_refuses_the_variant_and_accepts_the_reference(&stack, &env, &results)?;
    let gated = started.elapsed();

    let watch = stack.watch_detections("local")?;
    let checker = stack.checker("local")?;
    stack.start_ingest("ingest-0", "local")?;
    stack.start_worker_with("w0", "local", GROUP, |c| {
        c.model.repository = Some(repo.clone());
        c.model.name = Some(MODEL.into());
        c.model.version = None;
        c.assignment.capacity = Some(100.0);
    })?;
    let (to_v2, to_v1) = roll_out_and_back(&stack, &env, &watch)?;
    let cameras: Vec<String> = stack.spec.cameras.iter().map(|c| c.id.clone()).collect();
    let (canary_cam, rolled_back, promoted) = canaries(&env, &watch, &cameras)?;
    let w0 = &stack.workers["w0"];
    // Loads: 1.1.0, 1.0.0 back, each canary's candidate; a promoted canary loads nothing.
    let swaps = w0.metric("panoptes_worker_model_swaps_total{result=\"ok\"}");
    ensure!(swaps == Some(4.0), "swaps {swaps:?}");
    let (same, degraded) = shadows(&stack, &env)?;

    let report = stack.stop_intake_and_settle(checker, Duration::from_secs(30))?;
    let t = &report.total;
    eprintln!("checker: {t:?}");
    ensure!(t.frames >= 60, "{t:?}");
    ensure!((t.lost, t.duplicated, t.reordered) == (0, 0, 0), "{t:?}");
    // Every camera: 1.0.0, 1.1.0, 1.0.0, then 1.1.0 for good, in sequence order; the
    // canary's camera also ran the slow variant and 1.0.0 again between the last two.
    let runs = version_runs(&watch.seen());
    ensure!(runs.len() == CAMERAS, "{runs:?}");
    for (cam, r) in &runs {
        let expected: &[&str] = if *cam == canary_cam {
            &[V1, V2, V1, SLOW, V1, V2]
        } else {
            &[V1, V2, V1, V2]
        };
        if r != expected {
            bail!("{cam}: versions in sequence order {r:?}, expected {expected:?}");
        }
    }
    eprintln!(
        "switch after promote {to_v2:?}, after rollback {to_v1:?}; canary verdicts: rolled \
         back after {rolled_back:?}, promoted after {promoted:?}; shadow agreement identical \
         {same:?}, no-car {degraded:?}; prepared at {prepared:?}, \
         validated at {validated:?}, gate done at {gated:?}, whole test {:?}",
        started.elapsed()
    );
    Ok(())
}
