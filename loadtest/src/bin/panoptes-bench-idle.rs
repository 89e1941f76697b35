//! `panoptes-bench-idle`: CPU per thread of idle Panoptes nodes, to show that none spins
//! (`panoptes_loadtest::bench::idle`; see `docs/benchmarks.md`).

use clap::Parser;
use panoptes_loadtest::bench::idle::run::{IdleArgs, main as bench};

fn main() -> anyhow::Result<()> {
    bench(IdleArgs::parse())
}
