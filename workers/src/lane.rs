//! A [`Lane`]: one instance of the [`crate::pipeline`] for the frames partitions of one Kafka
//! cluster, with a partition set that changes at run time.
//!
//! One lane = one frames consumer, a decode pool, one inference thread owning its own model
//! instance, and one publisher thread per running partition (at-least-once: one idempotent
//! producer shared by the lane; exactly-once: one transactional producer per partition).
//! Detections go to the same cluster as the frames (transactions need it). The static and
//! Redis sources run one lane (the home cluster) with a fixed set; coordinator mode
//! ([`crate::coordinated`]) runs the home lane from start and one lane per other cluster it
//! is granted partitions of.
//!
//! Every lane is built one way, by a [`LaneBuilder`] over the node's [`LaneContext`]: what it
//! is not handed (the home lane gets the model loaded at start and the consumer that resolved
//! the partitions) it creates itself (the cluster's assignment source, a consumer, a model
//! instance on its own inference thread).
//!
//! Partitions start with [`LaneCore::start_partition`] (from the group's committed offset, at an
//! epoch written into every record), stop at once with [`LaneCore::abort_partition`] (nothing
//! more is committed for them) or hand over gracefully with [`LaneCore::handover_partition`]
//! (stop intake, finish in-flight frames, commit, then the caller releases). Each run of a
//! partition has its own [`PartitionState`] (`instance`): outcomes of an earlier run still in
//! the stages are dropped by the new run's publisher, so per-partition order and in-flight
//! bounds hold across restarts of a partition. A publisher that fails for good is reported
//! through the context's [`FailureReporter`]; Kafka failures restart the run instead.
//!
//! Every lane has a watchdog thread (every 250 ms, `upkeep`): a run whose
//! transaction call hangs past its own timeout is marked failed; without a controller
//! (static and Redis sources) it also restarts failed runs from the committed offsets and
//! replaces an at-least-once producer librdkafka failed fatally. So a broker outage never
//! wedges a partition for good, and the lane's `/readyz` check says so while it recovers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use panoptes_runtime::health::Readiness;
use panoptes_runtime::kafka_link::KafkaLink;
use panoptes_schemas::ModelRef;
use parking_lot::Mutex;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::producer::Producer;
use tokio_util::sync::CancellationToken;

use crate::assignment::{Assignment, RedisAssignment, StaticAssignment};
use crate::config::{AssignmentSource, DeliveryMode, KafkaConfig, WorkerConfig};
use crate::error::{PublishError, Stage, WorkerError};
use crate::failure::FailureReporter;
use crate::metrics::WorkerMetrics;
use crate::pipeline::consume::{self, Command, ConsumerLoop, FramesConsumer};
use crate::pipeline::decode::DecodeStage;
use crate::pipeline::infer::{self, InferenceRun, InferenceSpec, Started};
use crate::pipeline::partition::{PartitionEpochs, PartitionState};
use crate::pipeline::publish::{self, AloProducer, EosPartition, Router};
use crate::pipeline::work::RecordContext;

mod watchdog;

use watchdog::readiness_check;

/// What every lane of a node shares: the configuration, the model to load, metrics and
/// where fatal failures go.
#[derive(Clone)]
pub struct LaneContext {
    /// The worker's configuration.
    pub config: WorkerConfig,
    /// How a lane's inference thread loads its model instance (capacity not measured).
    pub inference: InferenceSpec,
    /// The model, as named in records.
    pub model: ModelRef,
    /// Metrics.
    pub metrics: WorkerMetrics,
    /// Where a stage's fatal failure goes.
    pub failures: FailureReporter,
    /// Bound of each lane's consumer → decode channel.
    pub jobs_bound: usize,
    /// Where every Kafka client's own errors go (counter and readiness).
    pub kafka_link: KafkaLink,
    /// The node's readiness: each lane keeps a check (`partitions`, or
    /// `partitions:<cluster>` for a lane of another cluster) false while a partition run is
    /// stuck, failed or waiting to start again.
    pub readiness: Readiness,
}

impl LaneContext {
    /// The assignment source of `cluster`'s partitions: the configuration's epoch (static),
    /// or the coordinator's records in Redis (checked before commits).
    pub fn assignment_for(
        &self,
        cluster: &str,
        frames_topic: &str,
    ) -> Result<Arc<dyn Assignment>, WorkerError> {
        let c = &self.config;
        Ok(match c.assignment.source {
            AssignmentSource::Static => Arc::new(StaticAssignment::new(c.epoch)),
            AssignmentSource::Redis | AssignmentSource::Coordinator => {
                Arc::new(RedisAssignment::open(
                    &c.assignment.redis,
                    c.assignment.check_timeout,
                    &c.worker_id,
                    cluster,
                    frames_topic,
                )?)
            }
        })
    }
}

/// Builds a [`Lane`]: the one way lanes come to be.
pub struct LaneBuilder<'a> {
    ctx: &'a LaneContext,
    cluster: String,
    kafka: KafkaConfig,
    model: Option<Started>,
    consumer: Option<Arc<FramesConsumer>>,
    assignment: Option<Arc<dyn Assignment>>,
}

impl<'a> LaneBuilder<'a> {
    /// A lane for `cluster`; `kafka` is the worker's Kafka settings with that cluster's
    /// bootstrap servers.
    pub fn new(ctx: &'a LaneContext, cluster: &str, kafka: KafkaConfig) -> Self {
        Self {
            ctx,
            cluster: cluster.to_string(),
            kafka,
            model: None,
            consumer: None,
            assignment: None,
        }
    }

    /// Uses a model already loaded on its inference thread (default: load one).
    pub fn model(mut self, started: Started) -> Self {
        self.model = Some(started);
        self
    }

    /// Uses this frames consumer (default: create one).
    pub fn consumer(mut self, consumer: Arc<FramesConsumer>) -> Self {
        self.consumer = Some(consumer);
        self
    }

    /// Uses this assignment source (default: [`LaneContext::assignment_for`]).
    pub fn assignment(mut self, assignment: Arc<dyn Assignment>) -> Self {
        self.assignment = Some(assignment);
        self
    }

    /// Creates what was not handed in and starts the lane's threads, with no partition yet.
    /// Blocking (a model load, Redis and broker clients): call it off the async runtime.
    pub fn build(self) -> Result<Lane, WorkerError> {
        let ctx = self.ctx;
        let assignment = match self.assignment {
            Some(a) => a,
            None => ctx.assignment_for(&self.cluster, &self.kafka.frames_topic)?,
        };
        let consumer = match self.consumer {
            Some(c) => c,
            None => Arc::new(consume::create(
                &self.kafka,
                &ctx.config.worker_id,
                ctx.kafka_link.clone(),
            )?),
        };
        let started = match self.model {
            Some(s) => s,
            None => infer::spawn(ctx.inference.clone(), ctx.metrics.clone())?,
        };
        let core = LaneCore::start(
            ctx.clone(),
            self.cluster,
            self.kafka,
            assignment,
            started,
            consumer,
        )?;
        Lane::watched(core)
    }
}

/// How a graceful handover ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handover {
    /// Everything consumed was finished and committed: release it.
    Committed,
    /// The commit check found the partition no longer ours: nothing was committed.
    Superseded,
    /// The deadline passed: the partition was dropped without committing the rest.
    TimedOut,
    /// The partition was not running.
    NotRunning,
}

struct Running {
    state: Arc<PartitionState>,
    thread: JoinHandle<()>,
}

struct Threads {
    consumer: JoinHandle<Vec<Arc<PartitionState>>>,
    decode: Vec<JoinHandle<()>>,
    inference: JoinHandle<()>,
    stage: Arc<DecodeStage>,
}

/// The pipeline of one cluster. All methods take `&self` and are blocking (broker and Redis
/// round trips): call them off the async runtime. Reached through [`Lane`].
pub struct LaneCore {
    ctx: LaneContext,
    cluster: String,
    kafka: KafkaConfig,
    assignment: Arc<dyn Assignment>,
    consumer: Arc<FramesConsumer>,
    router: Router,
    epochs: PartitionEpochs,
    commands: Sender<Command>,
    /// The at-least-once producer (replaced after a fatal error), `None` in exactly-once mode.
    alo: Mutex<Option<Arc<AloProducer>>>,
    parts: Mutex<BTreeMap<i32, Running>>,
    /// Runs the watchdog must start again (static and Redis sources): epoch and when to try.
    restarts: Mutex<BTreeMap<i32, (u64, Instant)>>,
    /// Whether the lane's readiness check is false now.
    unhealthy: std::sync::atomic::AtomicBool,
    stopping: Mutex<Vec<JoinHandle<()>>>,
    threads: Mutex<Option<Threads>>,
    consumer_stop: CancellationToken,
}

const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

impl LaneCore {
    /// Starts the lane's consumer and stages around an inference thread whose model is
    /// loaded (`started`), with no partition yet.
    fn start(
        ctx: LaneContext,
        cluster: String,
        kafka: KafkaConfig,
        assignment: Arc<dyn Assignment>,
        started: Started,
        consumer: Arc<FramesConsumer>,
    ) -> Result<Self, WorkerError> {
        let cfg = &ctx.config;
        let drift = crate::drift::DriftTap::spawn(&cfg.drift, ctx.metrics.drift.clone(), &cluster)?;
        let router = Router::new(&[], cfg.partition_queue + 8)
            .0
            .with_drift(drift);
        let epochs = PartitionEpochs::default();
        let record = RecordContext {
            worker_id: cfg.worker_id.clone(),
            frames_topic: kafka.frames_topic.clone(),
            model: ctx.model.clone(),
            epoch: cfg.epoch,
            partition_epochs: epochs.clone(),
        };
        let alo = match cfg.delivery {
            DeliveryMode::AtLeastOnce => Some(Arc::new(publish::alo_producer(
                &kafka,
                &cfg.worker_id,
                ctx.metrics.clone(),
                ctx.kafka_link.clone(),
            )?)),
            DeliveryMode::ExactlyOnce => None,
        };
        ctx.readiness.set(
            &readiness_check(cfg, &cluster),
            true,
            "no partition run failed",
        );
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(ctx.jobs_bound.max(1));
        let (decoded_tx, decoded_rx) = crossbeam_channel::bounded(cfg.batching.max_batch * 2);
        let stage = Arc::new(DecodeStage {
            ctx: record.clone(),
            staleness: cfg.staleness.clone(),
            limits: cfg.decode.clone(),
            gate: started.gate.clone(),
            metrics: ctx.metrics.clone(),
            router: router.clone(),
        });
        let decode = stage
            .clone()
            .spawn(cfg.decode_threads, jobs_rx, decoded_tx)?;
        started
            .start
            .send(InferenceRun {
                frames: decoded_rx,
                ctx: record,
                router: router.clone(),
                cluster: cluster.clone(),
                failures: ctx.failures.clone(),
                gate: started.gate.clone(),
                shadow: crate::shadow::ShadowOut {
                    kafka: kafka.clone(),
                    topic: kafka.shadow_topic.clone(),
                    client_id: format!("{}-shadow", cfg.worker_id),
                    link: ctx.kafka_link.clone(),
                },
            })
            .map_err(|_| WorkerError::InferenceEnded)?;
        let (commands, commands_rx) = crossbeam_channel::unbounded();
        let consumer_stop = CancellationToken::new();
        let consumer_loop = ConsumerLoop {
            consumer: consumer.clone(),
            topic: kafka.frames_topic.clone(),
            commands: commands_rx,
            bound: cfg.partition_queue,
            jobs: jobs_tx,
            metrics: ctx.metrics.clone(),
            label_prefix: label_prefix(cfg, &cluster),
            mode: cfg.delivery,
            commit_interval: cfg.commit_interval,
            assignment: assignment.clone(),
        };
        let consumer_thread = spawn_consumer(consumer_loop, &cluster, &consumer_stop)?;
        Ok(Self {
            consumer,
            router,
            epochs,
            commands,
            alo: Mutex::new(alo),
            parts: Mutex::new(BTreeMap::new()),
            restarts: Mutex::new(BTreeMap::new()),
            unhealthy: std::sync::atomic::AtomicBool::new(false),
            stopping: Mutex::new(Vec::new()),
            threads: Mutex::new(Some(Threads {
                consumer: consumer_thread,
                decode,
                inference: started.thread,
                stage,
            })),
            consumer_stop,
            ctx,
            cluster,
            kafka,
            assignment,
        })
    }

    /// The cluster's region name.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The frames consumer.
    pub fn consumer(&self) -> &Arc<FramesConsumer> {
        &self.consumer
    }

    /// Partitions whose exactly-once transaction call has been running longer than `limit`.
    pub fn stuck_commits(&self, limit: Duration) -> Vec<i32> {
        self.parts
            .lock()
            .values()
            .filter(|r| r.state.stuck_for().is_some_and(|d| d > limit))
            .map(|r| r.state.partition)
            .collect()
    }

    /// Marks a partition's run as failed (the controller restarts it).
    pub fn mark_failed(&self, partition: i32) {
        if let Some(r) = self.parts.lock().get(&partition) {
            r.state.failed.store(true, Ordering::Release);
        }
    }

    /// Partitions whose run failed and must be restarted (coordinator mode).
    pub fn failed(&self) -> Vec<i32> {
        self.parts
            .lock()
            .values()
            .filter(|r| r.state.failed.load(Ordering::Acquire))
            .map(|r| r.state.partition)
            .collect()
    }

    /// Running partitions with their state (epoch, counters).
    pub fn running(&self) -> Vec<Arc<PartitionState>> {
        self.parts
            .lock()
            .values()
            .map(|r| r.state.clone())
            .collect()
    }

    /// The model version frames are stamped with now (hot swap: [`crate::swap`]).
    pub fn model(&self) -> Option<ModelRef> {
        let threads = self.threads.lock();
        threads
            .as_ref()
            .map(|t| t.stage.gate.current().model.clone())
    }

    /// Whether the inference thread is gone (it only ends early on an inference failure,
    /// which it reports itself).
    pub fn inference_stopped(&self) -> bool {
        self.threads
            .lock()
            .as_ref()
            .is_some_and(|t| t.inference.is_finished())
    }

    /// Starts consuming `partition` from the group's committed offset at `epoch` (a running
    /// run of it is aborted first). Exactly-once: initialises the partition's transactional
    /// producer (blocks on the broker).
    pub fn start_partition(&self, partition: i32, epoch: u64) -> Result<(), WorkerError> {
        self.abort_partition(partition);
        let state = PartitionState::with_epoch(partition, epoch);
        if self.consumer_stop.is_cancelled() {
            return Err(WorkerError::ConsumerUnresponsive);
        }
        let alo = self.alo.lock().clone();
        let thread = match alo {
            Some(producer) => {
                let rx = self.router.add(partition);
                let (producer, cfg, m) = (
                    producer.clone(),
                    self.kafka.clone(),
                    self.ctx.metrics.clone(),
                );
                let s = state.clone();
                self.spawn_publisher(format!("publish-{partition}"), &state, move || {
                    publish::run_alo(&producer, &cfg, s, rx, m)
                })?
            }
            None => {
                let part = self.eos_partition(&state, epoch)?;
                let producer = part.producer()?;
                let rx = self.router.add(partition);
                self.spawn_publisher(format!("txn-{partition}"), &state, move || {
                    part.run(&producer, rx)
                })?
            }
        };
        self.epochs.write().insert(partition, epoch);
        let (tx, rx) = crossbeam_channel::bounded(1);
        let added = self
            .commands
            .send(Command::Add(state.clone(), tx))
            .ok()
            .and_then(|()| rx.recv_timeout(COMMAND_TIMEOUT).ok());
        self.parts
            .lock()
            .insert(partition, Running { state, thread });
        match added {
            Some(Ok(())) => {
                tracing::info!(cluster = %self.cluster, partition, epoch, "partition started");
                Ok(())
            }
            Some(Err(e)) => {
                self.abort_partition(partition);
                Err(e.into())
            }
            None => {
                self.abort_partition(partition);
                Err(WorkerError::ConsumerUnresponsive)
            }
        }
    }

    /// What the exactly-once publisher of a partition run needs.
    fn eos_partition(
        &self,
        state: &Arc<PartitionState>,
        epoch: u64,
    ) -> Result<EosPartition, WorkerError> {
        let cfg = &self.ctx.config;
        Ok(EosPartition {
            cfg: self.kafka.clone(),
            worker_id: cfg.worker_id.clone(),
            state: state.clone(),
            group: self
                .consumer
                .group_metadata()
                .ok_or(WorkerError::NoGroupMetadata)?,
            consumer: self.consumer.clone(),
            assignment: self.assignment.clone(),
            epoch,
            commit_interval: cfg.commit_interval,
            metrics: self.ctx.metrics.clone(),
            link: self.ctx.kafka_link.clone(),
        })
    }

    /// Starts a partition's publisher thread; its failure goes to [`fail`].
    fn spawn_publisher(
        &self,
        name: String,
        state: &Arc<PartitionState>,
        publish: impl FnOnce() -> Result<(), PublishError> + Send + 'static,
    ) -> std::io::Result<JoinHandle<()>> {
        let (s, failures, cluster) = (
            state.clone(),
            self.ctx.failures.clone(),
            self.cluster.clone(),
        );
        // Kafka trouble restarts the run (coordinator mode: its controller; otherwise the
        // lane's watchdog); anything else stops the node.
        std::thread::Builder::new().name(name).spawn(move || {
            if let Err(e) = publish() {
                let restart = e.restartable();
                fail(&s, &failures, &cluster, restart, e);
            }
        })
    }

    /// Stops `partition` at once (taken away or superseded): intake stops, its publisher
    /// aborts what is open, nothing more is committed for it. No-op when not running.
    pub fn abort_partition(&self, partition: i32) {
        let Some(run) = self.parts.lock().remove(&partition) else {
            return;
        };
        run.state.abort.store(true, Ordering::Release);
        self.router.remove(partition);
        self.unassign(partition);
        self.epochs.write().remove(&partition);
        self.stopping.lock().push(run.thread);
        tracing::warn!(cluster = %self.cluster, partition, epoch = run.state.epoch, "partition stopped without commit");
    }

    /// Graceful handover: stop intake, let in-flight frames finish, commit (exactly-once:
    /// the open transaction, after the assignment check; at-least-once: the acknowledged
    /// prefix), all before `deadline`; past it the partition is aborted.
    pub fn handover_partition(&self, partition: i32, deadline: Instant) -> Handover {
        let Some(state) = self.parts.lock().get(&partition).map(|r| r.state.clone()) else {
            return Handover::NotRunning;
        };
        self.unassign(partition);
        while state.in_flight.load(Ordering::Acquire) > 0 && !state.aborted() {
            if Instant::now() >= deadline {
                self.abort_partition(partition);
                return Handover::TimedOut;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Every frame consumed is published (or in the open transaction): close the channel,
        // the publisher commits what is open and ends.
        self.router.remove(partition);
        loop {
            let finished = self
                .parts
                .lock()
                .get(&partition)
                .is_none_or(|r| r.thread.is_finished());
            if finished {
                break;
            }
            if Instant::now() >= deadline {
                self.abort_partition(partition);
                return Handover::TimedOut;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let run = self.parts.lock().remove(&partition);
        self.epochs.write().remove(&partition);
        let Some(run) = run.filter(|r| Arc::ptr_eq(&r.state, &state)) else {
            return Handover::TimedOut;
        };
        let _ = run.thread.join();
        if state.aborted() || state.released.load(Ordering::Acquire) {
            return Handover::Superseded;
        }
        if self.ctx.config.delivery == DeliveryMode::AtLeastOnce {
            if let Some(p) = self.alo.lock().clone() {
                let _ = p.flush(deadline.saturating_duration_since(Instant::now()));
            }
            consume::commit(
                &self.consumer,
                &self.kafka.frames_topic,
                &[state],
                CommitMode::Sync,
                self.assignment.as_ref(),
            );
        }
        tracing::info!(cluster = %self.cluster, partition, "partition handed over");
        Handover::Committed
    }

    /// Ordered shutdown: the consumer stops, the stages finish what they hold, the
    /// publishers deliver it (exactly-once: commit their last transaction after the check),
    /// then at-least-once offsets are committed synchronously.
    pub fn shutdown(&self) {
        self.consumer_stop.cancel();
        let Some(t) = self.threads.lock().take() else {
            return;
        };
        let _ = t.consumer.join();
        for d in t.decode {
            let _ = d.join();
        }
        drop(t.stage);
        let _ = t.inference.join();
        let runs: Vec<Running> = std::mem::take(&mut *self.parts.lock())
            .into_values()
            .collect();
        for r in &runs {
            self.router.remove(r.state.partition);
        }
        let mut states = Vec::new();
        for r in runs {
            let _ = r.thread.join();
            states.push(r.state);
        }
        for t in std::mem::take(&mut *self.stopping.lock()) {
            let _ = t.join();
        }
        if let Some(p) = self.alo.lock().clone() {
            if let Err(e) = p.flush(Duration::from_secs(10)) {
                tracing::warn!(error = %e, "producer not fully flushed");
            }
            states.retain(|s| !s.aborted());
            consume::commit(
                &self.consumer,
                &self.kafka.frames_topic,
                &states,
                CommitMode::Sync,
                self.assignment.as_ref(),
            );
        }
        tracing::info!(cluster = %self.cluster, "lane stopped");
    }

    /// Joins publisher threads of stopped runs that have ended.
    pub fn reap(&self) {
        let mut s = self.stopping.lock();
        let (done, left): (Vec<_>, Vec<_>) = s.drain(..).partition(JoinHandle::is_finished);
        *s = left;
        drop(s);
        for t in done {
            let _ = t.join();
        }
    }

    fn unassign(&self, partition: i32) {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.commands.send(Command::Remove(partition, tx)).is_ok()
            && rx.recv_timeout(COMMAND_TIMEOUT).is_err()
        {
            tracing::warn!(
                partition,
                "the consumer thread did not confirm the unassign"
            );
        }
    }
}

/// A [`LaneCore`] with its watchdog: what every lane is. Dereferences to the core; the
/// watchdog thread holds only a weak reference and ends with the lane (or its shutdown).
pub struct Lane {
    core: Arc<LaneCore>,
}

impl std::ops::Deref for Lane {
    type Target = LaneCore;

    fn deref(&self) -> &LaneCore {
        &self.core
    }
}

/// Prefix of a lane's `partition` metric labels: none in the worker's own region,
/// `<cluster>:` elsewhere.
fn label_prefix(config: &WorkerConfig, cluster: &str) -> String {
    if cluster == config.region {
        String::new()
    } else {
        format!("{cluster}:")
    }
}

/// Starts the lane's consumer thread; it runs until `stop` fires.
fn spawn_consumer(
    consumer_loop: ConsumerLoop,
    cluster: &str,
    stop: &CancellationToken,
) -> std::io::Result<JoinHandle<Vec<Arc<PartitionState>>>> {
    let stop = stop.clone();
    std::thread::Builder::new()
        .name(format!("consumer-{cluster}"))
        .spawn(move || consumer_loop.run(&stop))
}

/// A publisher failed: fatal unless its run was being stopped anyway (e.g. a transactional
/// producer fenced by the partition's next run) or is restarted by the controller.
fn fail(
    state: &PartitionState,
    failures: &FailureReporter,
    cluster: &str,
    restart: bool,
    error: PublishError,
) {
    if state.aborted() {
        tracing::info!(partition = state.partition, error = %error, "stopped run ended with an error");
    } else if restart {
        tracing::error!(partition = state.partition, epoch = state.epoch, error = %error, "partition run failed: it restarts from the committed offsets");
        state.failed.store(true, Ordering::Release);
    } else {
        let stage = Stage::Publisher {
            cluster: cluster.to_string(),
            partition: state.partition,
        };
        failures.stage_failed(stage, error);
    }
}
