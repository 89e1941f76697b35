//! The processes of `panoptes-bench-ingest`: CPU per frame of `panoptes-ingest` against a bare `gst-launch-1.0`
//! pipeline doing the same decode, sample, scale and JPEG encode on the same simulated
//! cameras, reported as a ratio measured in the same run. See `docs/benchmarks.md`.
//!
//! It starts one camera simulator and one development broker, then alternates the phases
//! (bare, ingest) for the given rounds. Each phase is a fresh process: wait for every
//! camera's first frame, warm up, then measure frames and the process's CPU time over the
//! window. Medians per phase go into a Markdown table on stdout and into
//! `ingest-bench.json` / `ingest-bench.md` under `--out`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use panoptes_testkit::{CamSim, DevBroker, metric_value, wait_until};

use super::{IngestBenchParams, IngestBenchReport, LaunchFrameCounter, Phase, Sample};
use crate::bench::scaffold::{self, CommonArgs, RunInfo};
use crate::bench::sys;

/// Time allowed for every camera of a phase to produce its first frame.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(40);

/// Arguments of `panoptes-bench-ingest`.
#[derive(Debug, clap::Parser)]
#[command(
    about = "Compare panoptes-ingest with a bare gst-launch-1.0 pipeline (CPU per frame, as a ratio)"
)]
pub struct IngestArgs {
    /// Simulated cameras [default: 4; --quick: 2].
    #[arg(long)]
    cameras: Option<u32>,
    /// Source frame rate of the simulated cameras.
    #[arg(long, default_value_t = 10)]
    source_fps: u32,
    /// Output (sampling) frame rate per camera.
    #[arg(long, default_value_t = 5)]
    fps: u32,
    /// Source width.
    #[arg(long, default_value_t = 1280)]
    width: u32,
    /// Source height.
    #[arg(long, default_value_t = 720)]
    height: u32,
    /// Output width.
    #[arg(long, default_value_t = 640)]
    out_width: u32,
    /// Output height.
    #[arg(long, default_value_t = 360)]
    out_height: u32,
    /// JPEG quality of both sides.
    #[arg(long, default_value_t = 80)]
    jpeg_quality: u32,
    /// Measured window per phase, seconds [default: 30; --quick: 10].
    #[arg(long)]
    window: Option<u64>,
    /// Warm-up per phase after every camera's first frame, seconds [default: 5; --quick: 3].
    #[arg(long)]
    warmup: Option<u64>,
    /// Rounds of (bare, ingest) [default: 2; --quick: 1].
    #[arg(long)]
    rounds: Option<u32>,
    /// B-frames between the cameras' reference frames (0: IPPP; 2: IBBP, whose B-frames the
    /// ingest node need not decode).
    #[arg(long, default_value_t = 0)]
    bframes: u32,
    /// Add a phase per round: the ingest node with decode_skip = false.
    #[arg(long)]
    decode_all: bool,
    /// The ratio ingest / bare must stay under (the decode-skipping run: 0.7).
    #[arg(long, default_value_t = super::TARGET_RATIO)]
    target: f64,
    /// `--out` (ingest-bench.json and .md), `--quick`, `--check` (ratio above the target).
    #[command(flatten)]
    common: CommonArgs,
}

impl IngestArgs {
    fn params(&self) -> IngestBenchParams {
        let base = if self.common.quick {
            IngestBenchParams::quick()
        } else {
            IngestBenchParams::default()
        };
        IngestBenchParams {
            cameras: self.cameras.unwrap_or(base.cameras),
            source_width: self.width,
            source_height: self.height,
            source_fps: self.source_fps,
            out_fps: self.fps,
            out_width: self.out_width,
            out_height: self.out_height,
            jpeg_quality: self.jpeg_quality,
            warmup_s: self.warmup.unwrap_or(base.warmup_s),
            window_s: self.window.unwrap_or(base.window_s),
            rounds: self.rounds.unwrap_or(base.rounds),
            bframes: self.bframes,
            decode_all_phase: self.decode_all,
            target_ratio: self.target,
        }
    }
}

/// The processes shared by every phase (also used by the tracing-overhead benchmark,
/// [`crate::bench::trace_overhead`]).
pub(crate) struct Fixture {
    camsim: CamSim,
    broker: DevBroker,
    cameras: Vec<(String, String)>,
}

impl Fixture {
    pub(crate) fn start(params: &IngestBenchParams) -> Result<Self> {
        let broker = DevBroker::start(1)?;
        let camsim_args = params.camsim_args();
        let args: Vec<&str> = camsim_args.iter().map(String::as_str).collect();
        let camsim = CamSim::start(&args)?;
        let cameras = params
            .camera_ids()
            .into_iter()
            .map(|id| (id.clone(), format!("{}/{id}", camsim.rtsp)))
            .collect();
        Ok(Self {
            camsim,
            broker,
            cameras,
        })
    }
}

/// Measures `pid` over the window: frames (and, for the ingest node, skipped decodes) from
/// `counts()`, CPU from /proc.
fn measure(
    phase: Phase,
    round: u32,
    params: &IngestBenchParams,
    pid: u32,
    source_pid: u32,
    ticks: sys::ClockTicks,
    mut counts: impl FnMut() -> Result<(u64, Option<u64>)>,
) -> Result<Sample> {
    let machine0 = sys::system_cpu()?;
    let source0 = sys::process_cpu_ticks(source_pid)?;
    let (frames0, skipped0) = counts()?;
    let cpu0 = sys::process_cpu_ticks(pid)?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(params.window_s));
    let cpu1 = sys::process_cpu_ticks(pid)
        .with_context(|| format!("{} exited during the window", phase.as_str()))?;
    let wall_s = t0.elapsed().as_secs_f64();
    let (frames1, skipped1) = counts()?;
    let source1 = sys::process_cpu_ticks(source_pid)?;
    let machine1 = sys::system_cpu()?;
    let per_s = ticks.per_second as f64;
    Ok(Sample {
        phase,
        round,
        frames: frames1.saturating_sub(frames0),
        cpu_s: cpu1.saturating_sub(cpu0) as f64 / per_s,
        wall_s,
        source_cpu_s: source1.saturating_sub(source0) as f64 / per_s,
        machine_busy: machine1.busy_fraction_since(&machine0),
        rss_kib: sys::process_rss_kib(pid),
        skipped: skipped0.zip(skipped1).map(|(a, b)| b.saturating_sub(a)),
    })
}

/// A `gst-launch-1.0` child, killed when dropped.
struct Launch {
    child: Child,
    log: PathBuf,
}

impl Drop for Launch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn run_bare(
    fx: &Fixture,
    params: &IngestBenchParams,
    round: u32,
    ticks: sys::ClockTicks,
) -> Result<Sample> {
    let log = std::env::temp_dir().join(format!(
        "panoptes-bench-gst-launch-{}.log",
        std::process::id()
    ));
    let child = Command::new("gst-launch-1.0")
        .args(params.bare_launch_args(&fx.cameras))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log)?))
        .spawn()
        .context("spawning gst-launch-1.0 (is GStreamer installed?)")?;
    let mut launch = Launch { child, log };
    let counter = Arc::new(LaunchFrameCounter::default());
    let stdout = launch.child.stdout.take().context("gst-launch stdout")?;
    let feed = counter.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            feed.feed(&line);
        }
    });
    let pid = launch.child.id();
    let n = fx.cameras.len();
    wait_until(
        "every bare pipeline's first frame",
        FIRST_FRAME_TIMEOUT,
        || (counter.per_sink().values().filter(|&&v| v > 0).count() >= n).then_some(()),
    )
    .with_context(|| format!("gst-launch-1.0 stderr:\n{}", tail(&launch.log, 30)))?;
    std::thread::sleep(Duration::from_secs(params.warmup_s));
    if let Ok(Some(status)) = launch.child.try_wait() {
        bail!(
            "gst-launch-1.0 exited early ({status}):\n{}",
            tail(&launch.log, 30)
        );
    }
    measure(
        Phase::Bare,
        round,
        params,
        pid,
        fx.camsim.child.pid(),
        ticks,
        || Ok((counter.total(), None)),
    )
}

/// Per camera, the ingest counter `metric`.
fn ingest_counts(http: &str, metric: &str, ids: &[&str]) -> Option<Vec<u64>> {
    let text = scaffold::metrics_text(http)?;
    ids.iter()
        .map(|id| metric_value(&text, &format!("{metric}{{camera=\"{id}\"}}")).map(|v| v as u64))
        .collect()
}

fn ingest_frames(http: &str, ids: &[&str]) -> Option<Vec<u64>> {
    ingest_counts(http, "panoptes_ingest_frames_total", ids)
}

/// One ingest phase ([`Phase::Ingest`] or [`Phase::IngestDecodeAll`]); `tracing`: the node's
/// `[tracing]` section (default: off).
pub(crate) fn run_ingest(
    fx: &Fixture,
    params: &IngestBenchParams,
    (phase, round): (Phase, u32),
    ticks: sys::ClockTicks,
    tracing: Option<&panoptes_runtime::trace::TracingConfig>,
) -> Result<Sample> {
    let mut config = params.ingest_config(&fx.broker.bootstrap, &fx.cameras, phase);
    if let Some(t) = tracing {
        config.tracing = t.clone();
    }
    let mut node = panoptes_testkit::ingest::start(&config, &[])?;
    let http = node.http.clone();
    let log = node.proc.log_path();
    let ids: Vec<&str> = fx.cameras.iter().map(|(id, _)| id.as_str()).collect();
    wait_until(
        "every ingest camera's first frame",
        FIRST_FRAME_TIMEOUT,
        || ingest_frames(&http, &ids).filter(|v| v.iter().all(|&f| f > 0)),
    )
    .with_context(|| {
        format!(
            "panoptes-ingest stderr (log {}):\n{}",
            log.display(),
            tail(&log, 30)
        )
    })?;
    std::thread::sleep(Duration::from_secs(params.warmup_s));
    if !node.proc.is_running() {
        bail!("panoptes-ingest exited early:\n{}", tail(&log, 30));
    }
    let sample = measure(
        phase,
        round,
        params,
        node.proc.pid(),
        fx.camsim.child.pid(),
        ticks,
        || {
            let sum = |metric| ingest_counts(&http, metric, &ids).map(|v| v.iter().sum::<u64>());
            let frames = sum("panoptes_ingest_frames_total").context("reading ingest /metrics")?;
            Ok((frames, sum("panoptes_ingest_decode_skipped_total")))
        },
    )?;
    node.proc.terminate(Duration::from_secs(10))?;
    Ok(sample)
}

/// Runs the benchmark: starts the fixture, alternates the phases, writes the reports.
pub fn main(args: IngestArgs) -> Result<()> {
    let params = args.params();
    params.validate()?;
    let run = RunInfo::now("");
    let machine = sys::machine_info();
    let ticks = sys::clock_ticks();
    eprintln!(
        "panoptes-bench-ingest: {} cameras {}x{}@{} → {}x{}@{}, warm-up {} s, window {} s, {} round(s); {} CPUs ({})",
        params.cameras,
        params.source_width,
        params.source_height,
        params.source_fps,
        params.out_width,
        params.out_height,
        params.out_fps,
        params.warmup_s,
        params.window_s,
        params.rounds,
        machine.nproc,
        machine.cpu_model
    );
    let fx = Fixture::start(&params)?;
    let samples = run_rounds(&fx, &params, ticks)?;
    let bare_pipeline = params.bare_launch_args(&fx.cameras).join(" ");
    let report = IngestBenchReport::new(
        run,
        machine,
        ticks,
        std::env::var("GST_DEBUG").ok(),
        params,
        samples,
        bare_pipeline,
    )
    .context("no samples")?;
    scaffold::publish(&args.common, &report)?;
    scaffold::exit_if_missed(
        &args.common,
        report.within_target,
        &format!(
            "ratio {:.3} is above the target {:.2}",
            report.ratio, report.target_ratio
        ),
    );
    Ok(())
}

/// Every round's bare then ingest phase; fails on a phase without frames.
fn run_rounds(
    fx: &Fixture,
    params: &IngestBenchParams,
    ticks: sys::ClockTicks,
) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();
    for round in 1..=params.rounds {
        for phase in params.phases() {
            let sample = match phase {
                Phase::Bare => run_bare(fx, params, round, ticks),
                Phase::Ingest | Phase::IngestDecodeAll => {
                    run_ingest(fx, params, (phase, round), ticks, None)
                }
            }
            .with_context(|| format!("round {round}, phase {}", phase.as_str()))?;
            eprintln!(
                "round {round} {:>6}: {} frames ({:.1} fps) in {:.1} s, {:.2} CPU s → {:.2} ms/frame; camsim {:.2} CPU s, machine {:.0}% busy",
                phase.as_str(),
                sample.frames,
                sample.fps(),
                sample.wall_s,
                sample.cpu_s,
                sample.cpu_per_frame() * 1e3,
                sample.source_cpu_s,
                sample.machine_busy * 100.0
            );
            if sample.frames == 0 {
                bail!(
                    "round {round}, phase {}: no frames in the window",
                    phase.as_str()
                );
            }
            samples.push(sample);
        }
    }
    Ok(samples)
}
