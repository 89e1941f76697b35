//! `panoptes-bench-failover`: kill -9 a worker under load, N times; report the time from each
//! kill to the victim's partitions' next committed detections (p50, p99) and the checker's
//! accounting of the whole run. Writes `failover-bench.json` and `failover-bench.md` under
//! `--out`. See `docs/benchmarks.md`.

use anyhow::Result;
use clap::Parser;
use panoptes_loadtest::bench::failover::{self, FailoverParams};
use panoptes_loadtest::bench::scaffold::{self, CommonArgs};

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
    /// `--out` (failover-bench.json and .md), `--quick`, `--check` (a failed trial or a p99
    /// of 2 s or more).
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut p = if args.common.quick {
        FailoverParams::quick()
    } else {
        FailoverParams::full()
    };
    p.trials = args.trials.unwrap_or(p.trials);
    p.cameras = args.cameras.unwrap_or(p.cameras);
    p.workers = args.workers.unwrap_or(p.workers);
    let report = failover::run(&p, |l| eprintln!("{l}"))?;
    scaffold::publish(&args.common, &report)?;
    if !report.accounting_clean() {
        anyhow::bail!("the checker found lost or unexplained duplicated frames");
    }
    scaffold::exit_if_missed(
        &args.common,
        report.within_target(),
        "a trial failed or the p99 recovery is not under 2 s",
    );
    Ok(())
}
