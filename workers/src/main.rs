//! `panoptes-worker`: consumes frames, runs the detector, publishes detection records.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use panoptes_workers::config::{ENV_SECTIONS, WorkerConfig};

/// Panoptes worker node.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file; `PANOPTES_<SECTION>__<KEY>` variables override it.
    #[arg(short, long, env = "PANOPTES_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    panoptes_runtime::telemetry::init("panoptes-worker");
    let config: WorkerConfig = panoptes_runtime::config::load(cli.config.as_deref(), ENV_SECTIONS)
        .context("loading configuration")?;
    let cancel = panoptes_runtime::shutdown::root_token();
    panoptes_workers::run(config, cancel)
        .await
        .context("panoptes-worker failed")?;
    Ok(())
}
