//! `panoptes-worker`: consumes frames, runs the detector, publishes detection records.

use std::process::ExitCode;

use panoptes_runtime::node;
use panoptes_workers::config::ENV_SECTIONS;

fn main() -> ExitCode {
    node::main(
        "panoptes-worker",
        "Panoptes worker node.",
        ENV_SECTIONS,
        panoptes_workers::run,
    )
}
