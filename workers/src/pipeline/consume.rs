//! Consume, the first stage: the consumer thread of a lane. Manual assignment of the owned frames partitions (added and removed
//! at run time through [`Command`]s), back-pressure by pause/resume, offset commits
//! (at-least-once, each checked against the assignment) and lag metrics.
//!
//! Partitions are `incremental_assign`ed (no group rebalancing: the coordinator, not Kafka's group
//! protocol, moves partitions) starting from the group's committed offsets
//! (`Offset::Stored`; `auto.offset.reset = earliest` when nothing is committed). Each partition
//! may have at most `partition_queue` frames in flight; at the bound it is `pause`d, and
//! `resume`d once half of them are done. So memory is bounded, and overload shows up as
//! Kafka lag, never as a growing queue.
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
        // Frames are big: fetch little ahead, the in-flight bound does the buffering.
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

const POLL: Duration = Duration::from_millis(50);

/// What the consumer thread tracks between polls.
#[derive(Default)]
struct Consumed {
    /// The partition runs being consumed.
    by_partition: BTreeMap<i32, Arc<PartitionState>>,
    /// The `idx` the next frame of each partition gets.
    next_idx: BTreeMap<i32, u64>,
    /// Partitions paused at their in-flight bound.
    paused: BTreeSet<i32>,
    /// Highest ingest owner epoch seen per camera (the owner-epoch rule, in offset order).
    owners: panoptes_schemas::OwnerEpochs,
}

impl ConsumerLoop {
    /// Runs until `stop` fires. Dropping the job sender on return tells the pipeline to drain.
    /// Returns the partitions it still consumed (for the final commit).
    pub fn run(self, stop: &CancellationToken) -> Vec<Arc<PartitionState>> {
        let mut c = Consumed::default();
        let mut last_commit = Instant::now();
        let mut last_lag = Instant::now();
        while !stop.is_cancelled() {
            while let Ok(cmd) = self.commands.try_recv() {
                self.apply(cmd, &mut c);
            }
            if let Some(result) = self.consumer.poll(POLL) {
                match result {
                    Ok(m) => {
                        if !self.dispatch(&m, &mut c) {
                            return c.by_partition.into_values().collect();
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "consumer error"),
                }
            }
            self.relieve(&mut c);
            if self.mode == DeliveryMode::AtLeastOnce
                && last_commit.elapsed() >= self.commit_interval
            {
                last_commit = Instant::now();
                let states: Vec<_> = c.by_partition.values().cloned().collect();
                commit(
                    &self.consumer,
                    &self.topic,
                    &states,
                    CommitMode::Async,
                    self.assignment.as_ref(),
                );
            }
            if last_lag.elapsed() >= Duration::from_secs(2) {
                last_lag = Instant::now();
                self.update_lag(&c.by_partition);
            }
        }
        c.by_partition.into_values().collect()
    }

    /// Carries out one partition change.
    fn apply(&self, cmd: Command, c: &mut Consumed) {
        match cmd {
            Command::Add(state, reply) => {
                let p = state.partition;
                if c.by_partition.contains_key(&p) {
                    self.unassign(p);
                }
                c.paused.remove(&p);
                c.next_idx.insert(p, 0);
                let r = self.assign(p);
                if r.is_ok() {
                    c.by_partition.insert(p, state);
                }
                let _ = reply.send(r);
            }
            Command::Remove(p, reply) => {
                if c.by_partition.remove(&p).is_some() {
                    self.unassign(p);
                    self.forget(p);
                }
                c.paused.remove(&p);
                let _ = reply.send(());
            }
        }
    }

    /// Hands one frame record to the decode pool (pausing its partition at the bound).
    /// Returns `false` when the pipeline is gone.
    fn dispatch(&self, m: &BorrowedMessage<'_>, c: &mut Consumed) -> bool {
        let p = m.partition();
        let Some(state) = c.by_partition.get(&p) else {
            return true;
        };
        let idx = c.next_idx.entry(p).or_default();
        let pos = Position {
            partition: p,
            offset: m.offset(),
            idx: *idx,
            instance: state.instance,
        };
        *idx += 1;
        let n = state.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        self.metrics
            .frames
            .with_label_values(&[&self.label(p)])
            .inc();
        if n >= self.bound && c.paused.insert(p) {
            self.set_paused(p, true);
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
            Ok(h) => match c.owners.observe(&h.camera_id, h.owner_epoch) {
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

    /// In-flight gauges; resumes partitions whose in-flight count fell to half the bound;
    /// unassigns partitions their publisher released.
    fn relieve(&self, c: &mut Consumed) {
        let mut released = Vec::new();
        for s in c.by_partition.values() {
            let n = s.in_flight.load(Ordering::Acquire);
            self.metrics
                .in_flight
                .with_label_values(&[&self.label(s.partition)])
                .set(n as i64);
            if c.paused.contains(&s.partition) && n <= self.bound / 2 {
                c.paused.remove(&s.partition);
                self.set_paused(s.partition, false);
            }
            if s.released.load(Ordering::Acquire) {
                released.push(s.partition);
            }
        }
        for p in released {
            c.by_partition.remove(&p);
            self.unassign(p);
            self.forget(p);
            tracing::warn!(partition = p, "partition released");
        }
    }

    fn label(&self, partition: i32) -> String {
        format!("{}{partition}", self.label_prefix)
    }

    fn assign(&self, partition: i32) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, Offset::Stored)?;
        self.consumer.incremental_assign(&tpl)
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

    fn set_paused(&self, partition: i32, pause: bool) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        let r = if pause {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        if let Err(e) = r {
            tracing::warn!(error = %e, partition, pause, "pause/resume failed");
        } else if !pause {
            // librdkafka is slow to refetch after a resume (docs/benchmarks.md, "Consume rate").
            panoptes_runtime::kafka_poll::restart_fetch(&self.consumer, &self.topic, partition);
        }
        tracing::debug!(partition, pause, "back-pressure");
        self.metrics
            .paused
            .with_label_values(&[&self.label(partition)])
            .set(i64::from(pause));
    }

    fn update_lag(&self, states: &BTreeMap<i32, Arc<PartitionState>>) {
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for s in states.values() {
            let Ok((_, high)) = self.consumer.fetch_watermarks(
                &self.topic,
                s.partition,
                Duration::from_millis(200),
            ) else {
                continue;
            };
            if let Some(Offset::Offset(pos)) = positions
                .find_partition(&self.topic, s.partition)
                .map(|e| e.offset())
            {
                let lag = (high - pos).max(0);
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
