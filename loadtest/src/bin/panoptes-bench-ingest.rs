//! `panoptes-bench-ingest`: CPU per frame of `panoptes-ingest` against a bare `gst-launch-1.0`
//! pipeline, as a ratio measured in the same run (`panoptes_loadtest::bench::ingest`; see
//! `docs/benchmarks.md`).

use clap::Parser;
use panoptes_loadtest::bench::ingest::run::{IngestArgs, main as bench};

fn main() -> anyhow::Result<()> {
    bench(IngestArgs::parse())
}
