//! `panoptes-bench-failover`: kill -9 a worker under load, N times; report the time from each
//! kill to the victim's partitions' next committed detections (p50, p99) and the checker's
//! accounting of the whole run. Writes `failover-bench.json` and `failover-bench.md` under
//! `--out`. With `--partitions-per-worker N`: two exactly-once workers owning N partitions
//! each, frames produced by the benchmark (`failover-64-bench.json` and `.md`). See
//! `docs/benchmarks.md`.

use anyhow::Result;
use clap::Parser;
use panoptes_loadtest::bench::failover::scale::{self, ScaleParams};
use panoptes_loadtest::bench::failover::{self, FailoverParams};
use panoptes_loadtest::bench::scaffold::{self, BenchReport, CommonArgs};

#[derive(Debug, Parser)]
#[command(about = "Worker failover time under load (kill -9), with the checker's accounting")]
struct Args {
    /// Kill trials [default: 20; --quick: 3].
    #[arg(long)]
    trials: Option<usize>,
    /// Cameras [default: 8; --quick: 4].
    #[arg(long)]
    cameras: Option<usize>,
    /// Workers [default: 3; --quick: 2].
    #[arg(long)]
    workers: Option<usize>,
    /// The scale mode: two exactly-once workers owning this many partitions each, frames
    /// produced by the benchmark, memory and threads per partition [--quick: 16; trials
    /// default 10, --quick 2].
    #[arg(long)]
    partitions_per_worker: Option<usize>,
    /// Scale mode: frames per second per partition [default: 1].
    #[arg(long)]
    fps: Option<u32>,
    /// `--out` (failover-bench.json and .md), `--quick`, `--check` (a failed trial or a p99
    /// of 2 s or more).
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if let Some(ppw) = args.partitions_per_worker {
        return scale(&args, ppw);
    }
    let mut p = if args.common.quick {
        FailoverParams::quick()
    } else {
        FailoverParams::full()
    };
    p.trials = args.trials.unwrap_or(p.trials);
    p.cameras = args.cameras.unwrap_or(p.cameras);
    p.workers = args.workers.unwrap_or(p.workers);
    let report = failover::run(&p, |l| eprintln!("{l}"))?;
    finish(
        &args.common,
        &report,
        report.accounting_clean(),
        report.within_target(),
    )
}

/// `--partitions-per-worker`: the failover of a worker owning many partitions.
fn scale(args: &Args, ppw: usize) -> Result<()> {
    let mut p = if args.common.quick {
        ScaleParams::quick()
    } else {
        ScaleParams::full()
    };
    p.partitions_per_worker = ppw;
    p.trials = args.trials.unwrap_or(p.trials);
    p.fps = args.fps.unwrap_or(p.fps);
    let report = scale::run(&p, |l| eprintln!("{l}"))?;
    finish(
        &args.common,
        &report,
        report.accounting_clean(),
        report.within_target(),
    )
}

/// Publishes the report; fails when the accounting is not clean, and (`--check`) exits 3 when
/// the target is missed.
fn finish(
    common: &CommonArgs,
    report: &impl BenchReport,
    accounting_clean: bool,
    within_target: bool,
) -> Result<()> {
    scaffold::publish(common, report)?;
    if !accounting_clean {
        anyhow::bail!("the checker found lost or unexplained duplicated frames");
    }
    scaffold::exit_if_missed(
        common,
        within_target,
        "a trial failed or the p99 recovery is not under 2 s",
    );
    Ok(())
}
