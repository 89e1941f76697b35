//! `panoptes-ingest`: pulls RTSP cameras and publishes their frames to Kafka.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use panoptes_ingest::config::{ENV_SECTIONS, IngestConfig};

/// Panoptes ingest node.
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
    panoptes_runtime::telemetry::init("panoptes-ingest");
    let config: IngestConfig = panoptes_runtime::config::load(cli.config.as_deref(), ENV_SECTIONS)
        .context("loading configuration")?;
    let cancel = panoptes_runtime::shutdown::root_token();
    panoptes_ingest::run(config, cancel).await?;
    Ok(())
}
