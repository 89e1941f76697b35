//! `panoptes-loadtest run` (being written).

/// Arguments of `panoptes-loadtest run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {}

/// Runs `panoptes-loadtest run`.
pub fn main(_args: RunArgs) -> anyhow::Result<()> {
    anyhow::bail!("panoptes-loadtest run is not written yet")
}
