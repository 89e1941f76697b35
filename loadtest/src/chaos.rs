//! `panoptes-loadtest chaos` (being written).

/// Arguments of `panoptes-loadtest chaos`.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {}

/// Runs `panoptes-loadtest chaos`.
pub fn main(_args: ChaosArgs) -> anyhow::Result<()> {
    anyhow::bail!("panoptes-loadtest chaos is not written yet")
}
