//! `panoptes-devbroker` binary: parses the command line, sets up logging like every Panoptes
//! process ([`panoptes_runtime::telemetry`]) and calls [`panoptes_devbroker::run`].

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = panoptes_devbroker::Args::parse();
    panoptes_runtime::telemetry::init("panoptes-devbroker");
    panoptes_devbroker::run(args).await
}
