//! The two parts of `panoptes-bench-drift` (see [`super`]): the in-process cost comparison
//! and the steady run of real processes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use panoptes_scene::SceneSpec;
use panoptes_scene::camera::CameraConfig;
use panoptes_testkit::fixtures::encode_jpeg;
use panoptes_testkit::{CamSim, DevBroker, metric_value, unique_name, wait_until};
use panoptes_testkit_stack::worker;
use panoptes_workers::drift::{DriftConfig, ImageStats};
use panoptes_workers::preprocess::decode_jpeg_into;

use super::{CameraResult, Cost, DriftReport, Steady, psi_series};
use crate::bench::scaffold::{self, CommonArgs, RunInfo};
use crate::bench::sys;

/// Arguments of `panoptes-bench-drift`.
#[derive(Debug, clap::Parser)]
#[command(about = "Drift per camera: cost of the statistics, and steady scenes raising none")]
pub struct DriftArgs {
    /// Watched seconds of the steady run [default: 600; --quick: 60].
    #[arg(long)]
    duration: Option<u64>,
    /// Steady cameras (320×180 at 5 fps).
    #[arg(long, default_value_t = 4)]
    cameras: usize,
    /// Only the cost part (no processes).
    #[arg(long)]
    cost_only: bool,
    /// `--out` (drift-bench.json and .md), `--quick`, `--check` (exit 3 if drift was raised or
    /// the statistics cost 5 % of a decode or more).
    #[command(flatten)]
    common: CommonArgs,
}

/// The worker's drift configuration in the steady run: the defaults with a 60 s reference and
/// a 30 s window, so that a 10-minute run covers 18 full windows.
fn steady_drift() -> DriftConfig {
    DriftConfig {
        reference: Duration::from_secs(60),
        window: Duration::from_secs(30),
        evaluate_every: Duration::from_secs(2),
        ..DriftConfig::default()
    }
}

/// Runs the benchmark and publishes its report.
pub fn main(args: DriftArgs) -> Result<()> {
    let run = RunInfo::now("");
    let machine = sys::machine_info();
    let cost = cost(if args.common.quick { 3 } else { 7 })?;
    eprintln!("cost: {cost:?}");
    let steady = if args.cost_only {
        None
    } else {
        let secs = args
            .duration
            .unwrap_or(if args.common.quick { 60 } else { 600 });
        Some(steady(args.cameras, Duration::from_secs(secs))?)
    };
    let report = DriftReport {
        run,
        machine,
        cost,
        steady,
    };
    scaffold::publish(&args.common, &report)?;
    scaffold::exit_if_missed(
        &args.common,
        report.met(),
        "drift raised on steady scenes, or the statistics cost too much",
    );
    Ok(())
}

/// Statistics against JPEG decode on 64 simulator frames at 640×360 (quality 80), `rounds`
/// alternating rounds; medians of the per-round ns per frame.
fn cost(rounds: usize) -> Result<Cost> {
    let (w, h) = (640u32, 360u32);
    let spec = SceneSpec::new(w, h);
    let mut rgb = Vec::new();
    let jpegs: Vec<Vec<u8>> = (0..64)
        .map(|i| {
            panoptes_scene::render_rgb(&spec, "cam0", i * 7, &mut rgb);
            encode_jpeg(&rgb, w as usize, h as usize, 80)
        })
        .collect();
    let mut decoded: Vec<Vec<u8>> = Vec::new();
    let (mut stats_ns, mut decode_ns) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let t = Instant::now();
        decoded.clear();
        for j in &jpegs {
            let mut out = Vec::new();
            decode_jpeg_into(j, &mut out).context("decoding a simulator frame")?;
            decoded.push(out);
        }
        decode_ns.push(t.elapsed().as_nanos() as f64 / jpegs.len() as f64);
        let t = Instant::now();
        let mut keep = 0f32;
        for d in &decoded {
            let s = ImageStats::compute(d, w, h).context("statistics")?;
            keep += s.laplacian_variance;
        }
        stats_ns.push(t.elapsed().as_nanos() as f64 / decoded.len() as f64);
        std::hint::black_box(keep);
    }
    let stats = scaffold::median(&stats_ns).unwrap_or(0.0);
    let decode = scaffold::median(&decode_ns).unwrap_or(1.0);
    Ok(Cost {
        width: w,
        height: h,
        frames: jpegs.len(),
        stats_ns: stats,
        decode_ns: decode,
        ratio: stats / decode,
        amortized_ratio: stats / decode / f64::from(DriftConfig::default().sample_every),
    })
}

/// Steady cameras → ingest → broker → worker (reference detector, drift on); watches the
/// worker's drift metrics for `duration` after every reference is built.
fn steady(n: usize, duration: Duration) -> Result<Steady> {
    let cams: Vec<CameraConfig> = (0..n)
        .map(|i| {
            let mut c = CameraConfig::new(format!("cam{i}"));
            (c.width, c.height, c.fps, c.seed) = (320, 180, 5, 1 + i as u64);
            c
        })
        .collect();
    let sim = CamSim::with_configs(&cams)?;
    let broker = DevBroker::start(1)?;
    let t = broker.create_topics(n as u32)?;
    let models = panoptes_testkit_stack::stack::generate_models()?;
    let mut wc = worker::config(
        &unique_name("drift-worker"),
        &broker.bootstrap,
        &t,
        &unique_name("drift-group"),
        &models.path().join("reference-detector.pt"),
        &models.path().join("reference-detector.json"),
    );
    wc.drift = steady_drift();
    let worker = worker::start(&wc, &[], Duration::from_secs(60))?;
    let mut ic =
        panoptes_testkit::ingest::config(&unique_name("ingest"), &broker.bootstrap, &t.frames);
    ic.cameras = cams
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let url = sim.url(&c.id, None);
            panoptes_testkit::ingest::camera(&c.id, url, 5, (320, 180), Some(i as i32))
        })
        .collect();
    let _ingest = panoptes_testkit::ingest::start(&ic, &[])?;
    let metrics = || scaffold::metrics_text(&worker.http).unwrap_or_default();
    let reference = steady_drift().reference + Duration::from_secs(60);
    wait_until("every camera's drift reference", reference, || {
        let m = metrics();
        cams.iter()
            .all(|c| {
                metric_value(
                    &m,
                    &format!("panoptes_worker_drift_active{{camera=\"{}\"}}", c.id),
                )
                .is_some()
            })
            .then_some(())
    })?;
    let started = Instant::now();
    let mut worst: BTreeMap<String, (f64, String, u64)> = BTreeMap::new();
    let mut scrapes = 0;
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_secs(5));
        let m = metrics();
        scrapes += 1;
        for (camera, signal, v) in psi_series(&m) {
            let e = worst.entry(camera).or_insert((0.0, String::new(), 0));
            if v > e.0 {
                (e.0, e.1) = (v, signal);
            }
        }
        for c in &cams {
            let active = format!("panoptes_worker_drift_active{{camera=\"{}\"}}", c.id);
            if metric_value(&m, &active) == Some(1.0) {
                worst
                    .entry(c.id.clone())
                    .or_insert((0.0, String::new(), 0))
                    .2 += 1;
            }
        }
    }
    let m = metrics();
    let events: f64 = m
        .lines()
        .filter(|l| l.starts_with("panoptes_worker_drift_events_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let cfg = steady_drift();
    Ok(Steady {
        watched_s: started.elapsed().as_secs(),
        scrapes,
        events,
        dropped: metric_value(&m, "panoptes_worker_drift_samples_dropped_total").unwrap_or(0.0),
        cameras: worst
            .into_iter()
            .map(
                |(camera, (max_psi, max_signal, active_scrapes))| CameraResult {
                    camera,
                    max_psi,
                    max_signal,
                    active_scrapes,
                },
            )
            .collect(),
        drift_config: format!(
            "reference = {:?}, window = {:?}, evaluate_every = {:?}, raise_psi = {}, clear_psi = {}, raise_after = {}",
            cfg.reference,
            cfg.window,
            cfg.evaluate_every,
            cfg.raise_psi,
            cfg.clear_psi,
            cfg.raise_after
        ),
        raise_psi: cfg.raise_psi,
    })
}
