//! Publishing results: one publisher thread per owned partition, in consumption order.
//!
//! Decode threads and the inference thread finish frames in any order; the [`Router`] hands
//! each [`Outcome`] to its partition's thread, whose [`Sequencer`] releases them in `idx`
//! order, so a camera's records (one camera = one partition) leave in capture order.
//!
//! - **At-least-once** ([`DeliveryMode::AtLeastOnce`]): one idempotent [`ThreadedProducer`]
//!   for the node. Every send is registered in the partition's [`CommitTracker`] first; the
//!   delivery callback marks it acknowledged, and the consumer thread commits the offset after
//!   the longest acknowledged prefix. A crash re-processes the unacknowledged tail:
//!   duplicates are possible, loss is not.
//! - **Exactly-once** ([`DeliveryMode::ExactlyOnce`]): each partition thread owns a
//!   transactional producer (`transactional.id = panoptes-worker.<frames topic>.<partition>`).
//!   Records and the input offset (`send_offsets_to_transaction` with the consumer's group
//!   metadata) go in one transaction, committed every `commit_interval`. Before each commit
//!   the thread checks the assignment epoch; a superseded epoch aborts the transaction and
//!   releases the partition, and an assignment source that does not answer aborts it too
//!   (fail closed) and stops the worker.
//!
//! [`DeliveryMode::AtLeastOnce`]: crate::config::DeliveryMode::AtLeastOnce
//! [`DeliveryMode::ExactlyOnce`]: crate::config::DeliveryMode::ExactlyOnce

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{
    BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::assignment::Assignment;
use crate::config::KafkaConfig;
use crate::metrics::WorkerMetrics;
use crate::work::{Outcome, Output, ms_between_us, now_us};

/// Why publishing cannot go on (fatal for the worker: it stops, and a restart resumes from
/// the committed offsets).
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Creating a producer or a transaction step failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// A record could not be encoded (a bug: records are built valid).
    #[error("record encoding: {0}")]
    Encode(#[from] panoptes_schemas::EnvelopeError),
    /// The assignment could not be checked before a commit: the transaction was aborted
    /// (fail closed) and the worker stops; a restart resumes from the committed offsets.
    #[error("assignment check: {0}")]
    Assignment(#[from] crate::assignment::AssignmentError),
}

impl PublishError {
    /// Whether coordinator mode may restart the partition after this error: Kafka trouble,
    /// yes; an assignment that cannot be checked (Redis unreachable) stops the worker, fail
    /// closed (`docs/workers.md`), because a restarted run could not check its commits either.
    pub fn restartable(&self) -> bool {
        matches!(self, Self::Kafka(_))
    }

    /// Whether retrying may succeed (broker-side transient errors).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Kafka(KafkaError::Transaction(e)) => e.is_retriable(),
            Self::Assignment(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// Releases outcomes in `idx` order (0, 1, 2, … per partition).
#[derive(Debug, Default)]
pub struct Sequencer {
    next: u64,
    waiting: BTreeMap<u64, Outcome>,
}

impl Sequencer {
    /// Accepts one outcome; returns every outcome now releasable, in order.
    pub fn push(&mut self, outcome: Outcome) -> Vec<Outcome> {
        self.waiting.insert(outcome.pos.idx, outcome);
        let mut ready = Vec::new();
        while let Some(o) = self.waiting.remove(&self.next) {
            ready.push(o);
            self.next += 1;
        }
        ready
    }

    /// Outcomes held back waiting for an earlier one.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }
}

/// Sent-but-unacknowledged records of one partition, in send order (at-least-once mode).
#[derive(Debug, Default)]
pub struct CommitTracker {
    /// `(idx, offset, acknowledged)` in idx order.
    pending: VecDeque<(u64, i64, bool)>,
}

impl CommitTracker {
    /// Registers a send (call before the record is handed to the producer, in idx order).
    pub fn push(&mut self, idx: u64, offset: i64) {
        self.pending.push_back((idx, offset, false));
    }

    /// Marks `idx` acknowledged.
    pub fn ack(&mut self, idx: u64) {
        let Some(&(front, _, _)) = self.pending.front() else {
            return;
        };
        if let Some(e) = idx
            .checked_sub(front)
            .and_then(|i| self.pending.get_mut(i as usize))
        {
            debug_assert_eq!(e.0, idx);
            e.2 = true;
        }
    }

    /// Pops the acknowledged prefix: the offset to commit (last offset + 1) and how many
    /// frames completed, or `None` if the oldest record is not acknowledged yet.
    pub fn take_committable(&mut self) -> Option<(i64, usize)> {
        let mut last = None;
        let mut n = 0;
        while let Some(&(_, offset, true)) = self.pending.front() {
            last = Some(offset);
            n += 1;
            self.pending.pop_front();
        }
        last.map(|o| (o + 1, n))
    }
}

/// Shared state of one owned partition (one run of it: a partition stopped and started
/// again gets a fresh state with a new `instance`).
#[derive(Debug)]
pub struct PartitionState {
    /// The partition.
    pub partition: i32,
    /// Unique per run of a partition in this process (see [`crate::work::Position::instance`]).
    pub instance: u64,
    /// The assignment epoch this run holds the partition at (0: not tracked).
    pub epoch: u64,
    /// Set to stop this run at once (taken away or superseded): the publisher aborts what is
    /// open and commits nothing more.
    pub abort: AtomicBool,
    /// Frame records consumed by this run.
    pub consumed: AtomicU64,
    /// Load consumed by this run, in thousandths of a load unit (one 640×360 frame = 1000).
    pub load_milli: AtomicU64,
    /// Last measured lag (records behind the high watermark), -1 until measured.
    pub lag: AtomicI64,
    /// Frames consumed and not yet done (acknowledged by the broker in at-least-once mode,
    /// handed to the transactional producer in exactly-once mode). The consumer pauses the
    /// partition at its bound.
    pub in_flight: AtomicUsize,
    /// At-least-once bookkeeping.
    pub tracker: Mutex<CommitTracker>,
    /// Set when the partition was released (superseded epoch); the consumer unassigns it.
    pub released: AtomicBool,
    /// Set when this run's publisher failed (coordinator mode restarts the partition).
    pub failed: AtomicBool,
    /// When the exactly-once publisher began its current commit (ms since the epoch), 0 when
    /// not committing: a commit stuck far past its timeout gets the run restarted.
    pub commit_started_ms: AtomicU64,
}

impl PartitionState {
    /// A fresh state (epoch not tracked).
    pub fn new(partition: i32) -> Arc<Self> {
        Self::with_epoch(partition, 0)
    }

    /// A fresh state holding `partition` at `epoch`.
    pub fn with_epoch(partition: i32, epoch: u64) -> Arc<Self> {
        static INSTANCES: AtomicU64 = AtomicU64::new(1);
        Arc::new(Self {
            partition,
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
            epoch,
            abort: AtomicBool::new(false),
            consumed: AtomicU64::new(0),
            load_milli: AtomicU64::new(0),
            lag: AtomicI64::new(-1),
            in_flight: AtomicUsize::new(0),
            tracker: Mutex::new(CommitTracker::default()),
            released: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            commit_started_ms: AtomicU64::new(0),
        })
    }

    fn done(&self, n: usize) {
        self.in_flight.fetch_sub(n, Ordering::AcqRel);
    }

    /// Whether this run was told to stop at once.
    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }
}

/// Hands outcomes to the thread of their partition. Cheap to clone; partitions come and go
/// at run time ([`Router::add`], [`Router::remove`]).
#[derive(Clone, Debug, Default)]
pub struct Router {
    senders: Arc<parking_lot::RwLock<BTreeMap<i32, Sender<Outcome>>>>,
    capacity: usize,
}

impl Router {
    /// Creates the channels (each bounded by `capacity`) for `partitions`.
    pub fn new(partitions: &[i32], capacity: usize) -> (Self, BTreeMap<i32, Receiver<Outcome>>) {
        let router = Self {
            senders: Arc::default(),
            capacity,
        };
        let receivers = partitions.iter().map(|&p| (p, router.add(p))).collect();
        (router, receivers)
    }

    /// Opens (or replaces) `partition`'s channel and returns its receiving end.
    pub fn add(&self, partition: i32) -> Receiver<Outcome> {
        let (tx, rx) = crossbeam_channel::bounded(self.capacity.max(1));
        self.senders.write().insert(partition, tx);
        rx
    }

    /// Closes `partition`'s channel: its publisher sees the end once it has taken what was
    /// sent before; later outcomes for it are dropped.
    pub fn remove(&self, partition: i32) {
        self.senders.write().remove(&partition);
    }

    /// Sends an outcome to its partition's publisher (dropped if that partition was released).
    pub fn send(&self, outcome: Outcome) {
        // Clone the sender out: a full channel blocks this thread, never the map.
        let tx = self.senders.read().get(&outcome.pos.partition).cloned();
        if let Some(tx) = tx {
            let _ = tx.send(outcome);
        }
    }
}

/// An encoded outcome, ready to send.
struct Encoded<'a> {
    topic: &'a str,
    key: Option<String>,
    payload: Vec<u8>,
    /// Metric label: the record status, or `dead_letter`.
    status: &'static str,
}

/// Encodes an outcome. Fills in publish time and
/// end-to-end latency of detection records.
fn encode<'a>(
    cfg: &'a KafkaConfig,
    output: &mut Output,
    metrics: &WorkerMetrics,
) -> Result<Encoded<'a>, PublishError> {
    Ok(match output {
        Output::Record(r) => {
            let now = now_us();
            r.published_time_us = now;
            r.latency.end_to_end_ms = ms_between_us(r.capture_time_us, now);
            metrics
                .end_to_end
                .observe(f64::from(r.latency.end_to_end_ms) / 1000.0);
            Encoded {
                topic: cfg.detections_topic.as_str(),
                key: Some(r.camera_id.clone()),
                payload: r.to_json()?,
                status: r.status.as_str(),
            }
        }
        Output::DeadLetter(d) => Encoded {
            topic: cfg.dlq_topic.as_str(),
            key: d.camera_id.clone(),
            payload: d.to_json()?,
            status: "dead_letter",
        },
    })
}

fn base_config(cfg: &KafkaConfig, client_id: &str) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set(
            "message.timeout.ms",
            cfg.message_timeout.as_millis().to_string(),
        )
        .set("queue.buffering.max.messages", "10000")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "1000")
        .set("client.id", client_id);
    for (k, v) in &cfg.properties {
        cc.set(k, v);
    }
    cc
}

/// Per-message state carried to the delivery callback (at-least-once).
pub struct Ack {
    state: Arc<PartitionState>,
    idx: u64,
    status: &'static str,
}

/// Producer context marking acknowledgements in the commit trackers.
pub struct AckContext {
    metrics: WorkerMetrics,
}

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<Ack>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Self::DeliveryOpaque) {
        // The frame no longer occupies the worker either way; only the commit waits.
        ack.state.done(1);
        match result {
            Ok(_) => {
                ack.state.tracker.lock().ack(ack.idx);
                self.metrics.records.with_label_values(&[ack.status]).inc();
            }
            Err((e, _)) => {
                // Not acknowledged: the offset never gets committed past this record, so a
                // restart re-processes it. Nothing is lost; the partition stalls until then.
                tracing::error!(error = %e, partition = ack.state.partition, "delivery failed");
                self.metrics
                    .publish_errors
                    .with_label_values(&["delivery"])
                    .inc();
            }
        }
    }
}

/// The node's at-least-once producer.
pub type AloProducer = ThreadedProducer<AckContext>;

/// Creates the at-least-once producer.
pub fn alo_producer(
    cfg: &KafkaConfig,
    worker_id: &str,
    metrics: WorkerMetrics,
) -> Result<AloProducer, PublishError> {
    Ok(base_config(cfg, worker_id).create_with_context(AckContext { metrics })?)
}

/// One partition's at-least-once publisher loop; returns when every sender is gone.
pub fn run_alo(
    producer: &AloProducer,
    cfg: &KafkaConfig,
    state: Arc<PartitionState>,
    rx: Receiver<Outcome>,
    metrics: WorkerMetrics,
) -> Result<(), PublishError> {
    let mut seq = Sequencer::default();
    loop {
        if state.aborted() {
            return Ok(());
        }
        let outcome = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(o) if o.pos.instance == state.instance => o,
            Ok(_) | Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        for mut o in seq.push(outcome) {
            let Encoded {
                topic,
                key,
                payload,
                status,
            } = encode(cfg, &mut o.output, &metrics)?;
            state.tracker.lock().push(o.pos.idx, o.pos.offset);
            let mut opaque = Box::new(Ack {
                state: state.clone(),
                idx: o.pos.idx,
                status,
            });
            loop {
                let mut rec = BaseRecord::with_opaque_to(topic, opaque).payload(&payload);
                if let Some(k) = &key {
                    rec = rec.key(k.as_str());
                }
                match producer.send(rec) {
                    Ok(()) => break,
                    Err((e, rec))
                        if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                    {
                        opaque = rec.delivery_opaque;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
    }
}

/// The transactional id of a partition's producer.
pub fn transactional_id(frames_topic: &str, partition: i32) -> String {
    format!("panoptes-worker.{frames_topic}.{partition}")
}

/// Everything an exactly-once partition thread needs.
pub struct EosPartition {
    /// Kafka settings.
    pub cfg: KafkaConfig,
    /// This worker (client id).
    pub worker_id: String,
    /// Partition state shared with the consumer.
    pub state: Arc<PartitionState>,
    /// The consumer's group metadata, for `send_offsets_to_transaction`.
    pub group: ConsumerGroupMetadata,
    /// The frames consumer: after each transaction commits, the same offset is also
    /// committed the plain way. Redundant on Kafka (the transaction stored it already); it
    /// is what makes a restart resume on brokers whose `TxnOffsetCommit` does not store
    /// offsets, such as librdkafka's mock cluster (whose handler is a stub).
    pub consumer: Arc<BaseConsumer>,
    /// Assignment (epoch check before each commit).
    pub assignment: Arc<dyn Assignment>,
    /// Epoch the records were produced under.
    pub epoch: u64,
    /// Transaction length.
    pub commit_interval: Duration,
    /// Metrics.
    pub metrics: WorkerMetrics,
}

const TXN_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound of one commit (offsets + commit): a broker outage longer than this fails the run,
/// which coordinator mode restarts from the committed offsets, rather than blocking it.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

impl EosPartition {
    /// Creates the transactional producer and initialises its id (fencing older instances
    /// on a real broker).
    pub fn producer(&self) -> Result<BaseProducer, PublishError> {
        let tid = transactional_id(&self.cfg.frames_topic, self.state.partition);
        let mut cc = base_config(&self.cfg, &self.worker_id);
        cc.set("transactional.id", &tid)
            .set("transaction.timeout.ms", "60000");
        let producer: BaseProducer = cc.create()?;
        producer.init_transactions(TXN_TIMEOUT)?;
        Ok(producer)
    }

    /// The partition's loop; returns when every sender is gone (after committing what is
    /// open) or after releasing the partition.
    pub fn run(&self, producer: &BaseProducer, rx: Receiver<Outcome>) -> Result<(), PublishError> {
        let p = self.state.partition;
        let mut seq = Sequencer::default();
        let mut open: Option<(Instant, usize, i64, BTreeMap<&'static str, u64>)> = None;
        loop {
            if self.state.aborted() {
                // Taken away: nothing more is committed for this run.
                if open.is_some() {
                    self.metrics.aborted.with_label_values(&["revoked"]).inc();
                    abort(producer)?;
                }
                tracing::info!(partition = p, epoch = self.epoch, "partition stopped");
                return Ok(());
            }
            let wait = open
                .as_ref()
                .map(|(t, ..)| {
                    (*t + self.commit_interval).saturating_duration_since(Instant::now())
                })
                .unwrap_or(Duration::from_millis(100))
                .min(Duration::from_millis(100));
            let (received, closed) = match rx.recv_timeout(wait) {
                Ok(o) if o.pos.instance != self.state.instance => (None, false),
                Ok(o) => (Some(o), false),
                Err(RecvTimeoutError::Timeout) => (None, false),
                Err(RecvTimeoutError::Disconnected) => (None, true),
            };
            for mut o in received.map(|o| seq.push(o)).unwrap_or_default() {
                if open.is_none() {
                    producer.begin_transaction()?;
                    open = Some((Instant::now(), 0, -1, BTreeMap::new()));
                }
                let Encoded {
                    topic,
                    key,
                    payload,
                    status,
                } = encode(&self.cfg, &mut o.output, &self.metrics)?;
                loop {
                    let mut rec: BaseRecord<'_, str, [u8]> =
                        BaseRecord::to(topic).payload(&payload);
                    if let Some(k) = &key {
                        rec = rec.key(k.as_str());
                    }
                    match producer.send(rec) {
                        Ok(()) => break,
                        Err((e, _))
                            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) =>
                        {
                            producer.poll(Duration::from_millis(5));
                        }
                        Err((e, _)) => return Err(e.into()),
                    }
                }
                producer.poll(Duration::ZERO);
                // Handed to the producer (bounded by its own queue): the frame is done here.
                self.state.done(1);
                if let Some((_, n, last, statuses)) = open.as_mut() {
                    *n += 1;
                    *last = o.pos.offset;
                    *statuses.entry(status).or_default() += 1;
                }
            }
            let due = open
                .as_ref()
                .is_some_and(|(t, ..)| t.elapsed() >= self.commit_interval);
            if let Some((_, n, last, statuses)) =
                open.take_if(|_| (due || closed) && !self.state.aborted())
            {
                let current = match self.assignment.check(p, self.epoch) {
                    Ok(current) => current,
                    Err(e) => {
                        // Fail closed: never commit without a positive answer.
                        tracing::error!(partition = p, error = %e, "assignment check failed: aborting");
                        self.metrics
                            .aborted
                            .with_label_values(&["assignment_unavailable"])
                            .inc();
                        let _ = abort(producer);
                        return Err(e.into());
                    }
                };
                if !current {
                    tracing::warn!(
                        partition = p,
                        epoch = self.epoch,
                        "epoch superseded: aborting and releasing"
                    );
                    self.metrics
                        .aborted
                        .with_label_values(&["superseded"])
                        .inc();
                    abort(producer)?;
                    self.state.released.store(true, Ordering::Release);
                    return Ok(());
                }
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(&self.cfg.frames_topic, p, Offset::Offset(last + 1))?;
                // librdkafka does not always honour these timeouts when the group or
                // transaction coordinator broker went away and came back (seen blocking for
                // good): the start time lets the controller give up on this run and restart
                // the partition with a fresh producer. A run given up on never commits.
                self.state
                    .commit_started_ms
                    .store((now_us() / 1000) as u64, Ordering::Release);
                let committed = producer
                    .send_offsets_to_transaction(&tpl, &self.group, COMMIT_TIMEOUT)
                    .and_then(|()| {
                        if self.state.aborted() {
                            Err(KafkaError::Canceled)
                        } else {
                            producer.commit_transaction(COMMIT_TIMEOUT)
                        }
                    });
                self.state.commit_started_ms.store(0, Ordering::Release);
                if let Err(e) = committed {
                    self.metrics
                        .aborted
                        .with_label_values(&["commit_failed"])
                        .inc();
                    let _ = abort(producer);
                    return Err(e.into());
                }
                for (status, count) in statuses {
                    self.metrics
                        .records
                        .with_label_values(&[status])
                        .inc_by(count);
                }
                tracing::debug!(
                    partition = p,
                    next_offset = last + 1,
                    records = n,
                    "transaction committed"
                );
                if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                    tracing::warn!(error = %e, partition = p, "plain offset commit failed");
                }
            }
            if closed && open.is_none() {
                return Ok(());
            }
        }
    }
}

/// Aborts the open transaction. A `BaseProducer` serves delivery reports only when polled,
/// and librdkafka's abort waits for outstanding messages: flush (which polls) first.
fn abort(producer: &BaseProducer) -> Result<(), PublishError> {
    if let Err(e) = producer.flush(Duration::from_secs(5)) {
        tracing::debug!(error = %e, "flush before abort");
    }
    producer.abort_transaction(COMMIT_TIMEOUT)?;
    Ok(())
}

/// Commits, for every partition, the acknowledged prefix (at-least-once); called by the
/// consumer thread. Returns the offsets to commit.
pub fn collect_commits(states: &[Arc<PartitionState>]) -> Vec<(i32, i64)> {
    let mut out = Vec::new();
    for s in states {
        if let Some((offset, _)) = s.tracker.lock().take_committable() {
            out.push((s.partition, offset));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::Position;
    use panoptes_schemas::{DeadLetter, DeadLetterReason, SCHEMA_VERSION};

    fn outcome(idx: u64) -> Outcome {
        let pos = Position {
            partition: 0,
            offset: idx as i64 * 2,
            idx,
            instance: 0,
        };
        Outcome {
            pos,
            output: Output::DeadLetter(Box::new(DeadLetter {
                schema_version: SCHEMA_VERSION,
                camera_id: None,
                seq: None,
                source_topic: "t".into(),
                partition: 0,
                offset: pos.offset,
                reason: DeadLetterReason::Undecodable,
                detail: String::new(),
                worker_id: "w".into(),
                time_us: 0,
            })),
        }
    }

    #[test]
    fn sequencer_restores_order() {
        let mut s = Sequencer::default();
        assert!(s.push(outcome(2)).is_empty());
        assert!(s.push(outcome(1)).is_empty());
        assert_eq!(s.waiting(), 2);
        let ready: Vec<u64> = s.push(outcome(0)).iter().map(|o| o.pos.idx).collect();
        assert_eq!(ready, vec![0, 1, 2]);
        assert_eq!(s.push(outcome(3)).len(), 1);
    }

    #[test]
    fn tracker_commits_only_the_acknowledged_prefix() {
        let mut t = CommitTracker::default();
        for i in 0..4 {
            t.push(i, 10 + i as i64 * 3);
        }
        t.ack(1);
        t.ack(3);
        assert_eq!(t.take_committable(), None);
        t.ack(0);
        assert_eq!(t.take_committable(), Some((14, 2)));
        t.ack(2);
        assert_eq!(t.take_committable(), Some((20, 2)));
        assert_eq!(t.take_committable(), None);
    }

    #[test]
    fn router_partitions_come_and_go() {
        let (router, mut rx) = Router::new(&[0], 4);
        router.send(outcome(0));
        assert_eq!(rx.remove(&0).unwrap().try_iter().count(), 1);
        let rx0 = router.add(0);
        router.send(outcome(1));
        router.remove(0);
        // What was sent before the removal is still delivered, then the channel ends.
        assert_eq!(rx0.iter().count(), 1);
        router.send(outcome(2));
        assert!(rx0.try_recv().is_err());
    }

    #[test]
    fn states_are_distinct_runs() {
        let (a, b) = (PartitionState::with_epoch(3, 7), PartitionState::new(3));
        assert_ne!(a.instance, b.instance);
        assert_eq!((a.epoch, b.epoch), (7, 0));
        assert!(!a.aborted());
        a.abort.store(true, Ordering::Release);
        assert!(a.aborted());
    }

    #[test]
    fn transactional_ids_are_per_partition() {
        assert_eq!(
            transactional_id("panoptes.frames", 3),
            "panoptes-worker.panoptes.frames.3"
        );
    }
}
