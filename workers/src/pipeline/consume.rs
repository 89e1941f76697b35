//! Consume, the first stage: the consumer thread of a lane. Manual assignment of the owned
//! frames partitions (added and removed at run time through [`Command`]s), back-pressure by
//! not reading, offset commits (at-least-once, each checked against the assignment) and lag
//! metrics.
//!
//! Partitions are `incremental_assign`ed (no group rebalancing: the coordinator, not Kafka's group
//! protocol, moves partitions) starting from the group's committed offsets
//! (`Offset::Stored`; `auto.offset.reset = earliest` when nothing is committed). Each owned
//! partition is split onto its own librdkafka queue before it is assigned
//! ([`panoptes_runtime::kafka_poll::queues`]), and the thread reads the queues in turn. A
//! partition may have at most `partition_queue` frames in flight: at the bound the thread
//! stops reading its queue ([`PartitionState::hold`]) and reads it again once half of them
//! are done (the publisher wakes the thread). Meanwhile librdkafka prefetches at most
//! `queued.max.messages.kbytes` of the partition, then stops fetching it. So memory is
//! bounded, overload shows up as Kafka lag, never as a growing queue, and nothing is
//! refetched: an earlier version `pause`d the partition at the bound, and each pause/resume
//! cycle cost ~0.5 s before librdkafka fetched again (docs/benchmarks.md, "Consume rate").
//! The thread sleeps on the queues' IO events (and at most [`POLL`], for commands, commits
//! and lag), never in a busy-waiting poll.
//!
//! The consumer's context ([`LinkContext`]) hands librdkafka's own errors (wrong password,
//! untrusted certificate, ...) to the node's [`KafkaLink`]: counted by kind in
//! `panoptes_worker_kafka_errors_total`, and `/readyz` false for the kinds an operator must
//! fix. The at-least-once producer's context does the same.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use panoptes_runtime::kafka_link::KafkaLink;
use panoptes_runtime::kafka_poll::queues::{QueueWaker, WatchedPartition};
use panoptes_schemas::FrameHeaders;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::assignment::Assignment;
use crate::config::{DeliveryMode, KafkaConfig};
use crate::metrics::WorkerMetrics;
use crate::pipeline::partition::{PartitionState, collect_commits};
use crate::pipeline::trace::FrameTrace;
use crate::pipeline::work::{FrameJob, Position};

/// A client context that reports librdkafka's errors to the node's [`KafkaLink`].
#[derive(Clone)]
pub struct LinkContext {
    link: KafkaLink,
}

impl LinkContext {
    /// Reports to `link`.
    pub fn new(link: KafkaLink) -> Self {
        Self { link }
    }

    /// Hands one librdkafka error to the link (shared with the producers' contexts).
    pub fn report(link: &KafkaLink, error: &KafkaError, reason: &str) {
        let code = error.rdkafka_error_code().map_or(-1, |c| c as i32);
        link.report(code, reason);
    }
}

impl ClientContext for LinkContext {
    fn error(&self, error: KafkaError, reason: &str) {
        Self::report(&self.link, &error, reason);
    }
}

impl ConsumerContext for LinkContext {}

/// The frames consumer: a [`BaseConsumer`] whose errors reach the node's [`KafkaLink`].
pub type FramesConsumer = BaseConsumer<LinkContext>;

/// The client configuration every worker client starts from: connection and security
/// (a `[kafka]` security setting that cannot be used is `KafkaError::ClientCreation` with
/// its message).
pub fn connection_config(cfg: &KafkaConfig) -> Result<ClientConfig, KafkaError> {
    let connection = cfg
        .client
        .connection_properties()
        .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
    Ok(connection.into_iter().collect())
}

/// Creates the frames consumer (no I/O yet); its client errors go to `link`.
///
/// `queued.max.messages.kbytes` bounds what librdkafka prefetches per owned partition (each
/// has its own queue), the memory a partition the pipeline cannot keep up with holds.
pub fn create(
    cfg: &KafkaConfig,
    worker_id: &str,
    link: KafkaLink,
) -> Result<FramesConsumer, KafkaError> {
    let mut cc = connection_config(cfg)?;
    cc.set("group.id", &cfg.group_id)
        .set("client.id", worker_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "50")
        // Frames are big: fetch little ahead (per partition), the in-flight bound does the
        // buffering.
        .set("queued.max.messages.kbytes", "4096")
        .set("queued.min.messages", "1000")
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "1000");
    cc.extend(cfg.client.override_properties());
    cc.create_with_context(LinkContext::new(link))
}

/// The partitions to own: `configured`, or every partition of the topic when empty. Blocks
/// until the broker answers or `timeout` passes.
pub fn resolve_partitions<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    configured: &[i32],
    timeout: Duration,
) -> Result<Vec<i32>, KafkaError> {
    let md = match consumer.fetch_metadata(Some(topic), timeout) {
        Ok(md) => md,
        Err(e) => {
            // What librdkafka reported meanwhile (a refused password, an untrusted
            // certificate) reaches the client context only when the consumer is polled, and
            // nothing has polled it yet: serve those events before giving up, so that the
            // node's last words name the cause and not only "transport failure".
            for _ in 0..5 {
                let _ = consumer.poll(Duration::from_millis(100));
            }
            return Err(e);
        }
    };
    let t = md.topics().iter().find(|t| t.name() == topic);
    let available: BTreeSet<i32> = match t {
        Some(t) if t.error().is_none() => t.partitions().iter().map(|p| p.id()).collect(),
        _ => {
            return Err(KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ));
        }
    };
    if configured.is_empty() {
        return Ok(available.into_iter().collect());
    }
    if let Some(p) = configured.iter().find(|p| !available.contains(p)) {
        tracing::warn!(
            partition = p,
            topic,
            "configured partition does not exist (yet)"
        );
    }
    let mut v: Vec<i32> = configured.to_vec();
    v.sort_unstable();
    v.dedup();
    Ok(v)
}

/// A change to the set of consumed partitions, carried out by the consumer thread between
/// two polls (so no frame of a removed partition is dispatched after the reply).
pub enum Command {
    /// Consume a partition run from the group's committed offset (`Offset::Stored`,
    /// incremental assign); replies with the result.
    Add(Arc<PartitionState>, Sender<Result<(), KafkaError>>),
    /// Stop consuming a partition (incremental unassign); replies once done.
    Remove(i32, Sender<()>),
}

/// The consumer thread's inputs.
pub struct ConsumerLoop {
    /// The consumer (shared: the probe and the shutdown commit use it too).
    pub consumer: Arc<FramesConsumer>,
    /// Frames topic.
    pub topic: String,
    /// Partitions added and removed at run time.
    pub commands: Receiver<Command>,
    /// In-flight bound per partition.
    pub bound: usize,
    /// To the decode pool.
    pub jobs: Sender<FrameJob>,
    /// Metrics.
    pub metrics: WorkerMetrics,
    /// Prefix of the `partition` metric label (empty for the home cluster, `<cluster>:`
    /// otherwise).
    pub label_prefix: String,
    /// Delivery mode (commits here only in at-least-once mode).
    pub mode: DeliveryMode,
    /// How often to commit.
    pub commit_interval: Duration,
    /// Checked before each at-least-once offset commit.
    pub assignment: Arc<dyn Assignment>,
}

/// Longest sleep of the consumer thread (commands, commits and lag are looked at this often).
pub const POLL: Duration = Duration::from_millis(50);

/// Longest wait for the end offsets of the lag (one broker round trip, every 2 s).
const LAG_TIMEOUT: Duration = Duration::from_millis(500);

/// Records read from one partition's queue before the thread turns to the next partition.
const BURST: usize = 64;

/// One partition being consumed.
struct Owned {
    /// The run.
    state: Arc<PartitionState>,
    /// Its own queue.
    queue: WatchedPartition<LinkContext>,
    /// The `idx` its next frame gets.
    next_idx: u64,
}

/// What the consumer thread tracks between polls.
#[derive(Default)]
struct Consumed {
    /// The partitions being consumed.
    parts: BTreeMap<i32, Owned>,
    /// Highest ingest owner epoch seen per camera (the owner-epoch rule, in offset order).
    owners: panoptes_schemas::OwnerEpochs,
}

impl Consumed {
    fn states(&self) -> Vec<Arc<PartitionState>> {
        self.parts.values().map(|o| o.state.clone()).collect()
    }
}

impl ConsumerLoop {
    /// Runs until `stop` fires. Dropping the job sender on return tells the pipeline to drain.
    /// Returns the partitions it still consumed (for the final commit).
    pub fn run(self, stop: &CancellationToken) -> Vec<Arc<PartitionState>> {
        let waker = match QueueWaker::new() {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(error = %e, "consumer thread: no wake-up socket");
                return Vec::new();
            }
        };
        // Errors and commit results arrive on the consumer's own queue.
        let _main = waker.watch_consumer(&self.consumer);
        let mut c = Consumed::default();
        let mut last_commit = Instant::now();
        let mut last_lag = Instant::now();
        while !stop.is_cancelled() {
            while let Ok(cmd) = self.commands.try_recv() {
                self.apply(cmd, &mut c, &waker);
            }
            if !self.serve_main(&mut c) {
                return c.states();
            }
            let Some(more) = self.read_partitions(&mut c) else {
                return c.states();
            };
            self.relieve(&mut c);
            if self.mode == DeliveryMode::AtLeastOnce
                && last_commit.elapsed() >= self.commit_interval
            {
                last_commit = Instant::now();
                commit(
                    &self.consumer,
                    &self.topic,
                    &c.states(),
                    CommitMode::Async,
                    self.assignment.as_ref(),
                );
            }
            if last_lag.elapsed() >= Duration::from_secs(2) {
                last_lag = Instant::now();
                self.update_lag(&c);
            }
            if !more {
                waker.wait(POLL);
            }
        }
        c.states()
    }

    /// Serves the consumer's own queue (errors, commit results; records only of a partition
    /// that was not split off). Returns `false` when the pipeline is gone.
    fn serve_main(&self, c: &mut Consumed) -> bool {
        while let Some(result) = self.consumer.poll(Duration::ZERO) {
            match result {
                Ok(m) => {
                    let p = m.partition();
                    tracing::debug!(partition = p, "record on the consumer's own queue");
                    if let Some(o) = c.parts.get_mut(&p)
                        && !self.dispatch(&m, &o.state, &mut o.next_idx, &mut c.owners)
                    {
                        return false;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "consumer error"),
            }
        }
        true
    }

    /// Reads every partition not held, up to [`BURST`] records each. Returns whether a
    /// partition may have more to read now (`None`: the pipeline is gone).
    fn read_partitions(&self, c: &mut Consumed) -> Option<bool> {
        let mut more = false;
        let Consumed { parts, owners } = c;
        for o in parts.values_mut() {
            let mut read = 0;
            while !o.state.held() {
                if read == BURST {
                    more = true;
                    break;
                }
                match o.queue.poll() {
                    None => break,
                    Some(Ok(m)) => {
                        read += 1;
                        if !self.dispatch(&m, &o.state, &mut o.next_idx, owners) {
                            return None;
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, partition = o.state.partition, "consumer error");
                    }
                }
            }
        }
        Some(more)
    }

    /// Carries out one partition change.
    fn apply(&self, cmd: Command, c: &mut Consumed, waker: &QueueWaker) {
        match cmd {
            Command::Add(state, reply) => {
                let p = state.partition;
                if c.parts.remove(&p).is_some() {
                    self.unassign(p);
                }
                let r = self.assign(state, waker).map(|o| {
                    c.parts.insert(p, o);
                });
                let _ = reply.send(r);
            }
            Command::Remove(p, reply) => {
                if c.parts.remove(&p).is_some() {
                    self.unassign(p);
                    self.forget(p);
                }
                let _ = reply.send(());
            }
        }
    }

    /// Hands one frame record to the decode pool (holding its partition at the bound).
    /// Returns `false` when the pipeline is gone.
    fn dispatch(
        &self,
        m: &BorrowedMessage<'_>,
        state: &PartitionState,
        next_idx: &mut u64,
        owners: &mut panoptes_schemas::OwnerEpochs,
    ) -> bool {
        let p = m.partition();
        let pos = Position {
            partition: p,
            offset: m.offset(),
            idx: *next_idx,
            instance: state.instance,
        };
        *next_idx += 1;
        let n = state.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.metrics
            .frames
            .with_label_values(&[&self.label(p)])
            .inc();
        if n >= self.bound {
            state.hold(self.bound / 2);
        }
        let headers = FrameHeaders::from_kafka_headers(
            m.headers()
                .into_iter()
                .flat_map(|h| h.iter().map(|hdr| (hdr.key, hdr.value))),
        );
        state.consumed.fetch_add(1, Ordering::Relaxed);
        state.load_milli.fetch_add(
            headers
                .as_ref()
                .map_or(1000, |h| load_milli(h.width, h.height)),
            Ordering::Relaxed,
        );
        let superseded_by = match &headers {
            Ok(h) => match owners.observe(&h.camera_id, h.owner_epoch) {
                panoptes_schemas::OwnerVerdict::Superseded { highest } => Some(highest),
                _ => None,
            },
            Err(_) => None,
        };
        let trace = FrameTrace::received(headers.as_ref().ok().map(|h| h.traceparent.as_str()));
        let job = FrameJob {
            pos,
            key: m.key().map(<[u8]>::to_vec),
            headers,
            payload: m.payload().unwrap_or_default().to_vec(),
            timestamp_ms: m.timestamp().to_millis(),
            superseded_by,
            trace,
        };
        self.jobs.send(job).is_ok()
    }

    /// In-flight and held gauges; unassigns partitions their publisher released.
    fn relieve(&self, c: &mut Consumed) {
        let mut released = Vec::new();
        for o in c.parts.values() {
            let s = &o.state;
            let label = self.label(s.partition);
            let n = s.in_flight.load(Ordering::Acquire);
            self.metrics
                .in_flight
                .with_label_values(&[&label])
                .set(n as i64);
            self.metrics
                .paused
                .with_label_values(&[&label])
                .set(i64::from(s.held()));
            if s.released.load(Ordering::Acquire) {
                released.push(s.partition);
            }
        }
        for p in released {
            c.parts.remove(&p);
            self.unassign(p);
            self.forget(p);
            tracing::warn!(partition = p, "partition released");
        }
    }

    fn label(&self, partition: i32) -> String {
        format!("{}{partition}", self.label_prefix)
    }

    /// Splits the partition onto its own queue, then assigns it (in this order, so that
    /// none of its records reaches the consumer's own queue).
    fn assign(&self, state: Arc<PartitionState>, waker: &QueueWaker) -> Result<Owned, KafkaError> {
        let partition = state.partition;
        let queue = waker
            .watch_partition(&self.consumer, &self.topic, partition)
            .ok_or(KafkaError::Subscription(format!(
                "no queue for partition {partition} of {}",
                self.topic
            )))?;
        let wake = waker.waker();
        state.set_wake(move || wake.wake());
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Stored)?;
        self.consumer.incremental_assign(&tpl)?;
        Ok(Owned {
            state,
            queue,
            next_idx: 0,
        })
    }

    fn unassign(&self, partition: i32) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        if let Err(e) = self.consumer.incremental_unassign(&tpl) {
            tracing::warn!(error = %e, partition, "unassign failed");
        }
    }

    /// Removes a partition's labelled series (labels stay bounded by what is owned now).
    fn forget(&self, partition: i32) {
        let l = self.label(partition);
        let m = &self.metrics;
        for g in [&m.lag, &m.in_flight, &m.paused] {
            let _ = g.remove_label_values(&[&l]);
        }
        let _ = m.frames.remove_label_values(&[&l]);
    }

    /// Lag of every owned partition: its end offset (the last stable offset, as the consumer
    /// reads `read_committed`) minus its position. One ListOffsets round trip for all of
    /// them, at most [`LAG_TIMEOUT`]: `fetch_watermarks` per partition made two round trips
    /// each, one after the other, and held this thread (and with it every partition start
    /// waiting for its `Command::Add`) for ~1.8 s of every 2 s at 64 partitions
    /// (docs/benchmarks.md, "At 64 partitions per worker").
    fn update_lag(&self, c: &Consumed) {
        if c.parts.is_empty() {
            return;
        }
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        let mut latest = TopicPartitionList::new();
        for &p in c.parts.keys() {
            if latest
                .add_partition_offset(&self.topic, p, Offset::End)
                .is_err()
            {
                return;
            }
        }
        let ends = match self.consumer.offsets_for_times(latest, LAG_TIMEOUT) {
            Ok(ends) => ends,
            Err(e) => {
                tracing::debug!(error = %e, "end offsets for the lag");
                return;
            }
        };
        let offset_of = |tpl: &TopicPartitionList, p: i32| match tpl
            .find_partition(&self.topic, p)
            .filter(|e| e.error().is_ok())
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        for s in c.parts.values().map(|o| &o.state) {
            if let (Some(end), Some(pos)) = (
                offset_of(&ends, s.partition),
                offset_of(&positions, s.partition),
            ) {
                let lag = (end - pos).max(0);
                s.lag.store(lag, Ordering::Relaxed);
                self.metrics
                    .lag
                    .with_label_values(&[&self.label(s.partition)])
                    .set(lag);
            }
        }
    }
}

/// Load of one frame in thousandths of a load unit: pixels against 640×360.
fn load_milli(width: u32, height: u32) -> u64 {
    (u64::from(width) * u64::from(height) * 1000 / (640 * 360)).max(1)
}

/// Commits the acknowledged prefix of every partition (at-least-once mode), skipping
/// partitions whose assignment record no longer names this worker at the run's epoch (or
/// that the source cannot confirm now: they are committed at a later round).
pub fn commit<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &str,
    states: &[Arc<PartitionState>],
    mode: CommitMode,
    assignment: &dyn Assignment,
) {
    let epochs: BTreeMap<i32, u64> = states.iter().map(|s| (s.partition, s.epoch)).collect();
    let offsets = collect_commits(states);
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        let epoch = epochs.get(&p).copied().unwrap_or(0);
        match assignment.check(p, epoch) {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(partition = p, epoch, "not committing: epoch superseded");
                continue;
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "not committing: assignment unknown");
                continue;
            }
        }
        if tpl
            .add_partition_offset(topic, p, Offset::Offset(o))
            .is_err()
        {
            return;
        }
    }
    if tpl.count() == 0 {
        return;
    }
    if let Err(e) = consumer.commit(&tpl, mode) {
        tracing::warn!(error = %e, "offset commit failed");
    }
}

#[cfg(test)]
mod tests {
    use super::load_milli;

    #[test]
    fn load_units_scale_with_pixels() {
        assert_eq!(load_milli(640, 360), 1000);
        assert_eq!(load_milli(1280, 720), 4000);
        assert_eq!(load_milli(320, 180), 250);
        assert_eq!(load_milli(0, 0), 1);
    }
}
