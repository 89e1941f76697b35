//! `panoptes-loadtest`: the whole system on one machine, as real processes.
//!
//! - `demo`: simulated cameras through the whole pipeline, detections printed live;
//! - `run`: N cameras at F fps and resolution R for T seconds, with a report (JSON, Markdown,
//!   PNG charts);
//! - `chaos --scenario NAME`: a bounded run with one kind of fault, recovery times and the
//!   checker's accounting.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    version,
    about = "Panoptes demo, load runs and chaos scenarios on one machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The live demo.
    Demo(panoptes_loadtest::demo::DemoArgs),
    /// A load run with a report.
    Run(panoptes_loadtest::run::RunArgs),
    /// A chaos scenario with a report.
    Chaos(panoptes_loadtest::chaos::ChaosArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo(a) => panoptes_loadtest::demo::main(a),
        Command::Run(a) => panoptes_loadtest::run::main(a),
        Command::Chaos(a) => panoptes_loadtest::chaos::main(a),
    }
}
