//! Watching topics while a test or run goes on: a consumer thread per topic that records when
//! each record arrived, for recovery-time measurements (time from a fault to the next
//! committed detection of a partition, or to the next frame of a camera).
//!
//! Readers are `read_committed` and start at the end of each partition, so they see what a
//! downstream consumer would see from the moment they start.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use panoptes_schemas::{DetectionRecord, FrameHeaders, ModelRef, StageLatencies};
use panoptes_testkit::kafka::{KafkaClientConfig, client_config};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

/// One detection record as it arrived.
#[derive(Debug, Clone)]
pub struct SeenDetection {
    /// Wall clock at arrival (ms since the epoch).
    pub arrived_ms: u64,
    /// Frames partition of the record.
    pub partition: i32,
    /// Worker that wrote it.
    pub worker_id: String,
    /// Assignment epoch.
    pub epoch: u64,
    /// Camera.
    pub camera_id: String,
    /// Frame sequence number.
    pub seq: u64,
    /// Capture time of the frame (µs since the epoch, on the cluster clock).
    pub capture_time_us: i64,
    /// The record's per-stage latencies (`end_to_end_ms`: capture to publishing, as the
    /// worker measured it).
    pub latency: StageLatencies,
    /// The record's status (`ok`, `skipped_stale`, `shed_overload`).
    pub status: &'static str,
    /// The model (name and version) that inferred the frame.
    pub model: ModelRef,
}

/// One frame as it arrived.
#[derive(Debug, Clone)]
pub struct SeenFrame {
    /// Wall clock at arrival (ms since the epoch).
    pub arrived_ms: u64,
    /// Partition.
    pub partition: i32,
    /// Camera.
    pub camera_id: String,
    /// Sequence number.
    pub seq: u64,
    /// Capture time (µs since the epoch, on the cluster clock).
    pub capture_time_us: i64,
    /// Grant epoch of the ingest node that published it (coordinator mode).
    pub owner_epoch: Option<u64>,
}

/// Wall clock in ms since the epoch.
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

use shared::Shared;

mod shared {
    //! A tiny shared vector (std mutex; the watcher is not on a hot path).
    use std::sync::{Arc, Mutex};

    /// Shared, append-only list.
    #[derive(Debug)]
    pub struct Shared<T>(pub Arc<Mutex<Vec<T>>>);

    impl<T> Clone for Shared<T> {
        fn clone(&self) -> Self {
            Self(self.0.clone())
        }
    }

    impl<T: Clone> Shared<T> {
        pub fn new() -> Self {
            Self(Arc::new(Mutex::new(Vec::new())))
        }
        pub fn push(&self, t: T) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(t);
        }
        pub fn snapshot(&self) -> Vec<T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
        }
        pub fn take(&self) -> Vec<T> {
            std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()))
        }
    }
}

/// A running watcher; stops when dropped.
pub struct Watch<T: Clone> {
    seen: Shared<T>,
    _poller: Poller,
}

impl<T: Clone> Watch<T> {
    /// Everything seen so far.
    pub fn seen(&self) -> Vec<T> {
        self.seen.snapshot()
    }

    /// Everything seen since the last `take` (or the start), removed from the watch: a
    /// caller that takes regularly keeps the watch's memory bounded.
    pub fn take(&self) -> Vec<T> {
        self.seen.take()
    }
}

impl Watch<SeenDetection> {
    /// Waits up to `timeout` until `worker` has written, after `after_ms` (wall clock), a
    /// detection for each of the frames partitions of `items` (`<cluster>:<partition>`);
    /// returns those partitions.
    pub fn wait_written_by(
        &self,
        worker: &str,
        items: &[String],
        after_ms: u64,
        timeout: Duration,
    ) -> Result<Vec<i32>> {
        let partitions: Vec<i32> = items
            .iter()
            .filter_map(|i| panoptes_coordinator_client::keys::parse_partition_item(i))
            .map(|(_, p)| p)
            .collect();
        panoptes_testkit::wait_until(
            &format!("{worker}'s detections for partitions {partitions:?}"),
            timeout,
            || {
                let seen = self.seen();
                partitions
                    .iter()
                    .all(|p| {
                        seen.iter().any(|d| {
                            d.partition == *p && d.worker_id == worker && d.arrived_ms > after_ms
                        })
                    })
                    .then_some(())
            },
        )?;
        Ok(partitions)
    }
}

/// A thread polling a consumer; stops (and is joined) when dropped.
pub(crate) struct Poller {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Poller {
    /// Starts thread `name`, polling `consumer` (waiting up to `wait` a poll) and handing
    /// each message to `on_message`.
    pub(crate) fn spawn(
        name: &str,
        consumer: BaseConsumer,
        wait: Duration,
        mut on_message: impl FnMut(&BorrowedMessage<'_>) + Send + 'static,
    ) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while !st.load(Ordering::Relaxed) {
                    if let Some(Ok(m)) = consumer.poll(wait) {
                        on_message(&m);
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn consumer(bootstrap: &str, topic: &str) -> Result<BaseConsumer> {
    // Connection and security come from the shared client config, like every node's.
    let kafka = KafkaClientConfig::plaintext(bootstrap);
    let c: BaseConsumer = client_config(&kafka, &[])?
        .set("group.id", panoptes_testkit::unique_name("panoptes-watch"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "false")
        .set("fetch.wait.max.ms", "20")
        .set("reconnect.backoff.max.ms", "1000")
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics().iter().filter(|t| t.name() == topic) {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::End)?;
        }
    }
    c.assign(&tpl)?;
    Ok(c)
}

fn spawn<T: Clone + Send + 'static>(
    bootstrap: &str,
    topic: &str,
    parse: impl Fn(&BorrowedMessage<'_>) -> Option<T> + Send + 'static,
) -> Result<Watch<T>> {
    let c = consumer(bootstrap, topic)?;
    let seen = Shared::new();
    let s = seen.clone();
    let poller = Poller::spawn("watch", c, Duration::from_millis(50), move |m| {
        if let Some(t) = parse(m) {
            s.push(t);
        }
    })?;
    Ok(Watch {
        seen,
        _poller: poller,
    })
}

/// Watches a detections topic.
pub fn detections(bootstrap: &str, topic: &str) -> Result<Watch<SeenDetection>> {
    spawn(bootstrap, topic, |m| {
        let r = DetectionRecord::from_json(m.payload()?).ok()?;
        Some(SeenDetection {
            arrived_ms: wall_ms(),
            partition: r.partition,
            worker_id: r.worker_id,
            epoch: r.epoch,
            camera_id: r.camera_id,
            seq: r.seq,
            capture_time_us: r.capture_time_us,
            latency: r.latency,
            status: r.status.as_str(),
            model: r.model,
        })
    })
}

/// Watches a frames topic.
pub fn frames(bootstrap: &str, topic: &str) -> Result<Watch<SeenFrame>> {
    spawn(bootstrap, topic, |m| {
        let h = FrameHeaders::from_kafka_headers(
            m.headers()
                .into_iter()
                .flat_map(|h| h.iter().map(|hdr| (hdr.key, hdr.value))),
        )
        .ok()?;
        Some(SeenFrame {
            arrived_ms: wall_ms(),
            partition: m.partition(),
            camera_id: h.camera_id,
            seq: h.seq,
            capture_time_us: h.capture_time_us,
            owner_epoch: h.owner_epoch,
        })
    })
}
