//! `panoptes-check`: reads `panoptes.frames`, `panoptes.detections` and
//! `panoptes.frames.dlq` while a run goes on and accounts for every frame (lost, duplicated,
//! reordered, skipped, dead-lettered, superseded by a newer assignment epoch), optionally
//! scoring detections against the synthetic scenes' ground truth.
//!
//! Prints a per-camera Markdown table; `--json PATH` writes the full report; `--strict`
//! exits with status 1 when any frame was lost or duplicated.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use panoptes_checker::{Checker, ReaderConfig};
use panoptes_scene::camera::CameraConfig;
use panoptes_schemas::topics;

/// Accounting checker for a Panoptes run.
#[derive(Debug, Parser)]
#[command(name = "panoptes-check", version)]
struct Args {
    /// Kafka bootstrap servers (overrides the `--kafka-config` file's).
    #[arg(long, env = "PANOPTES_BOOTSTRAP")]
    bootstrap: Option<String>,
    /// TOML file whose `[kafka]` table holds the connection keys a node's `[kafka]` shares:
    /// `bootstrap_servers`, `security_protocol`, `[kafka.tls]`, `[kafka.sasl]` (the password
    /// from `password_file` or `$PANOPTES_KAFKA_PASSWORD`), `[kafka.properties]`.
    #[arg(long, value_name = "FILE")]
    kafka_config: Option<PathBuf>,
    /// How long to read before reporting (e.g. `30s`, `5m`); until Ctrl-C when absent.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Longest time to keep draining after the stop, to catch up with the topics.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    drain: Duration,
    /// Frames topic.
    #[arg(long, default_value = topics::FRAMES)]
    frames_topic: String,
    /// Detections topic.
    #[arg(long, default_value = topics::DETECTIONS)]
    detections_topic: String,
    /// Dead-letter topic.
    #[arg(long, default_value = topics::FRAMES_DLQ)]
    dlq_topic: String,
    /// Camera spec as given to the simulator, e.g.
    /// `id=cam0,width=1280,height=720,fps=10,objects=3,seed=1` (repeatable; for accuracy).
    #[arg(long = "camera")]
    cameras: Vec<CameraConfig>,
    /// Decode frames and score detections against ground truth (needs `--camera`).
    #[arg(long)]
    accuracy: bool,
    /// Write the full report as JSON to this path.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exit with status 1 when any frame was lost or duplicated.
    #[arg(long)]
    strict: bool,
    /// Extra librdkafka setting `key=value` (repeatable).
    #[arg(long = "kafka", value_parser = parse_kv)]
    kafka: Vec<(String, String)>,
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.accuracy && args.cameras.is_empty() {
        tracing::warn!("--accuracy without --camera: nothing to score against");
    }
    let mut kafka =
        panoptes_runtime::config::KafkaClientConfig::load_for_tool(args.kafka_config.as_deref())
            .context("--kafka-config")?;
    if let Some(b) = &args.bootstrap {
        kafka.bootstrap_servers = b.clone();
    }
    let config = ReaderConfig {
        kafka,
        frames_topic: args.frames_topic.clone(),
        detections_topic: args.detections_topic.clone(),
        dlq_topic: args.dlq_topic.clone(),
        accuracy: args.accuracy,
        cameras: args.cameras.clone(),
        drain: args.drain,
        client_config: args.kafka.clone(),
    };
    let checker = Checker::start(config).context("starting the checker")?;
    let stop = checker.stop_token();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the signal runtime")?;
    runtime.block_on(async {
        let limit = async {
            match args.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        tokio::pin!(limit);
        loop {
            tokio::select! {
                _ = &mut limit => break,
                _ = tokio::signal::ctrl_c() => {
                    tracing::info!("Ctrl-C: draining");
                    break;
                }
                _ = ticker.tick() => {
                    let p = checker.progress();
                    tracing::info!(frames = p.frames, detections = p.detections, dead_letters = p.dead_letters, "read so far");
                    if checker.is_finished() {
                        break;
                    }
                }
            }
        }
    });
    stop.stop();
    let report = checker.finish().context("checker failed")?;

    print!("{}", report.to_markdown());
    if let Some(path) = &args.json {
        let json = serde_json::to_vec_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
    }
    if args.strict && report.has_loss_or_duplicates() {
        eprintln!(
            "strict: {} lost, {} malformed lost, {} duplicated",
            report.total.lost, report.malformed_lost, report.total.duplicated
        );
        std::process::exit(1);
    }
    Ok(())
}
