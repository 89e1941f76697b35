//! `panoptes-camsim`: serve simulated RTSP cameras (see `panoptes_loadtest::camsim`).
//!
//! Prints `RTSP=rtsp://…` and `CONTROL=http://…` on stdout when ready; logs go to stderr.

use clap::Parser;
use panoptes_loadtest::camsim::{self, cli::CamsimArgs};
use tracing_subscriber::EnvFilter;

fn main() -> anyhow::Result<()> {
    let args = CamsimArgs::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let config = args.into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(camsim::run(config, camsim::shutdown_signal()))?;
    Ok(())
}
