//! The processes of `panoptes-bench-shadow` (see [`super`]): broker, Redis, one worker on a
//! model repository; simulator scenes produced at a steady rate; the rollout record's shadow
//! set and cleared phase by phase; then the checker and the records.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use panoptes_coordinator_client::models::ModelRepository;
use panoptes_models::GeneratedModel;
use panoptes_scene::SceneSpec;
use panoptes_schemas::model::{ModelRollout, ModelShadow};
use panoptes_testkit::fixtures::encode_jpeg;
use panoptes_testkit::kafka::{Producing, all_records, now_us};
use panoptes_testkit::{DevBroker, Node, RedisServer, Topics, unique_name};
use panoptes_testkit_stack::worker;
use panoptes_workers::config::{AssignmentSource, StalePolicy};

use super::{
    Accounting, Latency, Phase, PhaseResult, Setting, ShadowReport, ShadowWork, Swaps, assign,
};
use crate::bench::scaffold::{self, CommonArgs, RunInfo};
use crate::bench::sys;

const MODEL: &str = "reference-detector";
const PRIMARY: &str = "1.0.0";
/// The same bytes as [`PRIMARY`] under another version: an identical shadow.
const SHADOW: &str = "1.0.1";
const GROUP: &str = "shadow-bench";
const REGION: &str = "local";
const CLASSES: [&str; 3] = ["person", "car", "bicycle"];

/// Arguments of `panoptes-bench-shadow`.
#[derive(Debug, clap::Parser)]
#[command(about = "The primary's end-to-end latency with and without a shadow rollout")]
pub struct ShadowArgs {
    /// Cameras (frames partitions); 8 × 8 fps kept the primary busy about two thirds of the
    /// time on this 2-core machine (the report measures it).
    #[arg(long, default_value_t = 8)]
    cameras: u32,
    /// Frames per second per camera (the report gives the primary's load: its share of time
    /// in forward passes).
    #[arg(long, default_value_t = 8)]
    fps: u32,
    /// The shadow's share of frames, percent.
    #[arg(long, default_value_t = 50)]
    percent: u8,
    /// Phases, alternating off / on, starting with off [default: 8; --quick: 4].
    #[arg(long)]
    phases: Option<usize>,
    /// Seconds per phase [default: 30; --quick: 10].
    #[arg(long)]
    phase_s: Option<u64>,
    /// Seconds left out at each phase's start.
    #[arg(long, default_value_t = 4)]
    settle_s: u64,
    /// Blue-green swaps after the shadow phases, each after 10 s steady [default: 6;
    /// --quick: 2].
    #[arg(long)]
    swaps: Option<usize>,
    /// `--out` (shadow-bench.json and .md), `--quick`, `--check` (exit 3 if the p50 ratio is
    /// under 0.95, the checker is not clean, or the shadow inferred nothing).
    #[command(flatten)]
    common: CommonArgs,
}

/// Runs the benchmark and publishes its report.
pub fn main(args: ShadowArgs) -> Result<()> {
    let quick = args.common.quick;
    let setting = Setting {
        cameras: args.cameras,
        fps: args.fps,
        width: 320,
        height: 180,
        percent: args.percent,
        phase_s: args.phase_s.unwrap_or(if quick { 10 } else { 30 }),
        settle_s: args.settle_s,
        intra_op_threads: 1,
    };
    let phases = args.phases.unwrap_or(if quick { 4 } else { 8 });
    let swaps = args.swaps.unwrap_or(if quick { 2 } else { 6 });
    let run = RunInfo::now("");
    let report = measure(run, &setting, phases, swaps)?;
    scaffold::publish(&args.common, &report)?;
    scaffold::exit_if_missed(
        &args.common,
        report.met(),
        "the shadow slowed the primary, the checker was not clean, or the shadow did nothing",
    );
    Ok(())
}

/// The rollout record: `active`, the shadow as given; SET + PUBLISH, as the operator API
/// does.
fn write_rollout(
    redis: &RedisServer,
    generation: u64,
    active: &str,
    shadow: Option<ModelShadow>,
) -> Result<()> {
    let record = ModelRollout {
        model: MODEL.into(),
        active: active.into(),
        previous: None,
        generation,
        updated_ms: (now_us() / 1000) as u64,
        canary: None,
        last_canary: None,
        shadow,
    };
    redis.write_rollout(GROUP, &record)
}

/// The reference detector generated under `dir` and pushed as [`PRIMARY`] and [`SHADOW`]
/// into a repository there.
fn repository(dir: &Path) -> Result<GeneratedModel> {
    let generated = panoptes_models::generate_reference(&dir.join("generated"))
        .context("generating the reference detector")?;
    std::fs::create_dir_all(dir.join("repository"))?;
    let repo = ModelRepository::open(dir.join("repository"))?;
    for version in [PRIMARY, SHADOW] {
        let mut m = generated.manifest.clone();
        m.name = MODEL.into();
        m.version = version.into();
        m.sha256 = None;
        repo.push(&generated.model_path, &m)?;
    }
    Ok(generated)
}

/// The worker: Redis assignment of every partition, the repository's record-named version,
/// lossless staleness (every frame answered, so the checker can account for all).
fn start_worker(
    broker: &DevBroker,
    redis: &RedisServer,
    t: &Topics,
    dir: &Path,
    generated: &GeneratedModel,
    s: &Setting,
) -> Result<Node> {
    let id = unique_name("shadow-worker");
    let partitions: Vec<i32> = (0..s.cameras as i32).collect();
    for &p in &partitions {
        redis.set_assignment(REGION, &t.frames, p, &id, 1)?;
    }
    let mut c = worker::config(
        &id,
        &broker.bootstrap,
        t,
        &unique_name("shadow-group"),
        &generated.model_path,
        &generated.manifest_path,
    );
    c.region = REGION.into();
    c.group = GROUP.into();
    c.partitions = partitions;
    c.assignment.source = AssignmentSource::Redis;
    c.assignment.redis.redis_url = redis.url.clone();
    c.staleness.policy = StalePolicy::Lossless;
    c.model.intra_op_threads = s.intra_op_threads;
    c.model.repository = Some(dir.join("repository"));
    c.model.name = Some(MODEL.into());
    c.model.version = None;
    worker::start(&c, &[], Duration::from_secs(60))
}

/// Simulator scenes for `cam0..cam<n>` (camera i → partition i) at `fps` each, produced on a
/// thread until stopped; 50 distinct frames per camera, cycled.
fn produce(bootstrap: &str, topic: &str, s: &Setting) -> Producing {
    let spec = SceneSpec::new(s.width, s.height);
    let mut rgb = Vec::new();
    let frames: Vec<Vec<Vec<u8>>> = (0..s.cameras)
        .map(|c| {
            (0..50)
                .map(|i| {
                    panoptes_scene::render_rgb(&spec, &format!("cam{c}"), i * 5, &mut rgb);
                    encode_jpeg(&rgb, s.width as usize, s.height as usize, 80)
                })
                .collect()
        })
        .collect();
    Producing::cycling(
        bootstrap,
        topic,
        frames,
        (s.width, s.height),
        u64::from(s.fps),
    )
}

fn shadow_metric(w: &Node, result: &str) -> f64 {
    w.metric(&format!(
        "panoptes_worker_shadow_frames_total{{result=\"{result}\"}}"
    ))
    .unwrap_or(0.0)
}

/// Seconds the primary has spent in forward passes so far.
fn forward_seconds(w: &Node) -> f64 {
    w.metric("panoptes_worker_stage_latency_seconds_sum{stage=\"inference\"}")
        .unwrap_or(0.0)
}

fn agreement(w: &Node) -> BTreeMap<String, f64> {
    CLASSES
        .iter()
        .filter_map(|c| {
            let series = format!("panoptes_worker_shadow_agreement{{class=\"{c}\"}}");
            Some((c.to_string(), w.metric(&series)?))
        })
        .collect()
}

/// Starts everything, runs the phases, accounts and measures.
fn measure(run: RunInfo, s: &Setting, phases: usize, swaps: usize) -> Result<ShadowReport> {
    let machine = sys::machine_info();
    let dir = tempfile::tempdir()?;
    let generated = repository(dir.path())?;
    let redis = RedisServer::start()?;
    write_rollout(&redis, 1, PRIMARY, None)?;
    let broker = DevBroker::start(1)?;
    let t = broker.create_topics(s.cameras)?;
    let checker = panoptes_testkit::settle::checker(&broker.bootstrap, &t, Vec::new())?;
    let w = start_worker(&broker, &redis, &t, dir.path(), &generated, s)?;
    let producing = produce(&broker.bootstrap, &t.frames, s);
    eprintln!(
        "panoptes-bench-shadow: producing; warming up for {} s",
        s.phase_s
    );
    std::thread::sleep(Duration::from_secs(s.phase_s));
    let (windows, last_agreement) = run_phases(&redis, &w, s, phases)?;
    let swapped = run_swaps(&redis, &w, 2 + phases as u64, swaps)?;
    let produced = producing.finish()?;
    let report = panoptes_testkit::settle::finish_when_settled(checker, Duration::from_secs(120))?;
    let inferred = shadow_metric(&w, "inferred");
    let shed = shadow_metric(&w, "shed");
    drop(w);
    let records = all_records(&broker.bootstrap, &t.detections)?;
    let shadow_records = all_records(&broker.bootstrap, &t.shadow)?.len();
    let times: Vec<(i64, i64)> = records
        .iter()
        .map(|r| (r.capture_time_us, r.published_time_us))
        .collect();
    let (per_phase, off, on) = latencies(&windows, &times)?;
    let swaps = (swaps > 0)
        .then(|| swap_latencies(&swapped, &times))
        .transpose()?;
    let total = &report.total;
    Ok(ShadowReport {
        run,
        machine,
        setting: s.clone(),
        phases: per_phase,
        off,
        on,
        shadow: ShadowWork {
            inferred,
            shed,
            records: shadow_records,
            agreement: last_agreement,
        },
        accounting: Accounting {
            frames: produced,
            // A produced frame the checker never read counts as lost too.
            lost: total.lost + produced.saturating_sub(total.frames),
            duplicated: total.duplicated,
            reordered: total.reordered,
        },
        swaps,
    })
}

/// A phase as run and the primary's busy share in it.
type Measured = (Phase, f64);

/// Runs `phases` phases of `s.phase_s` seconds, the shadow off in the first and on in every
/// other; the measured windows, and the agreement per class read at the end of the last
/// shadow phase.
fn run_phases(
    redis: &RedisServer,
    w: &Node,
    s: &Setting,
    phases: usize,
) -> Result<(Vec<Measured>, BTreeMap<String, f64>)> {
    let mut windows = Vec::new();
    let mut last_agreement = BTreeMap::new();
    for i in 0..phases {
        let on = i % 2 == 1;
        let started = now_us();
        let forward = forward_seconds(w);
        let shadow = on.then(|| ModelShadow {
            version: SHADOW.into(),
            percent: s.percent,
            since_generation: 2 + i as u64,
            started_ms: (started / 1000) as u64,
        });
        write_rollout(redis, 2 + i as u64, PRIMARY, shadow)?;
        eprintln!("phase {}: shadow {}", i + 1, if on { "on" } else { "off" });
        std::thread::sleep(Duration::from_secs(s.phase_s));
        if on {
            last_agreement = agreement(w);
        }
        let to_us = now_us();
        let busy = (forward_seconds(w) - forward) / ((to_us - started) as f64 / 1e6);
        let phase = Phase {
            shadow: on,
            from_us: started + s.settle_s as i64 * 1_000_000,
            to_us,
        };
        windows.push((phase, busy));
    }
    Ok((windows, last_agreement))
}

/// Each phase's latency, and the pooled figures with the shadow off and on.
fn latencies(
    windows: &[Measured],
    times: &[(i64, i64)],
) -> Result<(Vec<PhaseResult>, Latency, Latency)> {
    let phases: Vec<Phase> = windows.iter().map(|(p, _)| *p).collect();
    let assigned = assign(&phases, times);
    let mut per_phase = Vec::new();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for (i, (phase, busy)) in windows.iter().enumerate() {
        let ms: Vec<f64> = assigned
            .iter()
            .filter(|(p, _)| *p == i)
            .map(|(_, l)| *l)
            .collect();
        if phase.shadow { &mut on } else { &mut off }.extend_from_slice(&ms);
        let latency = Latency::of(&ms).with_context(|| format!("no records in phase {}", i + 1))?;
        per_phase.push(PhaseResult {
            phase: *phase,
            latency,
            primary_busy: *busy,
        });
    }
    let off = Latency::of(&off).context("no records with the shadow off")?;
    let on = Latency::of(&on).context("no records with the shadow on")?;
    Ok((per_phase, off, on))
}

/// One swap as run: the request's and the switch's times (µs).
struct Swapped {
    requested_us: i64,
    switched_us: i64,
}

/// Steady time before each swap.
const SWAP_STEADY: Duration = Duration::from_secs(10);
/// How long after the switch a swap's window lasts (the test's window).
const SWAP_TAIL: Duration = Duration::from_secs(2);

/// `n` blue-green swaps between [`SHADOW`] and [`PRIMARY`] (the same model under two
/// versions), each after [`SWAP_STEADY`], from record generation `generation` on.
fn run_swaps(redis: &RedisServer, w: &Node, generation: u64, n: usize) -> Result<Vec<Swapped>> {
    let ok = || {
        w.metric("panoptes_worker_model_swaps_total{result=\"ok\"}")
            .unwrap_or(0.0)
    };
    let mut out = Vec::new();
    for i in 0..n {
        std::thread::sleep(SWAP_STEADY);
        let active = if i % 2 == 0 { SHADOW } else { PRIMARY };
        let before = ok();
        let requested_us = now_us();
        write_rollout(redis, generation + i as u64, active, None)?;
        panoptes_testkit::wait_until("the swap", Duration::from_secs(60), || {
            (ok() > before).then_some(())
        })?;
        let switched_us = now_us();
        eprintln!(
            "swap {}: to {active} in {} ms",
            i + 1,
            (switched_us - requested_us) / 1000
        );
        std::thread::sleep(SWAP_TAIL + Duration::from_secs(1));
        out.push(Swapped {
            requested_us,
            switched_us,
        });
    }
    Ok(out)
}

/// The swaps' figures: steady = the 8 s before each request; during = from each request to
/// [`SWAP_TAIL`] after its switch.
fn swap_latencies(swapped: &[Swapped], times: &[(i64, i64)]) -> Result<Swaps> {
    let window = |from: i64, to: i64| -> Vec<f64> {
        let ms = |&(c, p): &(i64, i64)| (p - c) as f64 / 1000.0;
        times
            .iter()
            .filter(|(c, _)| (from..to).contains(c))
            .map(ms)
            .collect()
    };
    let tail = SWAP_TAIL.as_micros() as i64;
    let (mut steady, mut during) = (Vec::new(), Vec::new());
    for w in swapped {
        steady.extend(window(w.requested_us - 8_000_000, w.requested_us));
        during.extend(window(w.requested_us, w.switched_us + tail));
    }
    Ok(Swaps {
        swaps: swapped.len(),
        switch_ms: swapped
            .iter()
            .map(|w| ((w.switched_us - w.requested_us) / 1000) as u64)
            .collect(),
        steady: Latency::of(&steady).context("no records before the swaps")?,
        during: Latency::of(&during).context("no records during the swaps")?,
    })
}
