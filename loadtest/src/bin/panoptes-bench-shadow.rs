//! `panoptes-bench-shadow`: the primary's end-to-end latency with a shadow rollout on and off,
//! in alternating phases of one run (`panoptes_loadtest::bench::shadow`; see
//! `docs/benchmarks.md`).

use clap::Parser;
use panoptes_loadtest::bench::shadow::run::{ShadowArgs, main as bench};

fn main() -> anyhow::Result<()> {
    bench(ShadowArgs::parse())
}
