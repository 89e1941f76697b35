//! `panoptes-model-validate`: measures a model on a golden set on this machine's device and
//! prints (and with `--write` stores) its validation result.
//!
//! ```text
//! panoptes-model-validate --repository DIR --model NAME --version V --golden DIR
//!     [--device cpu|cuda:N] [--batch 8] [--latency-passes 30] [--threads N] [--write] [--json]
//! panoptes-model-validate --model-file X.pt [--manifest X.json] --golden DIR [...]
//! ```
//! A repository model is resolved with its integrity checked (SHA-256 of `model.pt` against
//! its manifest) and loaded exactly as a worker loads it; `--write` replaces the manifest's
//! result for the same device class and golden set (or appends one). `--model-file` is for
//! quick use and never writes. Exit status 0 when the run completed, whatever the figures:
//! pass or fail is the coordinator gate's decision at promote time.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use panoptes_coordinator_client::models::ModelRepository;
use panoptes_workers::config::parse_device;
use panoptes_workers::model::LoadedModel;
use panoptes_workers::validate::{self, GoldenSet, Options};
use panoptes_workers::{cuda, tch};

/// Measures a model's precision, recall (IoU 0.5) and forward p99 on a golden set.
#[derive(Debug, Parser)]
#[command(name = "panoptes-model-validate", disable_version_flag = true)]
struct Args {
    /// Model repository folder.
    #[arg(long, requires_all = ["model", "version"], conflicts_with = "model_file")]
    repository: Option<PathBuf>,
    /// Model name in the repository.
    #[arg(long, requires = "repository")]
    model: Option<String>,
    /// Model version in the repository.
    #[arg(long, requires = "repository")]
    version: Option<String>,
    /// A TorchScript file outside any repository.
    #[arg(long, required_unless_present = "repository")]
    model_file: Option<PathBuf>,
    /// Its manifest (default `<stem>.json`, else `manifest.json`, next to it).
    #[arg(long, requires = "model_file")]
    manifest: Option<PathBuf>,
    /// Golden-set folder (`index.json` and JPEGs).
    #[arg(long)]
    golden: PathBuf,
    /// Inference device: `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    device: tch::Device,
    /// Images per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Timed forward passes for the p99.
    #[arg(long, default_value_t = 30)]
    latency_passes: usize,
    /// libtorch intra-op threads (default: libtorch's choice, as the worker).
    #[arg(long)]
    threads: Option<i32>,
    /// Store the result in the repository manifest.
    #[arg(long, requires = "repository")]
    write: bool,
    /// Print the result as one JSON line instead of text.
    #[arg(long)]
    json: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    cuda::ensure_device(args.device)?;
    let repository = match &args.repository {
        Some(dir) => Some(
            ModelRepository::open(dir)
                .with_context(|| format!("opening repository {}", dir.display()))?,
        ),
        None => None,
    };
    let (model_path, manifest_path) = match (&repository, &args.model_file) {
        (Some(repo), _) => {
            let (name, version) = (args.model.as_deref(), args.version.as_deref());
            let resolved = repo
                .resolve(name.unwrap_or_default(), version.unwrap_or_default())
                .context("resolving the model")?;
            (resolved.model_path, resolved.manifest_path)
        }
        (None, Some(file)) => {
            let manifest = args.manifest.clone().unwrap_or_else(|| {
                let stem = file.with_extension("json");
                if stem.exists() {
                    stem
                } else {
                    file.with_file_name("manifest.json")
                }
            });
            (file.clone(), manifest)
        }
        (None, None) => anyhow::bail!("give --repository/--model/--version or --model-file"),
    };
    let model = LoadedModel::load(&model_path, &manifest_path, args.device)?;
    let golden = GoldenSet::open(&args.golden)?;
    let opts = Options {
        batch: args.batch,
        latency_passes: args.latency_passes,
    };
    let report = validate::run(&model, &golden, opts)?;
    let r = &report.result;
    if args.json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        let m = model.manifest();
        println!(
            "{}@{} on {} ({}), golden set {}: {} frames",
            m.name,
            m.version,
            r.device_class,
            model_path.display(),
            r.golden_set,
            r.frames
        );
        println!(
            "precision {:.4}  recall {:.4}  (IoU >= 0.5, score >= {})",
            r.precision, r.recall, m.score_threshold
        );
        for (class, c) in &report.tally.per_class {
            println!(
                "  {class:<16} tp {:>5}  fp {:>5}  fn {:>5}  precision {:.4}  recall {:.4}",
                c.tp,
                c.fp,
                c.fn_,
                c.precision(),
                c.recall()
            );
        }
        println!(
            "forward p99 {:.2} ms at batch {} over {} passes (median {:.2} ms)",
            r.latency_p99_ms,
            r.batch,
            report.latencies_ms.len(),
            validate::matching::quantile(&report.latencies_ms, 0.5)
        );
    }
    if let (true, Some(repo), Some(name), Some(version)) =
        (args.write, &repository, &args.model, &args.version)
    {
        repo.record_validation(name, version, report.result.clone())
            .context("recording the result")?;
        if !args.json {
            println!("stored in {}", manifest_path.display());
        }
    }
    Ok(())
}
