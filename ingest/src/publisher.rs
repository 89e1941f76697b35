//! Publishing frames to Kafka: one idempotent producer per node, bounded local queue.
//!
//! `publish` never blocks: when the producer's queue is full (the broker is slow or gone) the
//! frame is dropped and counted, because a camera thread must keep draining its pipeline and
//! an old frame is worth less than a new one. Acknowledgements arrive on librdkafka's own
//! thread ([`ThreadedProducer`]) where publish latency and delivery failures are recorded.

use std::time::{Duration, Instant};

use panoptes_schemas::FrameHeaders;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::config::KafkaConfig;
use crate::metrics::IngestMetrics;

/// Why a frame was not enqueued.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The local queue is at its bound; retryable once the broker catches up.
    #[error("producer queue is full")]
    QueueFull,
    /// The frame exceeds the broker's message size limit; fatal for this frame.
    #[error("frame of {size} bytes exceeds message_max_bytes = {max}")]
    TooLarge {
        /// Record size.
        size: usize,
        /// Configured limit.
        max: usize,
    },
    /// Any other producer error.
    #[error("producer error: {0}")]
    Kafka(#[from] KafkaError),
}

impl PublishError {
    /// Metric label of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            PublishError::QueueFull => "producer_queue_full",
            PublishError::TooLarge { .. } => "too_large",
            PublishError::Kafka(_) => "producer_error",
        }
    }
}

/// Per-message state carried to the delivery callback.
pub struct Delivery {
    enqueued: Instant,
}

/// Producer context recording acknowledgements.
pub struct DeliveryContext {
    metrics: IngestMetrics,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, d: Self::DeliveryOpaque) {
        match result {
            Ok(_) => self
                .metrics
                .publish_latency
                .observe(d.enqueued.elapsed().as_secs_f64()),
            Err((e, _)) => {
                let reason = match e.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::MessageTimedOut) => "timed_out",
                    Some(RDKafkaErrorCode::MessageSizeTooLarge) => "too_large",
                    _ => "broker_error",
                };
                tracing::warn!(error = %e, "frame delivery failed");
                self.metrics
                    .publish_errors
                    .with_label_values(&[reason])
                    .inc();
            }
        }
    }
}

/// The node's frame publisher.
pub struct FramePublisher {
    producer: ThreadedProducer<DeliveryContext>,
    topic: String,
    max_bytes: usize,
    metrics: IngestMetrics,
}

impl FramePublisher {
    /// Creates the producer (does not wait for the broker).
    pub fn new(cfg: &KafkaConfig, metrics: IngestMetrics) -> Result<Self, KafkaError> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &cfg.bootstrap_servers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "none")
            .set("linger.ms", cfg.linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                cfg.message_timeout.as_millis().to_string(),
            )
            .set(
                "queue.buffering.max.messages",
                cfg.queue_max_messages.to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                cfg.queue_max_kbytes.to_string(),
            )
            .set(
                "message.max.bytes",
                (cfg.message_max_bytes + 64 * 1024).to_string(),
            )
            // librdkafka waits up to 10 s between reconnects by default; a real-time feed
            // wants the broker back within about a second of it returning.
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "1000")
            .set("client.id", "panoptes-ingest");
        for (k, v) in &cfg.properties {
            cc.set(k, v);
        }
        let producer = cc.create_with_context(DeliveryContext {
            metrics: metrics.clone(),
        })?;
        Ok(Self {
            producer,
            topic: cfg.topic.clone(),
            max_bytes: cfg.message_max_bytes,
            metrics,
        })
    }

    /// Enqueues one frame; never blocks.
    pub fn publish(
        &self,
        partition: Option<i32>,
        headers: &FrameHeaders,
        payload: &[u8],
    ) -> Result<(), PublishError> {
        let kafka_headers = headers.to_kafka_headers();
        let size = payload.len()
            + headers.camera_id.len()
            + kafka_headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>();
        if size > self.max_bytes {
            return Err(PublishError::TooLarge {
                size,
                max: self.max_bytes,
            });
        }
        let mut owned = OwnedHeaders::new_with_capacity(kafka_headers.len());
        for (key, value) in &kafka_headers {
            owned = owned.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let mut record = BaseRecord::with_opaque_to(
            &self.topic,
            Box::new(Delivery {
                enqueued: Instant::now(),
            }),
        )
        .key(headers.camera_id.as_str())
        .payload(payload)
        .headers(owned);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        match self.producer.send(record) {
            Ok(()) => {
                self.metrics
                    .producer_queue
                    .set(i64::from(self.producer.in_flight_count()));
                Ok(())
            }
            Err((e, _)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                Err(PublishError::QueueFull)
            }
            Err((e, _)) => Err(PublishError::Kafka(e)),
        }
    }

    /// Messages waiting or in flight.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Blocks until the queue is empty or `timeout` passes. Call off the async runtime.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }

    /// Asks the broker for the topic's metadata: the readiness probe. Blocking.
    pub fn check_broker(&self, timeout: Duration) -> Result<usize, KafkaError> {
        let md = self
            .producer
            .client()
            .fetch_metadata(Some(&self.topic), timeout)?;
        let topic = md.topics().iter().find(|t| t.name() == self.topic);
        match topic {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(t.partitions().len())
            }
            _ => Err(KafkaError::MetadataFetch(
                RDKafkaErrorCode::UnknownTopicOrPartition,
            )),
        }
    }
}
