//! The processes of `panoptes-bench-idle`: a development broker, an ingest node without
//! cameras, an at-least-once and an exactly-once worker on empty partitions; then one
//! measured window of per-thread CPU (see [`super`]).

use std::time::Duration;

use anyhow::{Context, Result};
use panoptes_runtime::kafka_poll::PolledProducer;
use panoptes_testkit::kafka::{KafkaClientConfig, client_config};
use panoptes_testkit::{DevBroker, Node, unique_name};
use panoptes_testkit_stack::worker;
use panoptes_workers::config::DeliveryMode;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};

use super::{IdleReport, measure};
use crate::bench::scaffold::{self, CommonArgs, RunInfo};
use crate::bench::sys;

/// Arguments of `panoptes-bench-idle`.
#[derive(Debug, clap::Parser)]
#[command(about = "CPU per thread of idle Panoptes nodes (no thread should spin)")]
pub struct IdleArgs {
    /// Measured window, seconds [default: 30; --quick: 10].
    #[arg(long)]
    window: Option<u64>,
    /// Seconds to let the nodes settle before the window.
    #[arg(long, default_value_t = 5)]
    settle: u64,
    /// `--out` (idle-bench.json and .md), `--quick` (10 s window).
    #[command(flatten)]
    common: CommonArgs,
}

/// A node stopped gracefully when dropped.
struct Stopping(Node);

impl Drop for Stopping {
    fn drop(&mut self) {
        let _ = self.0.proc.terminate(Duration::from_secs(10));
    }
}

fn start_worker(
    broker: &DevBroker,
    model: &panoptes_models::GeneratedModel,
    mode: DeliveryMode,
) -> Result<Stopping> {
    let t = broker.create_topics(1)?;
    let mut c = worker::config(
        &unique_name("idle-worker"),
        &broker.bootstrap,
        &t,
        &unique_name("idle-group"),
        &model.model_path,
        &model.manifest_path,
    );
    c.partitions = vec![0];
    c.delivery = mode;
    Ok(Stopping(worker::start(&c, &[], Duration::from_secs(60))?))
}

/// Two idle producers on `bootstrap`, connected (one record each, delivered): rust-rdkafka's
/// `ThreadedProducer` (what the nodes used before) and [`PolledProducer`].
fn idle_producers(
    bootstrap: &str,
) -> Result<(
    ThreadedProducer<DefaultProducerContext>,
    PolledProducer<DefaultProducerContext>,
)> {
    let t = unique_name("idle-topic");
    let config = client_config(&KafkaClientConfig::plaintext(bootstrap), &[])?;
    let threaded: ThreadedProducer<DefaultProducerContext> = config.create()?;
    let polled: PolledProducer<DefaultProducerContext> =
        config.create_with_context(DefaultProducerContext)?;
    threaded
        .send(BaseRecord::<str, str>::to(&t).payload("x"))
        .map_err(|(e, _)| e)?;
    polled
        .send(BaseRecord::<str, str>::to(&t).payload("x"))
        .map_err(|(e, _)| e)?;
    threaded.flush(Duration::from_secs(10))?;
    polled.flush(Duration::from_secs(10))?;
    Ok((threaded, polled))
}

/// Runs the benchmark and writes the reports.
pub fn main(args: IdleArgs) -> Result<()> {
    let window = args
        .window
        .unwrap_or(if args.common.quick { 10 } else { 30 });
    let run = RunInfo::now("");
    let dir = std::env::temp_dir().join(unique_name("panoptes-bench-idle"));
    let model = panoptes_models::generate_reference(&dir).context("generating the model")?;
    let broker = DevBroker::start(1)?;
    let t = broker.create_topics(1)?;
    let ic =
        panoptes_testkit::ingest::config(&unique_name("idle-ingest"), &broker.bootstrap, &t.frames);
    let ingest = Stopping(panoptes_testkit::ingest::start(&ic, &[])?);
    let alo = start_worker(&broker, &model, DeliveryMode::AtLeastOnce)?;
    let eos = start_worker(&broker, &model, DeliveryMode::ExactlyOnce)?;
    // In this process: the same idle producer served both ways, for the before/after in
    // one run (threads `producer polling thread` and `kafka-poll`).
    let (threaded, polled) = idle_producers(&broker.bootstrap)?;
    eprintln!(
        "panoptes-bench-idle: nodes up; settling {} s, then a {window} s window",
        args.settle
    );
    std::thread::sleep(Duration::from_secs(args.settle));
    let procs = vec![
        (
            "panoptes-ingest (no cameras)".to_string(),
            ingest.0.proc.pid(),
        ),
        (
            "panoptes-worker (at-least-once, empty partition)".to_string(),
            alo.0.proc.pid(),
        ),
        (
            "panoptes-worker (exactly-once, empty partition)".to_string(),
            eos.0.proc.pid(),
        ),
        ("panoptes-devbroker (reference)".to_string(), broker.pid()),
        (
            "this process: an idle rust-rdkafka ThreadedProducer and an idle PolledProducer"
                .to_string(),
            std::process::id(),
        ),
    ];
    let (window_s, processes) = measure(&procs, Duration::from_secs(window))?;
    drop((ingest, alo, eos, threaded, polled));
    let _ = std::fs::remove_dir_all(&dir);
    let report = IdleReport {
        run,
        machine: sys::machine_info(),
        window_s,
        hz: sys::clock_ticks().per_second,
        processes,
    };
    scaffold::publish(&args.common, &report)
}
