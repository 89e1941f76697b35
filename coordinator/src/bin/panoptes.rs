//! `panoptes`: the operator CLI (logic in `panoptes_coordinator::cli`).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = panoptes_coordinator::cli::Cli::parse();
    match panoptes_coordinator::cli::run(cli) {
        Ok(out) => {
            print!("{out}");
            if !out.is_empty() && !out.ends_with('\n') {
                println!();
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
