//! `panoptes-loadtest run`: N simulated cameras at F fps and resolution R through the whole
//! system (simulator → ingest → Kafka → workers → Kafka) for T seconds, as real processes on
//! this machine, with a report a person reads: `report.json`, `report.md` and PNG charts
//! (throughput, latency over time, latency histogram, CPU per process).
//!
//! Steps: start a [`Stack`] (Redis, one development broker, the simulator, a coordinator,
//! the ingest nodes and workers), register the cameras, wait until every camera and
//! partition is assigned, start the checker and the [`Recorder`], record for T seconds,
//! stop intake (kill the ingest nodes), let the workers answer everything in Kafka, check.
//! The run fails (exit status 1, after writing the report) when the checker finds a frame
//! lost, a duplicate in exactly-once mode, or records out of capture order.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use panoptes_testkit::sys;

use crate::runreport::{INTAKE_STOPPED, RunFacts, RunParams, RunReport, SETTLED};
use crate::stack::{Stack, StackCamera, StackSpec};
use crate::timeline::Recorder;

/// Arguments of `panoptes-loadtest run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Simulated cameras (one frames partition each).
    #[arg(long, default_value_t = 4)]
    pub cameras: usize,
    /// Frames per second of every camera (source and sampled).
    #[arg(long, default_value_t = 5)]
    pub fps: u32,
    /// Source resolution of the simulated cameras, WIDTHxHEIGHT.
    #[arg(long, default_value = "640x360", value_parser = parse_resolution)]
    pub resolution: (u32, u32),
    /// Analytic box the ingest nodes scale frames into, WIDTHxHEIGHT (default: the source
    /// resolution).
    #[arg(long, value_parser = parse_resolution)]
    pub analytic: Option<(u32, u32)>,
    /// Seconds to record with intake running.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Workers (reference detector on the CPU, one thread each).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Ingest nodes.
    #[arg(long, default_value_t = 1)]
    pub ingest_nodes: usize,
    /// Exactly-once delivery (Kafka transactions); the default.
    #[arg(long, conflicts_with = "at_least_once")]
    pub exactly_once: bool,
    /// At-least-once delivery instead (duplicates are reported, not failures).
    #[arg(long)]
    pub at_least_once: bool,
    /// Report directory (default `loadtest/reports/run-<UTC timestamp>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Parses `640x360`.
pub fn parse_resolution(s: &str) -> Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X', '×'])
        .ok_or_else(|| format!("{s:?}: expected WIDTHxHEIGHT, e.g. 640x360"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<u32>()
            .ok()
            .filter(|&v| (16..=7680).contains(&v) && v % 2 == 0)
            .ok_or_else(|| format!("{s:?}: sizes must be even numbers from 16 to 7680"))
    };
    Ok((parse(w)?, parse(h)?))
}

fn log(msg: &str) {
    eprintln!("[run {}] {msg}", sys::utc_timestamp(SystemTime::now()));
}

/// The command line as given, starting at `panoptes-loadtest`.
fn command_line() -> String {
    let args = std::iter::once("panoptes-loadtest".to_string()).chain(std::env::args().skip(1));
    crate::bench::scaffold::command_line(args)
}

/// Runs `panoptes-loadtest run`.
pub fn main(args: RunArgs) -> Result<()> {
    let params = params(&args)?;
    // Fail before starting anything when the charts cannot be drawn.
    crate::charts::register_fonts()?;
    let started = Instant::now();
    let started_utc = sys::utc_timestamp(SystemTime::now());
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "loadtest/reports/run-{}",
            started_utc.replace(['-', ':'], "")
        ))
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let machine = sys::machine_info();
    log(&format!(
        "{}; {} s; report in {}",
        params.describe(),
        params.seconds,
        out.display()
    ));

    let (mut stack, settle) = start_stack(&params)?;
    let checker = stack.checker("local")?;
    let recorder = Recorder::start(&stack)?;
    record(&recorder, Duration::from_secs(params.seconds));
    recorder.mark(INTAKE_STOPPED);
    log("stopping intake; waiting for the workers to answer every frame in Kafka");
    let checked = stack.stop_intake_and_settle(checker, Duration::from_secs(120));
    recorder.mark(SETTLED);
    // One more second so the drain's last records land in a sample.
    std::thread::sleep(Duration::from_millis(1100));
    let timeline = recorder.finish();
    drop(stack);
    let checker_report = checked?;

    let title = format!(
        "{} cam × {} fps, {}×{}",
        params.cameras, params.fps, params.resolution.0, params.resolution.1
    );
    let charts = crate::charts::render(&timeline, &out, &title)?;
    let report = RunReport::build(
        RunFacts {
            command: command_line(),
            started_utc,
            wall_s: started.elapsed().as_secs_f64(),
            settle_s: settle.as_secs_f64(),
            params,
            machine,
        },
        checker_report,
        charts
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect(),
        &timeline,
    );
    write_report(&report, &out)?;
    if !report.verdict.pass {
        bail!("the run failed: {}", report.verdict.failures.join("; "));
    }
    Ok(())
}

/// The run's parameters from the arguments, refusing zero counts.
fn params(args: &RunArgs) -> Result<RunParams> {
    if args.cameras == 0 || args.workers == 0 || args.ingest_nodes == 0 {
        bail!("--cameras, --workers and --ingest-nodes must be at least 1");
    }
    if args.fps == 0 || args.seconds == 0 {
        bail!("--fps and --seconds must be at least 1");
    }
    Ok(RunParams {
        cameras: args.cameras,
        fps: args.fps,
        resolution: args.resolution,
        analytic: args.analytic.unwrap_or(args.resolution),
        seconds: args.seconds,
        workers: args.workers,
        ingest_nodes: args.ingest_nodes,
        exactly_once: !args.at_least_once,
    })
}

/// Starts the stack, its members and cameras; returns it with the time it took to settle
/// after the cameras were registered.
fn start_stack(params: &RunParams) -> Result<(Stack, Duration)> {
    let cameras: Vec<StackCamera> = (0..params.cameras)
        .map(|i| {
            StackCamera::with_resolution(
                &format!("cam{i}"),
                "local",
                params.fps,
                1 + i as u64,
                params.resolution,
                params.analytic,
            )
        })
        .collect();
    let mut spec = StackSpec::single_region(cameras, params.cameras as i32);
    spec.exactly_once = params.exactly_once;
    let mut stack = Stack::start(spec)?;
    for i in 0..params.ingest_nodes {
        stack.start_ingest(&format!("ingest-{i}"), "local")?;
    }
    for i in 0..params.workers {
        stack.start_worker(&format!("worker-{i}"), "local", "default")?;
    }
    stack.register_cameras()?;
    let settle = stack.wait_settled(Duration::from_secs(120))?;
    log(&format!(
        "stack settled {settle:.1?} after registering the cameras"
    ));
    Ok((stack, settle))
}

/// Lets intake run for `seconds`, logging the recorder's last sample every 10 s.
fn record(recorder: &Recorder, seconds: Duration) {
    let record_until = Instant::now() + seconds;
    let mut next_log = Instant::now() + Duration::from_secs(10);
    while Instant::now() < record_until {
        std::thread::sleep(
            record_until
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(200)),
        );
        if Instant::now() >= next_log {
            next_log += Duration::from_secs(10);
            if let Some(s) = recorder.last_sample() {
                let ms = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.0} ms"));
                log(&format!(
                    "t={:>4.0}s frames {:>5.1}/s detections {:>5.1}/s latency p50 {} p99 {} lag {} machine CPU {}",
                    s.t_s,
                    s.frames_per_s,
                    s.detections_per_s,
                    ms(s.latency_p50_ms),
                    ms(s.latency_p99_ms),
                    s.lag.map_or("–".into(), |l| l.to_string()),
                    s.machine_cpu_pct
                        .map_or("–".into(), |c| format!("{c:.0} %")),
                ));
            }
        }
    }
}

/// Writes `report.json` and `report.md` into `out` and logs the headline figures.
fn write_report(report: &RunReport, out: &std::path::Path) -> Result<()> {
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(report)? + "\n",
    )?;
    std::fs::write(out.join("report.md"), report.to_markdown())?;
    let th = &report.throughput;
    let ms = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.0} ms"));
    log(&format!(
        "frames in {:.1}/s, detections out {:.1}/s, latency p50 {} p99 {}, lost {}, duplicated {}",
        th.frames_in.mean_per_s,
        th.detections_out.mean_per_s,
        ms(report.latency_ms.p50),
        ms(report.latency_ms.p99),
        report.checker.total.lost,
        report.checker.total.duplicated,
    ));
    log(&format!("report: {}", out.join("report.md").display()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_resolution;

    #[test]
    fn resolutions() {
        assert_eq!(parse_resolution("640x360"), Ok((640, 360)));
        assert_eq!(parse_resolution("1280X720"), Ok((1280, 720)));
        assert!(parse_resolution("640").is_err());
        assert!(parse_resolution("641x360").is_err());
        assert!(parse_resolution("0x0").is_err());
    }
}
