//! `panoptes-bench-worker`: images per second of `panoptes-worker` against a tight libtorch
//! forward loop, as a ratio measured in the same run, then end-to-end latency
//! (`panoptes_loadtest::bench::worker`; see `docs/benchmarks.md`).

use clap::Parser;
use panoptes_loadtest::bench::worker::run::{WorkerArgs, main as bench};

fn main() -> anyhow::Result<()> {
    bench(WorkerArgs::parse())
}
