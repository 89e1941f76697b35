//! [`run`]: the worker node, in named steps: load the model, open the frames consumer, take
//! the assignment, build the home [`Lane`], serve HTTP, join the coordinator (coordinator
//! mode), then wait for a shutdown request or a stage's failure, drain and stop.
//!
//! Start order: configuration check, model load (a missing, corrupt or wrong-shaped model
//! stops the worker here, before any Kafka I/O; coordinator mode measures the capacity
//! here), consumer and partition resolution, the home lane (decode pool, consumer thread,
//! a publisher per partition), HTTP, coordinator mode's membership and controller
//! ([`crate::coordinated`]), then `HTTP=http://addr` on stdout. A stage's fatal failure
//! arrives as a typed [`crate::error::StageFailure`] through the [`FailureReporter`] and
//! starts the shutdown at once. Shutdown drains in pipeline order: (coordinator mode: drain
//! first, see [`CoordinatedNode::drain`]) the consumer stops, the decode pool and inference
//! thread finish what they hold, the publishers deliver it (exactly-once: commit their last
//! transaction), then at-least-once offsets are committed synchronously; the member agent
//! ends last.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use panoptes_coordinator_client::clock::ClockSync;
use panoptes_coordinator_client::{MemberAgent, RedisLink};
use panoptes_runtime::health::{self, Readiness};
use panoptes_runtime::kafka_link::KafkaLink;
use panoptes_schemas::ModelRef;
use rdkafka::consumer::Consumer;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::assignment::{Assignment, RedisAssignment};
use crate::config::{AssignmentSource, ConfigInvalid, WorkerConfig, parse_device};
use crate::coordinated::CoordinatedNode;
use crate::error::WorkerError;
use crate::failure::FailureReporter;
use crate::lane::{Lane, LaneBuilder, LaneContext};
use crate::metrics::WorkerMetrics;
use crate::pipeline::consume::{self, FramesConsumer};
use crate::pipeline::infer::{self, InferenceSpec, Started};
use crate::swap::{self, ModelSwitch, SwapSpec};

/// How long start-up waits for the broker's metadata.
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the worker until `cancel` fires (or a stage fails), then drains and returns.
pub async fn run(config: WorkerConfig, cancel: CancellationToken) -> Result<(), WorkerError> {
    config.validate()?;
    let metrics = WorkerMetrics::new()?;
    let readiness = Readiness::default();
    readiness.set("model", false, "loading");
    readiness.set("kafka", false, "not checked yet");
    let kafka_link = KafkaLink::new(&metrics.registry, "worker", readiness.clone())?;
    let _clock = start_cluster_clock(&config, &metrics)?;
    // Before the pipeline starts; flushed when `run` returns.
    let _traces = panoptes_runtime::trace::install(
        &config.tracing,
        "panoptes-worker",
        &config.worker_id,
        &metrics.registry,
        "worker",
    )
    .map_err(|e| ConfigInvalid(e.to_string()))?;
    let model = load_model(&config, &metrics, &readiness).await?;
    let _rollout = watch_rollout(&config, &model.spec)?;
    let (consumer, partitions) = open_frames_consumer(&config, &kafka_link).await?;
    tracing::info!(worker = %config.worker_id, region = %config.region, ?partitions, epoch = config.epoch, mode = ?config.delivery, source = ?config.assignment.source, "worker starting");
    let (assignment, epochs) = take_assignment(&config, &partitions).await?;

    // Fires on shutdown requests and on stage failures alike.
    let failed = cancel.child_token();
    let failures = FailureReporter::new(failed.clone());
    let ctx = LaneContext {
        config: config.clone(),
        inference: InferenceSpec {
            measure_capacity: false,
            ..model.spec
        },
        model: model.name,
        metrics: metrics.clone(),
        failures: failures.clone(),
        jobs_bound: jobs_bound(&config, partitions.len()),
        kafka_link: kafka_link.clone(),
        readiness: readiness.clone(),
    };
    let home = build_home_lane(&ctx, model.started, consumer.clone(), assignment, epochs).await?;
    metrics.partitions_owned.set(partitions.len() as i64);
    let http = Http::serve(&config, &metrics, &readiness).await?;
    let node = join_coordinator(&ctx, &home, model.capacity, http.addr).await?;
    println!("HTTP=http://{}", http.addr);
    let probe = tokio::spawn(probe_broker(
        consumer,
        config.kafka.frames_topic.clone(),
        readiness,
        kafka_link,
        node.as_ref().map(|n| n.agent().clone()),
        failed.clone(),
    ));

    failed.cancelled().await;
    tracing::info!("stopping");
    drain_and_stop(node, home, config.assignment.drain_timeout, &failures).await;
    let _ = probe.await;
    http.stop().await;
    tracing::info!("worker stopped");
    match failures.take() {
        Some(failure) => Err(WorkerError::Stage(failure)),
        None => Ok(()),
    }
}

/// With Redis (assignment source `redis` or `coordinator`): keeps the process's cluster
/// clock synchronised with the Redis server's (`panoptes_coordinator_client::clock`), the
/// time base of frame ages and latencies; it runs until the returned handle is dropped.
/// Static workers stay on their wall clock.
fn start_cluster_clock(
    config: &WorkerConfig,
    metrics: &WorkerMetrics,
) -> Result<Option<ClockSync>, WorkerError> {
    if config.assignment.source == AssignmentSource::Static {
        return Ok(None);
    }
    let link = RedisLink::open(&config.assignment.redis)?;
    Ok(Some(ClockSync::start(link, &metrics.registry, "worker")?))
}

/// The model as loaded at start.
struct StartModel {
    /// Its inference thread, waiting for the home lane.
    started: Started,
    /// How it was loaded (lanes of other clusters load their own instance the same way).
    spec: InferenceSpec,
    /// Name and version, as written into records.
    name: ModelRef,
    /// Capacity reported to the coordinator: configured, measured, or 0.
    capacity: f64,
}

/// Loads the model on the home lane's inference thread (coordinator mode without a
/// configured capacity also measures it) and reports it in readiness and metrics.
async fn load_model(
    config: &WorkerConfig,
    metrics: &WorkerMetrics,
    readiness: &Readiness,
) -> Result<StartModel, WorkerError> {
    let coordinated = config.assignment.source == AssignmentSource::Coordinator;
    let device = parse_device(&config.model.device).map_err(ConfigInvalid)?;
    let c = config.clone();
    let (model_path, manifest_path, swap) =
        tokio::task::spawn_blocking(move || start_model_files(&c)).await??;
    let spec = InferenceSpec {
        model_path,
        manifest_path,
        swap,
        device,
        intra_op_threads: config.model.intra_op_threads,
        max_batch: config.batching.max_batch,
        max_wait: config.batching.max_wait,
        measure_capacity: coordinated && config.assignment.capacity.is_none(),
    };
    let (s, m) = (spec.clone(), metrics.clone());
    let started = tokio::task::spawn_blocking(move || infer::spawn(s, m)).await??;
    let manifest = &started.manifest;
    let device = &config.model.device;
    let loaded = format!("{} {} on {device}", manifest.name, manifest.version);
    readiness.set("model", true, loaded);
    metrics
        .info
        .with_label_values(&[device, &manifest.name, &manifest.version])
        .set(1);
    metrics
        .model_info
        .with_label_values(&[&manifest.name, &manifest.version])
        .set(1);
    tracing::info!(model = %manifest.name, version = %manifest.version, %device, "model loaded");
    if let Some(fps) = started.capacity_fps {
        tracing::info!(
            frames_per_s = fps,
            max_batch = config.batching.max_batch,
            "capacity measured"
        );
    }
    Ok(StartModel {
        capacity: config
            .assignment
            .capacity
            .or(started.capacity_fps)
            .unwrap_or(0.0),
        name: ModelRef {
            name: manifest.name.clone(),
            version: manifest.version.clone(),
        },
        spec,
        started,
    })
}

/// The model files of the start and, with a repository, what hot swaps follow
/// ([`crate::swap`]): the configured version, else the `active` version of the group's
/// rollout record (read now; none is an error: fail closed rather than guess a version).
/// Blocking (Redis, SHA-256 of the model file).
fn start_model_files(
    config: &WorkerConfig,
) -> Result<(PathBuf, PathBuf, Option<SwapSpec>), WorkerError> {
    let m = &config.model;
    let (Some(repository), Some(name)) = (&m.repository, &m.name) else {
        return Ok((m.path.clone(), m.manifest_path(), None));
    };
    let switch = ModelSwitch::default();
    let version = match &m.version {
        Some(v) => v.clone(),
        None => {
            let link = RedisLink::open(&config.assignment.redis)?;
            let mut conn = link.connect(config.assignment.check_timeout)?;
            let group = &config.group;
            match swap::watch::read_rollout(&mut conn, group)? {
                Some(r) if &r.model == name => {
                    swap::watch::follow(&switch, &r);
                    r.active
                }
                Some(r) => {
                    return Err(WorkerError::StartModel(format!(
                        "the rollout record of group {group} names model {}, not {name}",
                        r.model
                    )));
                }
                None => {
                    return Err(WorkerError::StartModel(format!(
                        "no model.version configured and group {group} has no rollout record \
                         (panoptes models promote, or set model.version)"
                    )));
                }
            }
        }
    };
    let (model, manifest) = swap::loader::resolve(repository, name, &version)
        .map_err(|(_, e)| WorkerError::StartModel(format!("{name}@{version}: {e}")))?;
    tracing::info!(model = %name, %version, repository = %repository.display(), "model version resolved in the repository");
    let spec = SwapSpec {
        repository: repository.clone(),
        name: name.clone(),
        switch,
    };
    Ok((model, manifest, Some(spec)))
}

/// Follows the group's rollout record into the lanes' hot swaps, when the worker has a
/// repository and Redis ([`WorkerConfig::follows_rollout`]); stops when dropped.
fn watch_rollout(
    config: &WorkerConfig,
    spec: &InferenceSpec,
) -> Result<Option<swap::watch::RolloutWatch>, WorkerError> {
    let Some(swap) = spec.swap.as_ref().filter(|_| config.follows_rollout()) else {
        return Ok(None);
    };
    let link = RedisLink::open(&config.assignment.redis)?;
    let watch = swap::watch::RolloutWatch::start(
        link,
        config.group.clone(),
        swap.name.clone(),
        config.worker_id.clone(),
        swap.switch.clone(),
    )?;
    tracing::info!(group = %config.group, model = %swap.name, "following the group's rollout record");
    Ok(Some(watch))
}

/// Creates the home cluster's frames consumer and resolves the configured partitions
/// (none in coordinator mode: they are granted at run time).
async fn open_frames_consumer(
    config: &WorkerConfig,
    link: &KafkaLink,
) -> Result<(Arc<FramesConsumer>, Vec<i32>), WorkerError> {
    let coordinated = config.assignment.source == AssignmentSource::Coordinator;
    let kafka = config.kafka.clone();
    let worker_id = config.worker_id.clone();
    let configured = config.partitions.clone();
    let link = link.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let c = consume::create(&kafka, &worker_id, link)?;
        let p = if coordinated {
            Vec::new()
        } else {
            consume::resolve_partitions(&c, &kafka.frames_topic, &configured, METADATA_TIMEOUT)?
        };
        Ok::<_, rdkafka::error::KafkaError>((Arc::new(c), p))
    })
    .await??;
    Ok(opened)
}

/// The assignment source of the home lane when it must be read at start (the Redis source:
/// each configured partition must be recorded as this worker's) and the epoch each
/// partition starts at (static: the configured epoch; coordinator mode: none yet).
async fn take_assignment(
    config: &WorkerConfig,
    partitions: &[i32],
) -> Result<(Option<Arc<dyn Assignment>>, BTreeMap<i32, u64>), WorkerError> {
    match config.assignment.source {
        AssignmentSource::Static => Ok((
            None,
            partitions.iter().map(|&p| (p, config.epoch)).collect(),
        )),
        AssignmentSource::Redis => {
            let (a, topic, id, region, parts) = (
                config.assignment.clone(),
                config.kafka.frames_topic.clone(),
                config.worker_id.clone(),
                config.region.clone(),
                partitions.to_vec(),
            );
            let (source, epochs) = tokio::task::spawn_blocking(move || {
                RedisAssignment::connect(&a.redis, a.check_timeout, &id, &region, &topic, &parts)
            })
            .await??;
            tracing::info!(?epochs, "assignment taken from Redis");
            Ok((Some(Arc::new(source)), epochs))
        }
        AssignmentSource::Coordinator => Ok((None, BTreeMap::new())),
    }
}

/// Bound of a lane's consumer → decode channel: `partition_queue` per owned partition
/// (coordinator mode: room for 64 partitions, as they change at run time).
fn jobs_bound(config: &WorkerConfig, partitions: usize) -> usize {
    if config.assignment.source == AssignmentSource::Coordinator {
        config.partition_queue * 64
    } else {
        config.partition_queue * partitions.max(1)
    }
}

/// Builds the home cluster's lane around the model and consumer of the start, then starts
/// its partitions (static and Redis sources).
async fn build_home_lane(
    ctx: &LaneContext,
    started: Started,
    consumer: Arc<FramesConsumer>,
    assignment: Option<Arc<dyn Assignment>>,
    epochs: BTreeMap<i32, u64>,
) -> Result<Arc<Lane>, WorkerError> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let kafka = ctx.config.kafka.clone();
        let mut builder = LaneBuilder::new(&ctx, &ctx.config.region, kafka)
            .model(started)
            .consumer(consumer);
        if let Some(a) = assignment {
            builder = builder.assignment(a);
        }
        let lane = builder.build()?;
        // init_transactions blocks on the broker: off the runtime.
        for (&p, &epoch) in &epochs {
            lane.start_partition(p, epoch)?;
        }
        Ok::<_, WorkerError>(Arc::new(lane))
    })
    .await?
}

/// The HTTP server (`/healthz`, `/readyz`, `/metrics`).
struct Http {
    addr: SocketAddr,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Http {
    async fn serve(
        config: &WorkerConfig,
        metrics: &WorkerMetrics,
        readiness: &Readiness,
    ) -> Result<Self, WorkerError> {
        let cancel = CancellationToken::new();
        let router = health::router(metrics.registry.clone(), readiness.clone());
        let (addr, task) = health::serve(config.http.listen, router, cancel.clone()).await?;
        tracing::info!(%addr, "HTTP listening");
        Ok(Self { addr, cancel, task })
    }

    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// Coordinator mode: registers the member and starts the controller around the home lane.
async fn join_coordinator(
    ctx: &LaneContext,
    home: &Arc<Lane>,
    capacity: f64,
    addr: SocketAddr,
) -> Result<Option<CoordinatedNode>, WorkerError> {
    if ctx.config.assignment.source != AssignmentSource::Coordinator {
        return Ok(None);
    }
    let (ctx, lane) = (ctx.clone(), home.clone());
    let http = format!("http://{addr}");
    let node =
        tokio::task::spawn_blocking(move || CoordinatedNode::start(ctx, lane, capacity, http))
            .await??;
    Ok(Some(node))
}

/// Ordered shutdown: coordinator mode drains first (unless a stage failed) and stops its
/// lanes and membership; otherwise the home lane shuts down.
async fn drain_and_stop(
    node: Option<CoordinatedNode>,
    home: Arc<Lane>,
    drain_timeout: Duration,
    failures: &FailureReporter,
) {
    let failures = failures.clone();
    let drained = tokio::task::spawn_blocking(move || match node {
        Some(node) => {
            if !failures.has_failed() {
                node.drain(drain_timeout, || failures.has_failed());
            }
            // Lanes (the home lane among them) shut down in order; the agent goes last.
            node.stop();
        }
        None => home.shutdown(),
    })
    .await;
    if let Err(e) = drained {
        tracing::warn!(error = %e, "shutdown task failed");
    }
}

/// Readiness: the broker answers metadata requests for the frames topic (told to the
/// coordinator as `broker_ok` in coordinator mode).
async fn probe_broker(
    consumer: Arc<FramesConsumer>,
    topic: String,
    readiness: Readiness,
    link: KafkaLink,
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
                link.connected();
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
