//! Drift per camera, end to end: camera simulator → real ingest node → devbroker → real
//! worker with the reference detector. Five cameras build their reference; then four are
//! switched (camsim's control API) to the `dark`, `covered`, `blurred` and `scene_changed`
//! variants. Each of the four raises `panoptes_worker_drift_active` within the stated bound,
//! the steady camera never does, and a camera switched back clears.
//!
//! Windows are short here (reference 8 s, current window 4 s, evaluated every 500 ms, 3
//! evaluations to raise or clear): the bound is `window + raise_after × evaluate_every`
//! plus the pipeline's latency, asserted as [`RAISE_BOUND`].

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use common::node::Rig;
use panoptes_scene::camera::CameraConfig;
use panoptes_testkit::{CamSim, metric_value, wait_until};
use panoptes_workers::drift::DriftConfig;

const STEADY: &str = "steady";
/// The switched cameras and the variant each gets.
const VARIANTS: [(&str, &str); 4] = [
    ("dark", "dark"),
    ("covered", "covered"),
    ("blurred", "blurred"),
    ("turned", "scene_changed"),
];
const FPS: u32 = 5;
/// Drift raised this soon after the switch (window 4 s + 3 × 0.5 s + pipeline, with slack
/// for a loaded 2-core machine).
const RAISE_BOUND: Duration = Duration::from_secs(15);

fn drift_config() -> DriftConfig {
    DriftConfig {
        reference: Duration::from_secs(8),
        window: Duration::from_secs(4),
        evaluate_every: Duration::from_millis(500),
        min_samples: 8,
        sample_every: 1,
        ..DriftConfig::default()
    }
}

fn camera_ids() -> Vec<&'static str> {
    std::iter::once(STEADY)
        .chain(VARIANTS.iter().map(|(c, _)| *c))
        .collect()
}

fn active(metrics: &str, camera: &str) -> Option<f64> {
    metric_value(
        metrics,
        &format!("panoptes_worker_drift_active{{camera=\"{camera}\"}}"),
    )
}

/// The highest PSI of `camera` over every scored signal.
fn max_psi(metrics: &str, camera: &str) -> f64 {
    let prefix = format!("panoptes_worker_drift_psi{{camera=\"{camera}\",");
    metrics
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .fold(0.0, f64::max)
}

#[test]
fn dark_covered_blurred_and_turned_cameras_raise_drift_and_a_steady_one_does_not() -> Result<()> {
    let started = Instant::now();
    let cams: Vec<CameraConfig> = camera_ids()
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let mut c = CameraConfig::new(*id);
            (c.width, c.height, c.fps, c.seed) = (320, 180, FPS, 1 + i as u64);
            c
        })
        .collect();
    let sim = CamSim::with_configs(&cams)?;
    let rig = Rig::new(cams.len() as u32)?;
    let worker = rig.worker(|c| {
        c.drift = drift_config();
        c.batching.max_batch = 4;
        c.batching.max_wait = Duration::from_millis(10);
    })?;
    worker.wait_ready(Duration::from_secs(30))?;
    let _ingest = common::node::start_ingest_cameras(
        &rig.broker.bootstrap,
        &rig.t.frames,
        &sim,
        &camera_ids(),
        FPS,
        (320, 180),
    )?;

    // Every camera's reference is built: its drift series appear.
    wait_until(
        "every camera's drift reference",
        Duration::from_secs(60),
        || {
            let m = worker.metrics();
            camera_ids()
                .iter()
                .all(|c| {
                    let brightness = format!(
                        "panoptes_worker_drift_psi{{camera=\"{c}\",signal=\"brightness\"}}"
                    );
                    active(&m, c) == Some(0.0) && metric_value(&m, &brightness).is_some()
                })
                .then_some(())
        },
    )?;
    let m = worker.metrics();
    let psi_series = m
        .lines()
        .filter(|l| l.starts_with("panoptes_worker_drift_psi{"))
        .count();
    ensure!(
        psi_series >= 5 * 4,
        "image signals scored for every camera:\n{m}"
    );
    println!("references built after {:.1?}", started.elapsed());

    let switched = Instant::now();
    for (camera, variant) in VARIANTS {
        sim.fault(camera, variant)?;
    }
    let mut raised: BTreeMap<&str, Duration> = BTreeMap::new();
    let mut steady_worst = 0.0f64;
    while raised.len() < VARIANTS.len() && switched.elapsed() < RAISE_BOUND {
        let m = worker.metrics();
        ensure!(
            active(&m, STEADY) == Some(0.0),
            "the steady camera raised drift:\n{m}"
        );
        steady_worst = steady_worst.max(max_psi(&m, STEADY));
        for (camera, _) in VARIANTS {
            if active(&m, camera) == Some(1.0) {
                raised.entry(camera).or_insert_with(|| switched.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!("drift raised after the switch: {raised:?}");
    println!("steady camera: highest PSI {steady_worst:.3}");
    let m = worker.metrics();
    for (camera, _) in VARIANTS {
        ensure!(
            raised.contains_key(camera),
            "{camera} raised no drift within {RAISE_BOUND:?}:\n{m}"
        );
        println!("{camera}: highest PSI {:.2}", max_psi(&m, camera));
    }
    let events: f64 = m
        .lines()
        .filter(|l| l.starts_with("panoptes_worker_drift_events_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    ensure!(
        events >= 4.0,
        "one drift event per switched camera: {events}"
    );
    ensure!(
        steady_worst < drift_config().raise_psi,
        "steady PSI {steady_worst}"
    );

    // The dark camera comes back: drift clears (window + clear_after evaluations).
    sim.fault("dark", "normal")?;
    let back = Instant::now();
    wait_until("the dark camera's drift to clear", RAISE_BOUND, || {
        let m = worker.metrics();
        (active(&m, "dark") == Some(0.0)).then_some(())
    })?;
    println!(
        "dark camera cleared {:.1?} after it came back",
        back.elapsed()
    );
    let m = worker.metrics();
    ensure!(active(&m, STEADY) == Some(0.0), "steady camera:\n{m}");
    ensure!(
        metric_value(&m, "panoptes_worker_drift_samples_dropped_total") == Some(0.0),
        "no sample dropped at this rate"
    );
    println!("test took {:.1?}", started.elapsed());
    Ok(())
}
