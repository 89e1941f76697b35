//! `panoptes-bench-overload`: a worker group's capacity measured, then twice that load for
//! the same time with and without priority degradation, in one run: per-camera delivered
//! rate, p99 end-to-end latency, Kafka bytes in, stale skips, shed and restore times and the
//! checker's verdict. Writes `overload-bench.json` and `overload-bench.md` under `--out`
//! (`panoptes_loadtest::bench::overload`; see `docs/benchmarks.md`). `--render` runs
//! nothing: it rewrites the report pair from `overload-bench.json` under `--out` (after the
//! report generator changed).

use anyhow::{Context, Result};
use clap::Parser;
use panoptes_loadtest::bench::overload::{self, OverloadParams};
use panoptes_loadtest::bench::scaffold::{self, CommonArgs};

#[derive(Debug, Parser)]
#[command(about = "Overload at 2x measured capacity, with and without priority degradation")]
struct Args {
    /// Cameras [default: 6].
    #[arg(long)]
    cameras: Option<usize>,
    /// Seconds of each overload phase [default: 120; --quick: 20].
    #[arg(long)]
    phase_secs: Option<u64>,
    /// The worker's reference detector is slowed this many times, so that the simulator's
    /// 15 fps can offer twice its capacity [default: 3].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=20))]
    slow_factor: Option<u32>,
    /// Run nothing: rewrite the report from the `overload-bench.json` under `--out`.
    #[arg(long)]
    render: bool,
    /// `--out` (overload-bench.json and .md), `--quick`, `--check` (a criterion missed).
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.render {
        let path = args.common.out.join("overload-bench.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let report: overload::OverloadReport = serde_json::from_str(&text)?;
        return scaffold::publish(&args.common, &report);
    }
    let mut p = if args.common.quick {
        OverloadParams::quick()
    } else {
        OverloadParams::full()
    };
    p.cameras = args.cameras.unwrap_or(p.cameras);
    p.phase_secs = args.phase_secs.unwrap_or(p.phase_secs);
    p.slow_factor = args.slow_factor.unwrap_or(p.slow_factor);
    let report = overload::run(&p, |l| eprintln!("{l}"))?;
    scaffold::publish(&args.common, &report)?;
    let missed: Vec<&str> = report
        .verdict()
        .into_iter()
        .filter(|(_, ok)| !ok)
        .map(|(k, _)| k)
        .collect();
    scaffold::exit_if_missed(&args.common, missed.is_empty(), &missed.join(", "));
    Ok(())
}
