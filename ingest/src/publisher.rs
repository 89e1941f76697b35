//! Publishing frames to Kafka: one idempotent producer per node, bounded local queue.
//!
//! `publish` never blocks: when the producer's queue is full (the broker is slow or gone) the
//! frame is dropped and counted, because a camera thread must keep draining its pipeline and
//! an old frame is worth less than a new one. Acknowledgements arrive on librdkafka's own
//! thread ([`ThreadedProducer`]) where publish latency and delivery failures are recorded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
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
    /// The camera's count of frames enqueued and not yet acknowledged or failed.
    pending: Arc<AtomicI64>,
}

/// Producer context recording acknowledgements.
pub struct DeliveryContext {
    metrics: IngestMetrics,
}

impl ClientContext for DeliveryContext {}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = Box<Delivery>;

    fn delivery(&self, result: &DeliveryResult<'_>, d: Self::DeliveryOpaque) {
        d.pending.fetch_sub(1, Ordering::AcqRel);
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
    /// Per camera: frames enqueued and not yet acknowledged (or failed), so a handover can
    /// wait for exactly that camera's frames while the others keep publishing.
    pending: Mutex<HashMap<String, Arc<AtomicI64>>>,
}

impl FramePublisher {
    /// Creates the producer (does not wait for the broker).
    pub fn new(cfg: &KafkaConfig, metrics: IngestMetrics) -> Result<Self, KafkaError> {
        let mut cc: ClientConfig = cfg.client.connection_properties().into_iter().collect();
        cc.extend(cfg.producer.delivery_properties());
        cc.set("compression.type", "none")
            .set("linger.ms", cfg.linger.as_millis().to_string())
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
            .set("client.id", "panoptes-ingest");
        cc.extend(cfg.client.override_properties());
        let producer = cc.create_with_context(DeliveryContext {
            metrics: metrics.clone(),
        })?;
        Ok(Self {
            producer,
            topic: cfg.topic.clone(),
            max_bytes: cfg.message_max_bytes,
            metrics,
            pending: Mutex::default(),
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
        let pending = self.pending_counter(&headers.camera_id);
        pending.fetch_add(1, Ordering::AcqRel);
        let mut record = BaseRecord::with_opaque_to(
            &self.topic,
            Box::new(Delivery {
                enqueued: Instant::now(),
                pending: pending.clone(),
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
                pending.fetch_sub(1, Ordering::AcqRel);
                Err(PublishError::QueueFull)
            }
            Err((e, _)) => {
                pending.fetch_sub(1, Ordering::AcqRel);
                Err(PublishError::Kafka(e))
            }
        }
    }

    fn pending_counter(&self, camera: &str) -> Arc<AtomicI64> {
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(camera) {
            return c.clone();
        }
        let c = Arc::new(AtomicI64::new(0));
        map.insert(camera.to_string(), c.clone());
        c
    }

    /// Frames of `camera` enqueued and not yet acknowledged or failed.
    pub fn pending(&self, camera: &str) -> i64 {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(camera)
            .map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// Blocks until every frame of `camera` enqueued so far was acknowledged or failed, or
    /// `timeout` passes; returns whether none is left. Other cameras keep publishing
    /// meanwhile (unlike [`FramePublisher::flush`], which waits for the whole queue).
    /// Call off the async runtime, after the camera stopped publishing.
    pub fn wait_delivered(&self, camera: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.pending(camera) <= 0 {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Forgets `camera`'s delivery counter (it left the node and has nothing in flight).
    pub fn forget(&self, camera: &str) {
        let mut map = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if map
            .get(camera)
            .is_some_and(|c| c.load(Ordering::Acquire) <= 0)
        {
            map.remove(camera);
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
