//! `panoptes-camsim`: serve simulated RTSP cameras (see `panoptes_camsim`).
//!
//! Prints `RTSP=rtsp://…` and `CONTROL=http://…` on stdout when ready; logs go to stderr.

use clap::Parser;
use panoptes_camsim::cli::CamsimArgs;

fn main() -> anyhow::Result<()> {
    let args = CamsimArgs::parse();
    panoptes_runtime::telemetry::init("panoptes-camsim");
    let (config, formats) = args.into_parts()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let shutdown = panoptes_runtime::shutdown::root_token();
        panoptes_camsim::run(config, formats, shutdown.cancelled_owned()).await
    })?;
    Ok(())
}
