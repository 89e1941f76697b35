//! `panoptes-coordinator`: leader-elected membership and placement, and the operator API.

use std::process::ExitCode;

use panoptes_coordinator::config::ENV_SECTIONS;
use panoptes_runtime::node;

fn main() -> ExitCode {
    node::main(
        "panoptes-coordinator",
        "Panoptes coordinator.",
        ENV_SECTIONS,
        panoptes_coordinator::run,
    )
}
