//! `panoptes-ingest`: pulls RTSP cameras and publishes their frames to Kafka.

use std::process::ExitCode;

use panoptes_ingest::config::ENV_SECTIONS;
use panoptes_runtime::node;

fn main() -> ExitCode {
    node::main(
        "panoptes-ingest",
        "Panoptes ingest node.",
        ENV_SECTIONS,
        panoptes_ingest::run,
    )
}
