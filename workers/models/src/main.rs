//! `panoptes-models`: generates the project's TorchScript test and benchmark models.
//!
//! ```text
//! panoptes-models [--out DIR] [--only reference|yolov8n-like] [--seed N]
//! ```
//! Writes `reference-detector.{pt,json}` and `yolov8n-like.{pt,json}` into `DIR` (default
//! `workers/models/`, the generated files git-ignored). Nothing is downloaded and no Python is
//! involved.
//!
//! ```text
//! panoptes-models golden --out DIR [--frames 40] [--width 640 --height 360] [--seed 1] [--name scenes]
//! panoptes-models variant --from MODEL.pt [--manifest M.json] --out DIR (--drop-class C | --slow-factor N) [--version V]
//! ```
//! `golden` writes a golden set (simulator frames with exact ground truth, see
//! `panoptes_models::golden`); `variant` a degraded copy of a model as `DIR/model.pt` +
//! `DIR/manifest.json` (see `panoptes_models::variant`).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};
use panoptes_models as models;

mod commands;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Which {
    Reference,
    Yolov8nLike,
}

/// Generates the project's TorchScript models.
#[derive(Debug, Parser)]
#[command(name = "panoptes-models", version)]
struct Args {
    /// Output folder.
    #[arg(long, env = "PANOPTES_MODELS_DIR")]
    out: Option<PathBuf>,
    /// Generate only this model.
    #[arg(long)]
    only: Option<Which>,
    /// Seed of the YOLOv8n-like model's random weights.
    #[arg(long, default_value_t = 8)]
    seed: i64,
    #[command(subcommand)]
    command: Option<commands::Command>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(command) = args.command {
        return commands::run(command);
    }
    let dir = args.out.unwrap_or_else(models::default_dir);
    let generated = match args.only {
        Some(Which::Reference) => vec![models::generate_reference(&dir)?],
        Some(Which::Yolov8nLike) => vec![models::generate_yolov8n_like(&dir, args.seed)?],
        None => vec![
            models::generate_reference(&dir)?,
            models::generate_yolov8n_like(&dir, args.seed)?,
        ],
    };
    for m in generated {
        let cost = match m.flops {
            Some(f) => format!(", {} parameters, {:.2} GFLOPs/image", m.parameters, f / 1e9),
            None => String::new(),
        };
        println!(
            "{} {} ({}{cost}) -> {}",
            m.manifest.name,
            m.manifest.version,
            m.manifest.output.as_str(),
            m.model_path.display()
        );
    }
    Ok(())
}
