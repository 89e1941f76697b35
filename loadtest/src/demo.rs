//! `panoptes-loadtest demo` (being written).

/// Arguments of `panoptes-loadtest demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

/// Runs `panoptes-loadtest demo`.
pub fn main(_args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("panoptes-loadtest demo is not written yet")
}
