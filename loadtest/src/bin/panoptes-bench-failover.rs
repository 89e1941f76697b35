//! `panoptes-bench-failover`: kill -9 a worker under load, N times; report the time from each
//! kill to the victim's partitions' next committed detections (p50, p99) and the checker's
//! accounting of the whole run. Writes `failover-bench.json` and `failover-bench.md` under
//! `--out`. See `docs/benchmarks.md`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use panoptes_loadtest::bench::failover::{self, FailoverParams};

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
    /// A short run (CI).
    #[arg(long)]
    quick: bool,
    /// Output folder for the reports.
    #[arg(long, default_value = "loadtest/reports")]
    out: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let mut p = if args.quick {
        FailoverParams::quick()
    } else {
        FailoverParams::full()
    };
    if let Some(t) = args.trials {
        p.trials = t;
    }
    if let Some(c) = args.cameras {
        p.cameras = c;
    }
    if let Some(w) = args.workers {
        p.workers = w;
    }
    let report = failover::run(&p, |l| eprintln!("{l}"))?;
    let md = report.to_markdown();
    println!("{md}");
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    std::fs::write(
        args.out.join("failover-bench.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(args.out.join("failover-bench.md"), md)?;
    if !report.accounting_clean() {
        anyhow::bail!("the checker found lost or unexplained duplicated frames");
    }
    Ok(())
}
