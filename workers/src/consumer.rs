//! The consumer thread: manual assignment of the owned frames partitions, back-pressure by
//! pause/resume, offset commits (at-least-once) and lag metrics.
//!
//! Partitions are `assign`ed (no group rebalancing: the coordinator, not Kafka's group
//! protocol, moves partitions) starting from the group's committed offsets
//! (`Offset::Stored`; `auto.offset.reset = earliest` when nothing is committed). Each partition
//! may have at most `partition_queue` frames in flight; at the bound it is `pause`d, and
//! `resume`d once half of them are done. So memory is bounded, and overload shows up as
//! Kafka lag, never as a growing queue.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use panoptes_schemas::FrameHeaders;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::config::{DeliveryMode, KafkaConfig};
use crate::metrics::WorkerMetrics;
use crate::publisher::{PartitionState, collect_commits};
use crate::work::{FrameJob, Position};

/// Creates the frames consumer (no I/O yet).
pub fn create(cfg: &KafkaConfig, worker_id: &str) -> Result<BaseConsumer, KafkaError> {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.bootstrap_servers)
        .set("group.id", &cfg.group_id)
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
    for (k, v) in &cfg.properties {
        cc.set(k, v);
    }
    cc.create()
}

/// The partitions to own: `configured`, or every partition of the topic when empty. Blocks
/// until the broker answers or `timeout` passes.
pub fn resolve_partitions(
    consumer: &BaseConsumer,
    topic: &str,
    configured: &[i32],
    timeout: Duration,
) -> Result<Vec<i32>, KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
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

/// Assigns `partitions` from the group's committed offsets.
pub fn assign(consumer: &BaseConsumer, topic: &str, partitions: &[i32]) -> Result<(), KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Stored)?;
    }
    consumer.assign(&tpl)
}

/// The consumer thread's inputs.
pub struct ConsumerLoop {
    /// The consumer (shared: the probe and the shutdown commit use it too).
    pub consumer: Arc<BaseConsumer>,
    /// Frames topic.
    pub topic: String,
    /// Owned partitions.
    pub states: Vec<Arc<PartitionState>>,
    /// In-flight bound per partition.
    pub bound: usize,
    /// To the decode pool.
    pub jobs: Sender<FrameJob>,
    /// Metrics.
    pub metrics: WorkerMetrics,
    /// Delivery mode (commits here only in at-least-once mode).
    pub mode: DeliveryMode,
    /// How often to commit.
    pub commit_interval: Duration,
}

const POLL: Duration = Duration::from_millis(50);

impl ConsumerLoop {
    /// Runs until `stop` fires. Dropping the job sender on return tells the pipeline to drain.
    pub fn run(self, stop: &CancellationToken) {
        let by_partition: BTreeMap<i32, Arc<PartitionState>> = self
            .states
            .iter()
            .map(|s| (s.partition, s.clone()))
            .collect();
        let mut next_idx: BTreeMap<i32, u64> = BTreeMap::new();
        let mut paused: BTreeSet<i32> = BTreeSet::new();
        let mut released: BTreeSet<i32> = BTreeSet::new();
        let mut last_commit = Instant::now();
        let mut last_lag = Instant::now();
        while !stop.is_cancelled() {
            if let Some(result) = self.consumer.poll(POLL) {
                match result {
                    Ok(m) => {
                        let p = m.partition();
                        let Some(state) = by_partition.get(&p) else {
                            continue;
                        };
                        let idx = next_idx.entry(p).or_default();
                        let pos = Position {
                            partition: p,
                            offset: m.offset(),
                            idx: *idx,
                        };
                        *idx += 1;
                        let n = state.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
                        self.metrics
                            .frames
                            .with_label_values(&[&p.to_string()])
                            .inc();
                        if n >= self.bound && paused.insert(p) {
                            self.set_paused(p, true);
                        }
                        let headers = FrameHeaders::from_kafka_headers(
                            m.headers()
                                .into_iter()
                                .flat_map(|h| h.iter().map(|hdr| (hdr.key, hdr.value))),
                        );
                        let job = FrameJob {
                            pos,
                            key: m.key().map(<[u8]>::to_vec),
                            headers,
                            payload: m.payload().unwrap_or_default().to_vec(),
                            timestamp_ms: m.timestamp().to_millis(),
                        };
                        if self.jobs.send(job).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "consumer error"),
                }
            }
            for s in &self.states {
                let n = s.in_flight.load(Ordering::Acquire);
                self.metrics
                    .in_flight
                    .with_label_values(&[&s.partition.to_string()])
                    .set(n as i64);
                if paused.contains(&s.partition) && n <= self.bound / 2 {
                    paused.remove(&s.partition);
                    self.set_paused(s.partition, false);
                }
                if s.released.load(Ordering::Acquire) && released.insert(s.partition) {
                    self.release(s.partition);
                }
            }
            if self.mode == DeliveryMode::AtLeastOnce
                && last_commit.elapsed() >= self.commit_interval
            {
                last_commit = Instant::now();
                commit(&self.consumer, &self.topic, &self.states, CommitMode::Async);
            }
            if last_lag.elapsed() >= Duration::from_secs(2) {
                last_lag = Instant::now();
                self.update_lag();
            }
        }
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
        }
        tracing::debug!(partition, pause, "back-pressure");
        self.metrics
            .paused
            .with_label_values(&[&partition.to_string()])
            .set(i64::from(pause));
    }

    fn release(&self, partition: i32) {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        if let Err(e) = self.consumer.incremental_unassign(&tpl) {
            tracing::warn!(error = %e, partition, "unassign failed");
        }
        tracing::warn!(partition, "partition released");
    }

    fn update_lag(&self) {
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        for s in &self.states {
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
                self.metrics
                    .lag
                    .with_label_values(&[&s.partition.to_string()])
                    .set((high - pos).max(0));
            }
        }
    }
}

/// Commits the acknowledged prefix of every partition (at-least-once mode).
pub fn commit(
    consumer: &BaseConsumer,
    topic: &str,
    states: &[Arc<PartitionState>],
    mode: CommitMode,
) {
    let offsets = collect_commits(states);
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        if tpl
            .add_partition_offset(topic, p, Offset::Offset(o))
            .is_err()
        {
            return;
        }
    }
    if let Err(e) = consumer.commit(&tpl, mode) {
        tracing::warn!(error = %e, "offset commit failed");
    }
}
