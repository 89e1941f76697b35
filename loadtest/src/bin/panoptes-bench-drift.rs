//! `panoptes-bench-drift`: the cost of the worker's drift statistics next to a JPEG decode,
//! and steady scenes watched for 10 minutes raising no drift
//! (`panoptes_loadtest::bench::drift`; see `docs/benchmarks.md`).

use clap::Parser;
use panoptes_loadtest::bench::drift::run::{DriftArgs, main as bench};

fn main() -> anyhow::Result<()> {
    bench(DriftArgs::parse())
}
