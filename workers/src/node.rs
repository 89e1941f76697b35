//! [`run`]: wires the worker's stages together, serves HTTP, and shuts down in order.
//!
//! Start order: configuration check, model load (a missing, corrupt or wrong-shaped model
//! stops the worker here, before any Kafka I/O; coordinator mode measures the capacity
//! here), consumer and partition resolution, the home [`Lane`] (decode pool, consumer thread,
//! a publisher per partition), HTTP, coordinator mode's membership and controller
//! ([`crate::coordinated`]), then `HTTP=http://addr` on stdout. Shutdown drains in pipeline
//! order: (coordinator mode: drain first, see [`CoordinatedNode::drain`]) the consumer
//! stops, the decode pool and inference thread finish what they hold, the publishers
//! deliver it (exactly-once: commit their last transaction), then at-least-once offsets are
//! committed synchronously; the member agent ends last.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use panoptes_coordinator_client::{CoordError, MemberAgent};
use panoptes_runtime::health::{self, Readiness};
use panoptes_schemas::ModelRef;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

use crate::assignment::{Assignment, AssignmentError, RedisAssignment, StaticAssignment};
use crate::config::{AssignmentSource, WorkerConfig};
use crate::consumer;
use crate::coordinated::CoordinatedNode;
use crate::error::ModelError;
use crate::inference::{self, InferenceSpec};
use crate::lane::{FatalHook, Lane, LaneSpec};
use crate::metrics::WorkerMetrics;
use crate::publisher::PublishError;

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
    /// The coordinator's Redis could not be reached at start, or refused the membership.
    #[error("coordination: {0}")]
    Coordination(#[from] CoordError),
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
    let coordinated = config.assignment.source == AssignmentSource::Coordinator;
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
        measure_capacity: coordinated && config.assignment.capacity.is_none(),
    };
    let (s, m) = (spec.clone(), metrics.clone());
    let started = tokio::task::spawn_blocking(move || inference::spawn(s, m))
        .await
        .map_err(|e| WorkerError::Stage(e.to_string()))??;
    let manifest = started.manifest.clone();
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
    let capacity = config
        .assignment
        .capacity
        .or(started.capacity_fps)
        .unwrap_or(0.0);
    if let Some(fps) = started.capacity_fps {
        tracing::info!(
            frames_per_s = fps,
            max_batch = config.batching.max_batch,
            "capacity measured"
        );
    }
    let model_ref = ModelRef {
        name: manifest.name.clone(),
        version: manifest.version.clone(),
    };

    let kafka = config.kafka.clone();
    let worker_id = config.worker_id.clone();
    let configured = config.partitions.clone();
    let (consumer, partitions) = tokio::task::spawn_blocking(move || {
        let c = consumer::create(&kafka, &worker_id)?;
        let p = if coordinated {
            Vec::new()
        } else {
            consumer::resolve_partitions(&c, &kafka.frames_topic, &configured, METADATA_TIMEOUT)?
        };
        Ok::<_, rdkafka::error::KafkaError>((Arc::new(c), p))
    })
    .await
    .map_err(|e| WorkerError::Stage(e.to_string()))??;
    tracing::info!(worker = %config.worker_id, region = %config.region, ?partitions, epoch = config.epoch, mode = ?config.delivery, source = ?config.assignment.source, "worker starting");

    let (assignment, epochs): (Arc<dyn Assignment>, BTreeMap<i32, u64>) =
        match config.assignment.source {
            AssignmentSource::Static => (
                Arc::new(StaticAssignment::new(config.epoch)),
                partitions.iter().map(|&p| (p, config.epoch)).collect(),
            ),
            AssignmentSource::Redis => {
                let (a, topic, id, region, parts) = (
                    config.assignment.clone(),
                    config.kafka.frames_topic.clone(),
                    config.worker_id.clone(),
                    config.region.clone(),
                    partitions.clone(),
                );
                let (source, epochs) = tokio::task::spawn_blocking(move || {
                    RedisAssignment::connect(
                        &a.redis_url,
                        a.check_timeout,
                        &id,
                        &region,
                        &topic,
                        &parts,
                    )
                })
                .await
                .map_err(|e| WorkerError::Stage(e.to_string()))??;
                tracing::info!(?epochs, "assignment taken from Redis");
                (Arc::new(source), epochs)
            }
            AssignmentSource::Coordinator => (
                Arc::new(RedisAssignment::open(
                    &config.assignment.redis_url,
                    config.assignment.check_timeout,
                    &config.worker_id,
                    &config.region,
                    &config.kafka.frames_topic,
                )?),
                BTreeMap::new(),
            ),
        };
    let fatal: Fatal = Arc::new(Mutex::new(None));
    // Fires on shutdown requests and on stage failures alike.
    let failed = cancel.child_token();
    let hook: FatalHook = {
        let (fatal, failed) = (fatal.clone(), failed.clone());
        Arc::new(move |msg| report(&fatal, &failed, msg))
    };

    // The home lane, then its partitions (static and Redis sources).
    let jobs_bound = if coordinated {
        config.partition_queue * 64
    } else {
        config.partition_queue * partitions.len().max(1)
    };
    let lane_spec = LaneSpec::from_config(
        &config,
        &config.region,
        config.kafka.clone(),
        assignment,
        metrics.clone(),
        hook.clone(),
        jobs_bound,
    );
    let (c, mr) = (consumer.clone(), model_ref.clone());
    let home = tokio::task::spawn_blocking(move || {
        let lane = Lane::start(lane_spec, started, mr, c)?;
        // init_transactions blocks on the broker: off the runtime.
        for (&p, &epoch) in &epochs {
            lane.start_partition(p, epoch)?;
        }
        Ok::<_, WorkerError>(Arc::new(lane))
    })
    .await
    .map_err(|e| WorkerError::Stage(e.to_string()))??;
    metrics.partitions_owned.set(partitions.len() as i64);

    // HTTP.
    let http_cancel = CancellationToken::new();
    let router = health::router(metrics.registry.clone(), readiness.clone());
    let (addr, http_task) = health::serve(config.http.listen, router, http_cancel.clone()).await?;
    tracing::info!(%addr, "HTTP listening");

    // Coordinator mode: membership and the controller.
    let node = if coordinated {
        let (cfg, lane, s, mr, m, h) = (
            config.clone(),
            home.clone(),
            spec.clone(),
            model_ref.clone(),
            metrics.clone(),
            hook.clone(),
        );
        let http = format!("http://{addr}");
        Some(
            tokio::task::spawn_blocking(move || {
                CoordinatedNode::start(cfg, lane, s, mr, m, h, capacity, http)
            })
            .await
            .map_err(|e| WorkerError::Stage(e.to_string()))??,
        )
    } else {
        None
    };
    println!("HTTP=http://{addr}");
    let agent = node.as_ref().map(|n| n.agent().clone());
    let probe = tokio::spawn(probe_broker(
        consumer.clone(),
        config.kafka.frames_topic.clone(),
        readiness.clone(),
        agent,
        failed.clone(),
    ));

    // The inference thread only ends early on an inference failure: without it no frame
    // can be accounted, so the worker stops (a restart resumes from the committed offsets).
    loop {
        tokio::select! {
            _ = failed.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if home.inference_stopped() || node.as_ref().is_some_and(CoordinatedNode::stage_stopped) {
                    report(&fatal, &failed, "the inference thread or the coordination controller stopped".into());
                }
            }
        }
    }
    tracing::info!("stopping");
    let drain_timeout = config.assignment.drain_timeout;
    let f = fatal.clone();
    let drained = tokio::task::spawn_blocking(move || {
        match node {
            Some(node) => {
                if f.lock().is_none() {
                    node.drain(drain_timeout, || f.lock().is_some());
                }
                // Lanes (the home lane among them) shut down in order; the agent goes last.
                node.stop();
            }
            None => home.shutdown(),
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

/// Readiness: the broker answers metadata requests for the frames topic (told to the
/// coordinator as `broker_ok` in coordinator mode).
async fn probe_broker(
    consumer: Arc<BaseConsumer>,
    topic: String,
    readiness: Readiness,
    agent: Option<MemberAgent>,
    cancel: CancellationToken,
) {
    loop {
        let (c, t) = (consumer.clone(), topic.clone());
        let result = tokio::task::spawn_blocking(move || {
            c.fetch_metadata(Some(&t), Duration::from_secs(2))
                .map(|md| md.topics().first().map_or(0, |t| t.partitions().len()))
        })
        .await;
        let ok = match result {
            Ok(Ok(n)) if n > 0 => {
                readiness.set("kafka", true, format!("{n} partitions"));
                true
            }
            Ok(Ok(_)) => {
                readiness.set("kafka", false, "frames topic has no partitions");
                false
            }
            Ok(Err(e)) => {
                readiness.set("kafka", false, e.to_string());
                false
            }
            Err(e) => {
                readiness.set("kafka", false, e.to_string());
                false
            }
        };
        if let Some(a) = &agent {
            a.set_broker_ok(ok);
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}
