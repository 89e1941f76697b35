//! The live reader: consumes the frames, detections and dead-letter topics while a run goes
//! on, feeding an [`Accounting`], until told to stop.
//!
//! The development broker keeps only about 5 MB per partition, so a checker must read while
//! the run goes on rather than afterwards. [`Checker::start`] creates one rdkafka consumer
//! (`isolation.level=read_committed`, no consumer group membership or commits: every
//! partition of the three topics is assigned manually from the beginning) and runs it on its
//! own thread. Topics and partitions that appear later are picked up by a metadata refresh
//! every two seconds. Payloads are decoded (for accuracy) on that thread as they arrive and then
//! dropped, so memory stays at a small entry per frame.
//!
//! [`Checker::finish`] (or a [`StopToken`]) ends the run: the reader keeps draining until it
//! has caught up with every partition's high watermark, or the drain grace period ends,
//! whichever comes first, and returns the [`Report`].

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use panoptes_runtime::config::KafkaClientConfig;
use panoptes_schemas::{DeadLetter, DetectionRecord, FrameHeaders, topics};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::accounting::Accounting;
use super::report::Report;
use panoptes_scene::camera::CameraConfig;

/// Why the checker could not run.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Creating or driving the Kafka consumer failed.
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// The reader thread could not be started.
    #[error("starting the reader thread: {0}")]
    Spawn(#[from] std::io::Error),
    /// The reader thread panicked.
    #[error("the reader thread panicked")]
    Panicked,
}

/// What to read and how.
#[derive(Debug, Clone)]
pub struct ReaderConfig {
    /// How to reach the cluster: bootstrap servers and security (TLS, SASL), the keys every
    /// node's `[kafka]` section shares.
    pub kafka: KafkaClientConfig,
    /// Frames topic, default [`topics::FRAMES`].
    pub frames_topic: String,
    /// Detections topic, default [`topics::DETECTIONS`].
    pub detections_topic: String,
    /// Dead-letter topic, default [`topics::FRAMES_DLQ`].
    pub dlq_topic: String,
    /// Whether to decode frames and score detections against ground truth.
    pub accuracy: bool,
    /// Camera specs (as given to the simulator) for accuracy.
    pub cameras: Vec<CameraConfig>,
    /// Longest time to keep reading after the stop request, default 5 s.
    pub drain: Duration,
    /// Extra librdkafka settings (applied last, so they can override the defaults).
    pub client_config: Vec<(String, String)>,
}

impl ReaderConfig {
    /// The default topics, no accuracy, 5 s drain.
    pub fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            kafka: KafkaClientConfig::plaintext(bootstrap),
            frames_topic: topics::FRAMES.to_owned(),
            detections_topic: topics::DETECTIONS.to_owned(),
            dlq_topic: topics::FRAMES_DLQ.to_owned(),
            accuracy: false,
            cameras: Vec::new(),
            drain: Duration::from_secs(5),
            client_config: Vec::new(),
        }
    }
}

/// Asks a running [`Checker`] to stop (drain, then return its report). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct StopToken(Arc<AtomicBool>);

impl StopToken {
    /// Requests the stop; idempotent.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether a stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Records read so far, by topic (for progress output and for tests that wait).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    /// Records read from the frames topic (malformed included).
    pub frames: u64,
    /// Records read from the detections topic (malformed included).
    pub detections: u64,
    /// Records read from the dead-letter topic (malformed included).
    pub dead_letters: u64,
}

#[derive(Debug, Default)]
struct Counters {
    frames: AtomicU64,
    detections: AtomicU64,
    dead_letters: AtomicU64,
}

/// A checker reading the topics on its own thread.
#[derive(Debug)]
pub struct Checker {
    stop: StopToken,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<Result<Report, CheckError>>>,
}

impl Checker {
    /// Creates the consumer (configuration errors surface here) and starts reading.
    pub fn start(config: ReaderConfig) -> Result<Self, CheckError> {
        let connection = config
            .kafka
            .connection_properties()
            .map_err(|e| KafkaError::ClientCreation(e.to_string()))?;
        let mut client: ClientConfig = connection.into_iter().collect();
        client
            .set("group.id", format!("panoptes-check-{}", std::process::id()))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .set("enable.partition.eof", "false")
            .set("allow.auto.create.topics", "false")
            // Watermark and metadata requests queue behind the fetch long-poll on the same
            // connection; a short long-poll keeps the drain's catch-up checks fast.
            .set("fetch.wait.max.ms", "100");
        client.extend(config.kafka.override_properties());
        for (k, v) in &config.client_config {
            client.set(k, v);
        }
        let consumer: BaseConsumer = client.create()?;
        let stop = StopToken::default();
        let counters = Arc::new(Counters::default());
        let mut run = Run {
            accounting: Accounting::new(config.accuracy, &config.cameras),
            consumer,
            assigned: HashSet::new(),
            counters: counters.clone(),
            config,
        };
        let token = stop.clone();
        let thread = std::thread::Builder::new()
            .name("panoptes-check".into())
            .spawn(move || run.run(&token))?;
        Ok(Self {
            stop,
            counters,
            thread: Some(thread),
        })
    }

    /// A token that stops this checker from anywhere (e.g. a Ctrl-C handler).
    pub fn stop_token(&self) -> StopToken {
        self.stop.clone()
    }

    /// Records read so far.
    pub fn progress(&self) -> Progress {
        Progress {
            frames: self.counters.frames.load(Ordering::Relaxed),
            detections: self.counters.detections.load(Ordering::Relaxed),
            dead_letters: self.counters.dead_letters.load(Ordering::Relaxed),
        }
    }

    /// Whether the reader thread has ended (after a stop, or on a fatal error).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Requests the stop, waits for the drain and returns the report.
    pub fn finish(mut self) -> Result<Report, CheckError> {
        self.stop.stop();
        let thread = self.thread.take().ok_or(CheckError::Panicked)?;
        thread.join().map_err(|_| CheckError::Panicked)?
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        // Never block in drop: the thread sees the flag, drains and ends on its own.
        self.stop.stop();
    }
}

/// State of the reader thread.
struct Run {
    accounting: Accounting,
    consumer: BaseConsumer,
    assigned: HashSet<(String, i32)>,
    counters: Arc<Counters>,
    config: ReaderConfig,
}

const POLL: Duration = Duration::from_millis(100);
const REFRESH_EVERY: Duration = Duration::from_secs(2);

impl Run {
    fn run(&mut self, stop: &StopToken) -> Result<Report, CheckError> {
        let mut last_refresh: Option<Instant> = None;
        let mut drain_until: Option<Instant> = None;
        loop {
            if drain_until.is_none() && stop.is_stopped() {
                drain_until = Some(Instant::now() + self.config.drain);
                // Pick up partitions created just before the stop.
                last_refresh = None;
            }
            if last_refresh.is_none_or(|t| t.elapsed() >= REFRESH_EVERY) {
                self.refresh_assignment()?;
                last_refresh = Some(Instant::now());
            }
            let idle = match self.consumer.poll(POLL) {
                Some(Ok(message)) => {
                    dispatch(&mut self.accounting, &self.counters, &self.config, &message);
                    false
                }
                Some(Err(err)) => {
                    if is_fatal(&err) {
                        return Err(err.into());
                    }
                    tracing::debug!(error = %err, "consumer error (retried by librdkafka)");
                    true
                }
                None => true,
            };
            if let Some(deadline) = drain_until {
                if Instant::now() >= deadline {
                    tracing::warn!("drain grace period ended before the checker caught up");
                    break;
                }
                if idle && self.caught_up() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let drained = self.config.drain.saturating_sub(left);
                    tracing::debug!(?drained, "caught up");
                    break;
                }
            }
        }
        Ok(self.accounting.report())
    }

    /// Assigns, from the beginning, every partition of the three topics not yet assigned.
    fn refresh_assignment(&mut self) -> Result<(), CheckError> {
        let mut new = TopicPartitionList::new();
        let wanted = [
            self.config.frames_topic.as_str(),
            self.config.detections_topic.as_str(),
            self.config.dlq_topic.as_str(),
        ];
        // One metadata request for all topics (not three that each wait for the fetch).
        let metadata = match self.consumer.fetch_metadata(None, POLL * 20) {
            Ok(m) => m,
            Err(err) => {
                tracing::debug!(error = %err, "metadata not available yet");
                return Ok(());
            }
        };
        let found = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && wanted.contains(&t.name()));
        for t in found {
            for p in t.partitions() {
                if self.assigned.insert((t.name().to_owned(), p.id())) {
                    new.add_partition_offset(t.name(), p.id(), Offset::Beginning)?;
                }
            }
        }
        if new.count() > 0 {
            tracing::debug!(partitions = new.count(), "assigning new partitions");
            self.consumer.incremental_assign(&new)?;
        }
        Ok(())
    }

    /// Whether every assigned partition has been read up to its high watermark.
    fn caught_up(&self) -> bool {
        let Ok(positions) = self.consumer.position() else {
            return false;
        };
        self.assigned.iter().all(|(topic, partition)| {
            let Ok((low, high)) = self.consumer.fetch_watermarks(topic, *partition, POLL * 10)
            else {
                return false;
            };
            let pos = positions
                .find_partition(topic, *partition)
                .map(|e| e.offset());
            match pos {
                Some(Offset::Offset(pos)) => pos >= high,
                // Nothing consumed yet: caught up only if there is nothing to consume.
                _ => high <= low,
            }
        })
    }
}

/// Feeds one record to the accounting, by topic.
fn dispatch(
    accounting: &mut Accounting,
    counters: &Counters,
    config: &ReaderConfig,
    m: &BorrowedMessage<'_>,
) {
    let topic = m.topic();
    let payload = m.payload().unwrap_or_default();
    if topic == config.frames_topic {
        counters.frames.fetch_add(1, Ordering::Relaxed);
        let headers = m
            .headers()
            .map(|h| FrameHeaders::from_kafka_headers(h.iter().map(|hdr| (hdr.key, hdr.value))));
        match headers {
            Some(Ok(h)) => {
                accounting.observe_frame(m.partition(), m.offset(), m.key(), &h, payload);
            }
            _ => accounting.observe_malformed_frame(m.partition(), m.offset()),
        }
    } else if topic == config.detections_topic {
        counters.detections.fetch_add(1, Ordering::Relaxed);
        match DetectionRecord::from_json(payload) {
            Ok(r) => {
                accounting.observe_detection(m.partition(), m.offset(), &r);
            }
            Err(err) => {
                tracing::warn!(partition = m.partition(), offset = m.offset(), error = %err, "malformed detection record");
                accounting.observe_malformed_record();
            }
        }
    } else if topic == config.dlq_topic {
        counters.dead_letters.fetch_add(1, Ordering::Relaxed);
        match DeadLetter::from_json(payload) {
            Ok(l) => accounting.observe_dead_letter(&l),
            Err(err) => {
                tracing::warn!(partition = m.partition(), offset = m.offset(), error = %err, "malformed dead letter");
                accounting.observe_malformed_record();
            }
        }
    }
}

/// Errors the consumer cannot recover from; everything else librdkafka retries.
fn is_fatal(err: &KafkaError) -> bool {
    matches!(
        err.rdkafka_error_code(),
        Some(rdkafka::types::RDKafkaErrorCode::Fatal)
    )
}
