//! [`run`]: wires the worker's stages together, serves HTTP, and shuts down in order.
//!
//! Start order: configuration check, model load (a missing, corrupt or wrong-shaped model
//! stops the worker here, before any Kafka I/O), consumer and partition resolution,
//! publishers, decode pool, consumer thread, HTTP (`HTTP=http://addr` on stdout). Shutdown
//! drains in pipeline order: the consumer stops, the decode pool and inference thread finish
//! what they hold, the publishers deliver it (exactly-once: commit their last transaction),
//! then at-least-once offsets are committed synchronously.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use panoptes_runtime::health::{self, Readiness};
use panoptes_schemas::ModelRef;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use tokio_util::sync::CancellationToken;

use crate::assignment::{Assignment, AssignmentError, RedisAssignment, StaticAssignment};
use crate::config::{AssignmentSource, DeliveryMode, WorkerConfig};
use crate::consumer::{self, ConsumerLoop};
use crate::decode::{DecodeStage, RecordContext};
use crate::error::ModelError;
use crate::inference::{self, InferenceRun, InferenceSpec};
use crate::metrics::WorkerMetrics;
use crate::publisher::{self, EosPartition, PartitionState, PublishError, Router};

/// Why the worker could not start or had to stop. All fatal to the process.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigInvalid),
    /// The model could not be loaded or checked.
    #[error("cannot load the model")]
    Model(#[from] ModelError),
    /// A Kafka client could not be created or the frames topic is unknown.
    #[error("Kafka client failed")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Publishing failed in a way the worker cannot recover from in-process.
    #[error("publishing failed")]
    Publish(#[from] PublishError),
    /// The assignment source refused or could not answer at start.
    #[error("assignment: {0}")]
    Assignment(#[from] AssignmentError),
    /// Metrics registration failed (a bug).
    #[error("metrics registration failed")]
    Metrics(#[from] prometheus::Error),
    /// A thread or the HTTP port could not be started.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A stage stopped unexpectedly.
    #[error("{0}")]
    Stage(String),
}

/// How long start-up waits for the broker's metadata.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

type Fatal = Arc<Mutex<Option<String>>>;

/// Runs the worker until `cancel` fires (or a stage fails), then drains and returns.
pub async fn run(config: WorkerConfig, cancel: CancellationToken) -> Result<(), WorkerError> {
    config.validate()?;
    let metrics = WorkerMetrics::new()?;
    let readiness = Readiness::default();
    readiness.set("model", false, "loading");
    readiness.set("kafka", false, "not checked yet");

    let device = inference::parse_device(&config.model.device)
        .map_err(|e| WorkerError::Config(crate::config::ConfigInvalid(e)))?;
    let spec = InferenceSpec {
        model_path: config.model.path.clone(),
        manifest_path: config.model.manifest_path(),
        device,
        intra_op_threads: config.model.intra_op_threads,
        max_batch: config.batching.max_batch,
        max_wait: config.batching.max_wait,
    };
    let m = metrics.clone();
    let (manifest, inference_start, inference_thread) =
        tokio::task::spawn_blocking(move || inference::spawn(spec, m))
            .await
            .map_err(|e| WorkerError::Stage(e.to_string()))??;
    readiness.set(
        "model",
        true,
        format!(
            "{} {} on {}",
            manifest.name, manifest.version, config.model.device
        ),
    );
    metrics
        .info
        .with_label_values(&[&config.model.device, &manifest.name, &manifest.version])
        .set(1);
    tracing::info!(model = %manifest.name, version = %manifest.version, device = %config.model.device, "model loaded");

    let kafka = config.kafka.clone();
    let worker_id = config.worker_id.clone();
    let configured = config.partitions.clone();
    let (consumer, partitions) = tokio::task::spawn_blocking(move || {
        let c = consumer::create(&kafka, &worker_id)?;
        let p =
            consumer::resolve_partitions(&c, &kafka.frames_topic, &configured, METADATA_TIMEOUT)?;
        Ok::<_, rdkafka::error::KafkaError>((Arc::new(c), p))
    })
    .await
    .map_err(|e| WorkerError::Stage(e.to_string()))??;
    tracing::info!(worker = %config.worker_id, region = %config.region, ?partitions, epoch = config.epoch, mode = ?config.delivery, "worker starting");

    let (assignment, epochs): (Arc<dyn Assignment>, BTreeMap<i32, u64>) =
        match config.assignment.source {
            AssignmentSource::Static => (
                Arc::new(StaticAssignment::new(config.epoch)),
                partitions.iter().map(|&p| (p, config.epoch)).collect(),
            ),
            AssignmentSource::Redis => {
                let (a, topic, id, parts) = (
                    config.assignment.clone(),
                    config.kafka.frames_topic.clone(),
                    config.worker_id.clone(),
                    partitions.clone(),
                );
                let (source, epochs) = tokio::task::spawn_blocking(move || {
                    RedisAssignment::connect(&a.redis_url, a.check_timeout, &id, &topic, &parts)
                })
                .await
                .map_err(|e| WorkerError::Stage(e.to_string()))??;
                tracing::info!(?epochs, "assignment taken from Redis");
                (Arc::new(source), epochs)
            }
        };
    let states: Vec<Arc<PartitionState>> =
        partitions.iter().map(|&p| PartitionState::new(p)).collect();
    let (router, receivers) = Router::new(&partitions, config.partition_queue + 8);
    let fatal: Fatal = Arc::new(Mutex::new(None));
    // Fires on shutdown requests and on stage failures alike.
    let failed = cancel.child_token();

    // Publishers.
    let mut publisher_threads = Vec::new();
    let mut alo_producer = None;
    match config.delivery {
        DeliveryMode::AtLeastOnce => {
            let producer = Arc::new(publisher::alo_producer(
                &config.kafka,
                &config.worker_id,
                metrics.clone(),
            )?);
            for (state, (_, rx)) in states.iter().cloned().zip(receivers) {
                let (producer, cfg, m) = (producer.clone(), config.kafka.clone(), metrics.clone());
                let (fatal, failed) = (fatal.clone(), failed.clone());
                publisher_threads.push(
                    std::thread::Builder::new()
                        .name(format!("publish-{}", state.partition))
                        .spawn(move || {
                            if let Err(e) = publisher::run_alo(&producer, &cfg, state, rx, m) {
                                report(&fatal, &failed, e.to_string());
                            }
                        })?,
                );
            }
            alo_producer = Some(producer);
        }
        DeliveryMode::ExactlyOnce => {
            let mut eos = Vec::new();
            for (state, (_, rx)) in states.iter().cloned().zip(receivers) {
                let epoch = epochs
                    .get(&state.partition)
                    .copied()
                    .unwrap_or(config.epoch);
                let part = EosPartition {
                    cfg: config.kafka.clone(),
                    worker_id: config.worker_id.clone(),
                    state,
                    group: consumer.group_metadata().ok_or_else(|| {
                        WorkerError::Stage("consumer has no group metadata".into())
                    })?,
                    consumer: consumer.clone(),
                    assignment: assignment.clone(),
                    epoch,
                    commit_interval: config.commit_interval,
                    metrics: metrics.clone(),
                };
                eos.push((part, rx));
            }
            // init_transactions blocks on the broker: off the runtime.
            let eos = tokio::task::spawn_blocking(move || {
                eos.into_iter()
                    .map(|(part, rx)| part.producer().map(|p| (part, p, rx)))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await
            .map_err(|e| WorkerError::Stage(e.to_string()))??;
            for (part, producer, rx) in eos {
                let (fatal, failed) = (fatal.clone(), failed.clone());
                publisher_threads.push(
                    std::thread::Builder::new()
                        .name(format!("txn-{}", part.state.partition))
                        .spawn(move || {
                            if let Err(e) = part.run(&producer, rx) {
                                report(&fatal, &failed, e.to_string());
                            }
                        })?,
                );
            }
        }
    }

    // Decode pool and inference.
    let ctx = RecordContext {
        worker_id: config.worker_id.clone(),
        frames_topic: config.kafka.frames_topic.clone(),
        model: ModelRef {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
        },
        epoch: config.epoch,
        partition_epochs: Arc::new(epochs),
    };
    let total_bound = config.partition_queue * partitions.len().max(1);
    let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(total_bound);
    let (decoded_tx, decoded_rx) = crossbeam_channel::bounded(config.batching.max_batch * 2);
    let stage = Arc::new(DecodeStage {
        ctx: ctx.clone(),
        staleness: config.staleness.clone(),
        manifest: manifest.clone(),
        metrics: metrics.clone(),
        router: router.clone(),
    });
    let decode_threads = stage
        .clone()
        .spawn(config.decode_threads, jobs_rx, decoded_tx)?;
    inference_start
        .send(InferenceRun {
            frames: decoded_rx,
            ctx,
            router,
        })
        .map_err(|_| WorkerError::Stage("inference thread ended".into()))?;

    // Consumer.
    let c = consumer.clone();
    let topic = config.kafka.frames_topic.clone();
    let parts = partitions.clone();
    tokio::task::spawn_blocking(move || consumer::assign(&c, &topic, &parts))
        .await
        .map_err(|e| WorkerError::Stage(e.to_string()))??;
    let consumer_stop = CancellationToken::new();
    let consumer_loop = ConsumerLoop {
        consumer: consumer.clone(),
        topic: config.kafka.frames_topic.clone(),
        states: states.clone(),
        bound: config.partition_queue,
        jobs: jobs_tx,
        metrics: metrics.clone(),
        mode: config.delivery,
        commit_interval: config.commit_interval,
    };
    let stop = consumer_stop.clone();
    let consumer_thread = std::thread::Builder::new()
        .name("consumer".into())
        .spawn(move || consumer_loop.run(&stop))?;

    // HTTP.
    let http_cancel = CancellationToken::new();
    let router = health::router(metrics.registry.clone(), readiness.clone());
    let (addr, http_task) = health::serve(config.http.listen, router, http_cancel.clone()).await?;
    tracing::info!(%addr, "HTTP listening");
    println!("HTTP=http://{addr}");

    let probe = tokio::spawn(probe_broker(
        consumer.clone(),
        config.kafka.frames_topic.clone(),
        readiness.clone(),
        failed.clone(),
    ));

    // The inference thread only ends early on an inference failure: without it no frame
    // can be accounted, so the worker stops (a restart resumes from the committed offsets).
    loop {
        tokio::select! {
            _ = failed.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if inference_thread.is_finished() {
                    report(&fatal, &failed, "the inference thread stopped".into());
                }
            }
        }
    }
    tracing::info!("stopping");
    consumer_stop.cancel();
    let delivery = config.delivery;
    let topic = config.kafka.frames_topic.clone();
    let c = consumer.clone();
    let drained = tokio::task::spawn_blocking(move || {
        let _ = consumer_thread.join();
        for t in decode_threads {
            let _ = t.join();
        }
        drop(stage);
        let _ = inference_thread.join();
        for t in publisher_threads {
            let _ = t.join();
        }
        if let Some(p) = alo_producer {
            use rdkafka::producer::Producer;
            if let Err(e) = p.flush(Duration::from_secs(10)) {
                tracing::warn!(error = %e, "producer not fully flushed");
            }
        }
        if delivery == DeliveryMode::AtLeastOnce {
            consumer::commit(&c, &topic, &states, CommitMode::Sync);
        }
    })
    .await;
    if let Err(e) = drained {
        tracing::warn!(error = %e, "shutdown task failed");
    }
    let _ = probe.await;
    http_cancel.cancel();
    let _ = http_task.await;
    tracing::info!("worker stopped");
    match fatal.lock().take() {
        Some(msg) => Err(WorkerError::Stage(msg)),
        None => Ok(()),
    }
}

fn report(fatal: &Fatal, failed: &CancellationToken, msg: String) {
    tracing::error!(error = %msg, "a stage failed");
    fatal.lock().get_or_insert(msg);
    failed.cancel();
}

/// Readiness: the broker answers metadata requests for the frames topic.
async fn probe_broker(
    consumer: Arc<BaseConsumer>,
    topic: String,
    readiness: Readiness,
    cancel: CancellationToken,
) {
    loop {
        let (c, t) = (consumer.clone(), topic.clone());
        let result = tokio::task::spawn_blocking(move || {
            c.fetch_metadata(Some(&t), Duration::from_secs(2))
                .map(|md| md.topics().first().map_or(0, |t| t.partitions().len()))
        })
        .await;
        match result {
            Ok(Ok(n)) if n > 0 => readiness.set("kafka", true, format!("{n} partitions")),
            Ok(Ok(_)) => readiness.set("kafka", false, "frames topic has no partitions"),
            Ok(Err(e)) => readiness.set("kafka", false, e.to_string()),
            Err(e) => readiness.set("kafka", false, e.to_string()),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
