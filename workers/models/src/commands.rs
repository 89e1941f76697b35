//! The `golden` and `variant` subcommands of `panoptes-models`.

use std::path::{Path, PathBuf};

use clap::{ArgGroup, Subcommand};
use panoptes_models::golden::{GoldenSpec, generate_golden};
use panoptes_models::variant::{Degradation, generate_variant};
use panoptes_workers::model::{ManifestFile, ModelManifest};

/// Subcommands beside the default model generation.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Writes a golden set: simulator frames (JPEG) with exact ground truth in `index.json`.
    Golden {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Number of frames.
        #[arg(long, default_value_t = 40)]
        frames: usize,
        /// Frame width.
        #[arg(long, default_value_t = 640)]
        width: u32,
        /// Frame height.
        #[arg(long, default_value_t = 360)]
        height: u32,
        /// Scene seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Name of the set (its id is `<name>@<12 hex of sha256(index.json)>`).
        #[arg(long, default_value = "scenes")]
        name: String,
    },
    /// Writes a degraded copy of a model as `OUT/model.pt` + `OUT/manifest.json`.
    #[command(group(ArgGroup::new("how").required(true).args(["drop_class", "slow_factor", "fail_on_frames"])))]
    Variant {
        /// The source TorchScript file.
        #[arg(long)]
        from: PathBuf,
        /// Its manifest (default: `<stem>.json`, else `manifest.json`, next to it).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Never report this class (its score is zeroed).
        #[arg(long)]
        drop_class: Option<String>,
        /// Do this many times the work, with identical output.
        #[arg(long)]
        slow_factor: Option<u32>,
        /// Fail the forward pass on every input but zeros (loads and warms up, breaks on the
        /// first real frame).
        #[arg(long)]
        fail_on_frames: bool,
        /// Version of the variant (default `<source version>-no-<class>` / `-slow<N>`).
        #[arg(long)]
        version: Option<String>,
    },
}

/// The manifest next to a model file: `<stem>.json`, else `manifest.json`.
fn manifest_next_to(model: &Path) -> PathBuf {
    let stem = model.with_extension("json");
    if stem.exists() {
        stem
    } else {
        model.with_file_name("manifest.json")
    }
}

/// Runs a subcommand.
pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Golden {
            out,
            frames,
            width,
            height,
            seed,
            name,
        } => {
            let spec = GoldenSpec {
                name,
                frames,
                width,
                height,
                seed,
            };
            let set = generate_golden(&out, &spec)?;
            let objects: usize = set.index.frames.iter().map(|f| f.objects.len()).sum();
            println!(
                "golden set {} ({} frames, {objects} objects {:?}) -> {}",
                set.id,
                set.index.frames.len(),
                set.index.class_counts(),
                out.display()
            );
        }
        Command::Variant {
            from,
            manifest,
            out,
            drop_class,
            slow_factor,
            fail_on_frames,
            version,
        } => {
            let manifest_path = manifest.unwrap_or_else(|| manifest_next_to(&from));
            let source = ModelManifest::from_file(&manifest_path)?;
            let degradation = match (drop_class, slow_factor, fail_on_frames) {
                (Some(c), _, _) => Degradation::DropClass(c),
                (None, Some(f), _) => Degradation::Slow(f),
                (None, None, true) => Degradation::FailOnFrames,
                (None, None, false) => {
                    anyhow::bail!("give --drop-class, --slow-factor or --fail-on-frames")
                }
            };
            let v = generate_variant(&from, &source, &degradation, &out, version.as_deref())?;
            println!(
                "{} {} ({}) -> {}",
                v.manifest.name,
                v.manifest.version,
                degradation.suffix(),
                v.model_path.display()
            );
        }
    }
    Ok(())
}
