//! `panoptes-coordinator`: leader-elected membership and placement, and the operator API.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use panoptes_coordinator::config::{CoordinatorConfig, ENV_SECTIONS};

/// Panoptes coordinator.
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
    panoptes_runtime::telemetry::init("panoptes-coordinator");
    let config: CoordinatorConfig =
        panoptes_runtime::config::load(cli.config.as_deref(), ENV_SECTIONS)
            .context("loading configuration")?;
    let cancel = panoptes_runtime::shutdown::root_token();
    panoptes_coordinator::run(config, cancel)
        .await
        .context("panoptes-coordinator failed")?;
    Ok(())
}
