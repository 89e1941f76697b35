//! `panoptes-bench-trace`: CPU per frame of `panoptes-worker` and `panoptes-ingest` with
//! tracing on (OTLP export to a real receiver, default sampling) against off, as a ratio
//! measured in the same run (`panoptes_loadtest::bench::trace_overhead`; see
//! `docs/benchmarks.md`, "Tracing overhead").

use clap::Parser;
use panoptes_loadtest::bench::trace_overhead::{TraceArgs, main as bench};

fn main() -> anyhow::Result<()> {
    bench(TraceArgs::parse())
}
