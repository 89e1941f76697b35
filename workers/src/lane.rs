//! A [`Lane`]: the worker's pipeline for the frames partitions of one Kafka cluster, with a
//! partition set that changes at run time.
//!
//! One lane = one frames consumer, a decode pool, one inference thread owning its own model
//! instance, and one publisher thread per running partition (at-least-once: one idempotent
//! producer shared by the lane; exactly-once: one transactional producer per partition).
//! Detections go to the same cluster as the frames (transactions need it). The static and
//! Redis sources run one lane (the home cluster) with a fixed set; coordinator mode
//! ([`crate::coordinated`]) runs the home lane from start and one lane per other cluster it
//! is granted partitions of.
//!
//! Partitions start with [`Lane::start_partition`] (from the group's committed offset, at an
//! epoch written into every record), stop at once with [`Lane::abort_partition`] (nothing
//! more is committed for them) or hand over gracefully with [`Lane::handover_partition`]
//! (stop intake, finish in-flight frames, commit, then the caller releases). Each run of a
//! partition has its own [`PartitionState`] (`instance`): outcomes of an earlier run still in
//! the stages are dropped by the new run's publisher, so per-partition order and in-flight
//! bounds hold across restarts of a partition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use panoptes_schemas::ModelRef;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use tokio_util::sync::CancellationToken;

use crate::assignment::Assignment;
use crate::config::{DeliveryMode, KafkaConfig, StalenessConfig};
use crate::consumer::{self, Command, ConsumerLoop};
use crate::decode::{DecodeStage, PartitionEpochs, RecordContext};
use crate::inference::{InferenceRun, Started};
use crate::metrics::WorkerMetrics;
use crate::node::WorkerError;
use crate::publisher::{self, AloProducer, EosPartition, PartitionState, Router};

/// Reports a fatal stage failure (the worker stops).
pub type FatalHook = Arc<dyn Fn(String) + Send + Sync>;

/// What a lane is built from.
pub struct LaneSpec {
    /// Region name of the cluster (item prefix).
    pub cluster: String,
    /// Whether this is the worker's own region (metric labels are bare partition numbers
    /// there, `<cluster>:<partition>` otherwise).
    pub home: bool,
    /// Kafka settings, `bootstrap_servers` pointing at this cluster.
    pub kafka: KafkaConfig,
    /// This worker.
    pub worker_id: String,
    /// Delivery semantics.
    pub delivery: DeliveryMode,
    /// Transaction / offset commit interval.
    pub commit_interval: Duration,
    /// In-flight frames per partition before pausing it.
    pub partition_queue: usize,
    /// Bound of the consumer → decode channel.
    pub jobs_bound: usize,
    /// Decode threads.
    pub decode_threads: usize,
    /// Largest inference batch (the decoded-frames channel holds two).
    pub max_batch: usize,
    /// Staleness policy.
    pub staleness: StalenessConfig,
    /// Checked before every commit.
    pub assignment: Arc<dyn Assignment>,
    /// Metrics.
    pub metrics: WorkerMetrics,
    /// Epoch written into records of partitions without one (not used by running partitions).
    pub default_epoch: u64,
    /// Called when a stage fails.
    pub fatal: FatalHook,
    /// A failed partition run (e.g. a transaction that could not commit while a broker was
    /// away) is left for the controller to restart from the committed offsets, instead of
    /// stopping the worker. Coordinator mode only: the static modes have no controller.
    pub restart_failed: bool,
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
/// round trips): call them off the async runtime.
pub struct Lane {
    spec: LaneSpec,
    consumer: Arc<BaseConsumer>,
    router: Router,
    epochs: PartitionEpochs,
    commands: Sender<Command>,
    alo: Option<Arc<AloProducer>>,
    parts: Mutex<BTreeMap<i32, Running>>,
    stopping: Mutex<Vec<JoinHandle<()>>>,
    threads: Mutex<Option<Threads>>,
    consumer_stop: CancellationToken,
}

const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

impl Lane {
    /// Builds the lane's consumer and stages around an inference thread whose model is
    /// loaded (`started`), with no partition yet.
    pub fn start(
        spec: LaneSpec,
        started: Started,
        model: ModelRef,
        consumer: Arc<BaseConsumer>,
    ) -> Result<Self, WorkerError> {
        let router = Router::new(&[], spec.partition_queue + 8).0;
        let epochs = PartitionEpochs::default();
        let ctx = RecordContext {
            worker_id: spec.worker_id.clone(),
            frames_topic: spec.kafka.frames_topic.clone(),
            model,
            epoch: spec.default_epoch,
            partition_epochs: epochs.clone(),
        };
        let alo = match spec.delivery {
            DeliveryMode::AtLeastOnce => Some(Arc::new(publisher::alo_producer(
                &spec.kafka,
                &spec.worker_id,
                spec.metrics.clone(),
            )?)),
            DeliveryMode::ExactlyOnce => None,
        };
        let (jobs_tx, jobs_rx) = crossbeam_channel::bounded(spec.jobs_bound.max(1));
        let (decoded_tx, decoded_rx) = crossbeam_channel::bounded(spec.max_batch * 2);
        let stage = Arc::new(DecodeStage {
            ctx: ctx.clone(),
            staleness: spec.staleness.clone(),
            manifest: started.manifest.clone(),
            metrics: spec.metrics.clone(),
            router: router.clone(),
        });
        let decode = stage
            .clone()
            .spawn(spec.decode_threads, jobs_rx, decoded_tx)?;
        started
            .start
            .send(InferenceRun {
                frames: decoded_rx,
                ctx,
                router: router.clone(),
            })
            .map_err(|_| WorkerError::Stage("inference thread ended".into()))?;
        let (commands, commands_rx) = crossbeam_channel::unbounded();
        let consumer_stop = CancellationToken::new();
        let consumer_loop = ConsumerLoop {
            consumer: consumer.clone(),
            topic: spec.kafka.frames_topic.clone(),
            commands: commands_rx,
            bound: spec.partition_queue,
            jobs: jobs_tx,
            metrics: spec.metrics.clone(),
            label_prefix: if spec.home {
                String::new()
            } else {
                format!("{}:", spec.cluster)
            },
            mode: spec.delivery,
            commit_interval: spec.commit_interval,
            assignment: spec.assignment.clone(),
        };
        let stop = consumer_stop.clone();
        let consumer_thread = std::thread::Builder::new()
            .name(format!("consumer-{}", spec.cluster))
            .spawn(move || consumer_loop.run(&stop))?;
        Ok(Self {
            consumer,
            router,
            epochs,
            commands,
            alo,
            parts: Mutex::new(BTreeMap::new()),
            stopping: Mutex::new(Vec::new()),
            threads: Mutex::new(Some(Threads {
                consumer: consumer_thread,
                decode,
                inference: started.thread,
                stage,
            })),
            consumer_stop,
            spec,
        })
    }

    /// The cluster's region name.
    pub fn cluster(&self) -> &str {
        &self.spec.cluster
    }

    /// The frames consumer.
    pub fn consumer(&self) -> &Arc<BaseConsumer> {
        &self.consumer
    }

    /// Running partitions with their state (epoch, counters).
    /// Partitions whose exactly-once commit has been running longer than `limit`.
    pub fn stuck_commits(&self, limit: Duration) -> Vec<i32> {
        let now = crate::work::now_us() / 1000;
        self.parts
            .lock()
            .values()
            .filter(|r| {
                let started = r.state.commit_started_ms.load(Ordering::Acquire);
                started > 0 && now.saturating_sub(started as i64) > limit.as_millis() as i64
            })
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

    pub fn running(&self) -> Vec<Arc<PartitionState>> {
        self.parts
            .lock()
            .values()
            .map(|r| r.state.clone())
            .collect()
    }

    /// Whether the inference thread is gone (it only ends early on an inference failure).
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
        let m = &self.spec.metrics;
        let thread = match &self.alo {
            Some(producer) => {
                let rx = self.router.add(partition);
                let (producer, cfg, m) = (producer.clone(), self.spec.kafka.clone(), m.clone());
                let (s, fatal, restart) = (
                    state.clone(),
                    self.spec.fatal.clone(),
                    self.spec.restart_failed,
                );
                std::thread::Builder::new()
                    .name(format!("publish-{partition}"))
                    .spawn(move || {
                        if let Err(e) = publisher::run_alo(&producer, &cfg, s.clone(), rx, m) {
                            fail(&s, &fatal, restart && e.restartable(), e.to_string());
                        }
                    })?
            }
            None => {
                let part = EosPartition {
                    cfg: self.spec.kafka.clone(),
                    worker_id: self.spec.worker_id.clone(),
                    state: state.clone(),
                    group: self.consumer.group_metadata().ok_or_else(|| {
                        WorkerError::Stage("consumer has no group metadata".into())
                    })?,
                    consumer: self.consumer.clone(),
                    assignment: self.spec.assignment.clone(),
                    epoch,
                    commit_interval: self.spec.commit_interval,
                    metrics: m.clone(),
                };
                let producer = part.producer()?;
                let rx = self.router.add(partition);
                let (s, fatal, restart) = (
                    state.clone(),
                    self.spec.fatal.clone(),
                    self.spec.restart_failed,
                );
                std::thread::Builder::new()
                    .name(format!("txn-{partition}"))
                    .spawn(move || {
                        if let Err(e) = part.run(&producer, rx) {
                            fail(&s, &fatal, restart && e.restartable(), e.to_string());
                        }
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
                tracing::info!(cluster = %self.spec.cluster, partition, epoch, "partition started");
                Ok(())
            }
            Some(Err(e)) => {
                self.abort_partition(partition);
                Err(e.into())
            }
            None => {
                self.abort_partition(partition);
                Err(WorkerError::Stage(
                    "the consumer thread does not answer".into(),
                ))
            }
        }
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
        tracing::warn!(cluster = %self.spec.cluster, partition, epoch = run.state.epoch, "partition stopped without commit");
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
        if self.spec.delivery == DeliveryMode::AtLeastOnce {
            if let Some(p) = &self.alo {
                use rdkafka::producer::Producer;
                let _ = p.flush(deadline.saturating_duration_since(Instant::now()));
            }
            consumer::commit(
                &self.consumer,
                &self.spec.kafka.frames_topic,
                &[state],
                CommitMode::Sync,
                self.spec.assignment.as_ref(),
            );
        }
        tracing::info!(cluster = %self.spec.cluster, partition, "partition handed over");
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
        if let Some(p) = &self.alo {
            use rdkafka::producer::Producer;
            if let Err(e) = p.flush(Duration::from_secs(10)) {
                tracing::warn!(error = %e, "producer not fully flushed");
            }
            states.retain(|s| !s.aborted());
            consumer::commit(
                &self.consumer,
                &self.spec.kafka.frames_topic,
                &states,
                CommitMode::Sync,
                self.spec.assignment.as_ref(),
            );
        }
        tracing::info!(cluster = %self.spec.cluster, "lane stopped");
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

/// A publisher failed: fatal unless its run was being stopped anyway (e.g. a transactional
/// producer fenced by the partition's next run).
fn fail(state: &PartitionState, fatal: &FatalHook, restart: bool, msg: String) {
    if state.aborted() {
        tracing::info!(partition = state.partition, error = %msg, "stopped run ended with an error");
    } else if restart {
        tracing::error!(partition = state.partition, epoch = state.epoch, error = %msg, "partition run failed: it restarts from the committed offsets");
        state.failed.store(true, Ordering::Release);
    } else {
        fatal(msg);
    }
}

impl LaneSpec {
    /// The spec of the lane for `cluster`, from the worker's configuration; `kafka` is the
    /// worker's Kafka settings with that cluster's bootstrap servers.
    pub fn from_config(
        config: &crate::config::WorkerConfig,
        cluster: &str,
        kafka: KafkaConfig,
        assignment: Arc<dyn Assignment>,
        metrics: WorkerMetrics,
        fatal: FatalHook,
        jobs_bound: usize,
    ) -> Self {
        Self {
            cluster: cluster.to_string(),
            home: cluster == config.region,
            kafka,
            worker_id: config.worker_id.clone(),
            delivery: config.delivery,
            commit_interval: config.commit_interval,
            partition_queue: config.partition_queue,
            jobs_bound,
            decode_threads: config.decode_threads,
            max_batch: config.batching.max_batch,
            staleness: config.staleness.clone(),
            assignment,
            metrics,
            default_epoch: config.epoch,
            fatal,
            restart_failed: config.assignment.source
                == crate::config::AssignmentSource::Coordinator,
        }
    }
}
