//! `panoptes-bench-fleet`: the coordinator holding a large fleet of simulated members
//! (`panoptes_loadtest::fleet`; see `docs/benchmarks.md`, "Fleet scale"). `run` measures
//! and writes `fleet-bench.json` and `fleet-bench.md` under `--out`; `host` is the member
//! host the run starts (one process per group of members, so that a group can be killed).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use panoptes_loadtest::bench::scaffold::{self, CommonArgs};
use panoptes_loadtest::fleet::{self, FleetParams};

#[derive(Debug, Parser)]
#[command(
    about = "The coordinator with a large simulated fleet: grant time, round time, Redis load, mass failure"
)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Runs the benchmark.
    Run {
        /// Cameras per region [default: 1000; --quick: 100].
        #[arg(long)]
        cameras_per_region: Option<usize>,
        /// Regions [default: 3].
        #[arg(long)]
        regions: Option<usize>,
        /// Ingest members [default: 50; --quick: 8].
        #[arg(long)]
        ingest: Option<usize>,
        /// Workers [default: 100; --quick: 12].
        #[arg(long)]
        workers: Option<usize>,
        /// Steady-state window in seconds [default: 20; --quick: 4].
        #[arg(long)]
        window_s: Option<u64>,
        /// Do not wait for dead members to be pruned (coordinators that do not prune).
        #[arg(long)]
        no_prune: bool,
        /// `--out` (fleet-bench.json and .md), `--quick`, `--check` (not re-granted within
        /// the bound, or dead members not pruned).
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Hosts simulated members until stdin closes (started by `run`).
    Host {
        /// The host spec (JSON).
        #[arg(long)]
        spec: PathBuf,
    },
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Args::parse().cmd {
        Cmd::Host { spec } => fleet::host::run_host(&spec),
        Cmd::Run {
            cameras_per_region,
            regions,
            ingest,
            workers,
            window_s,
            no_prune,
            common,
        } => {
            let exe = std::env::current_exe()?;
            let mut p = if common.quick {
                FleetParams::quick(exe)
            } else {
                FleetParams::full(exe)
            };
            p.cameras_per_region = cameras_per_region.unwrap_or(p.cameras_per_region);
            p.regions = regions
                .unwrap_or(p.regions)
                .clamp(1, fleet::REGION_NAMES.len());
            p.ingest = ingest.unwrap_or(p.ingest);
            p.workers = workers.unwrap_or(p.workers);
            if let Some(w) = window_s {
                p.window = std::time::Duration::from_secs(w);
            }
            if no_prune {
                p.prune_wait = None;
                p.prune_dead_after = None;
            }
            let report = fleet::run::run(&p, |l| eprintln!("{l}"))?;
            scaffold::publish(&common, &report)?;
            let pruned = p.prune_wait.is_none() || report.pruned_s.is_some();
            scaffold::exit_if_missed(
                &common,
                report.regrant_within_bound() && pruned,
                "the mass failure was not re-granted within the bound, or dead members were not pruned",
            );
            Ok(())
        }
    }
}
