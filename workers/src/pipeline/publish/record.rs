//! What both publishers share: the producer settings, encoding an [`Output`] into a Kafka
//! record, and sending it through a producer whose local queue may be full.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use rdkafka::util::IntoOpaque;

use crate::config::KafkaConfig;
use crate::error::PublishError;
use crate::metrics::WorkerMetrics;
use crate::pipeline::trace::{SendSpan, publish_spans};
use crate::pipeline::work::{Outcome, Output, ms_between_us, now_us};

/// An encoded outcome, ready to send.
pub struct Encoded<'a> {
    /// Detections or dead-letter topic.
    pub topic: &'a str,
    /// The record key (the camera id, when known).
    pub key: Option<String>,
    /// The JSON payload.
    pub payload: Vec<u8>,
    /// Metric label: the record status, or `dead_letter`.
    pub status: &'static str,
    /// The record's `traceparent` header: its `send` span's context when traced, else the
    /// detection record's own field (dead letters without a span have none).
    pub traceparent: Option<String>,
}

/// Encodes an outcome. Fills in publish time and end-to-end latency of detection records.
pub fn encode<'a>(
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
                traceparent: r.traceparent.clone(),
            }
        }
        Output::DeadLetter(d) => Encoded {
            topic: cfg.dlq_topic.as_str(),
            key: d.camera_id.clone(),
            payload: d.to_json()?,
            status: "dead_letter",
            traceparent: None,
        },
    })
}

/// [`encode`] under the record's `send` span: when the frame is traced and kept, its spans
/// are made ([`crate::pipeline::trace::publish_spans`]) and the span's context becomes the
/// record's `traceparent`. End the returned span once the record is handed over.
pub fn encode_traced<'a>(
    cfg: &'a KafkaConfig,
    outcome: &mut Outcome,
    metrics: &WorkerMetrics,
) -> Result<(Encoded<'a>, SendSpan), PublishError> {
    let topic = match outcome.output {
        Output::Record(_) => cfg.detections_topic.as_str(),
        Output::DeadLetter(_) => cfg.dlq_topic.as_str(),
    };
    let span = publish_spans(
        &outcome.trace,
        outcome.pos,
        &mut outcome.output,
        &cfg.frames_topic,
        topic,
    );
    let mut encoded = encode(cfg, &mut outcome.output, metrics)?;
    if let Some(tp) = span.traceparent() {
        encoded.traceparent = Some(tp);
    }
    Ok((encoded, span))
}

/// Settings of every worker producer: connection and security, the shared delivery
/// settings (idempotent, acknowledged by all replicas) and the worker's tuning. Fails
/// (`KafkaError::ClientCreation`) when the `[kafka]` security settings cannot be used.
pub fn base_config(cfg: &KafkaConfig, client_id: &str) -> Result<ClientConfig, KafkaError> {
    let mut cc = crate::pipeline::consume::connection_config(cfg)?;
    cc.extend(cfg.producer.delivery_properties());
    cc.set("linger.ms", "2")
        .set("queue.buffering.max.messages", "10000")
        .set("client.id", client_id);
    cc.extend(cfg.client.override_properties());
    Ok(cc)
}

/// A producer's `send`, as a closure (the threaded and the base producer have one each).
type SendResult<'a, D> = Result<(), (KafkaError, BaseRecord<'a, str, [u8], D>)>;

/// Sends `encoded` with `opaque` through `send`, calling `wait` and retrying while the
/// producer's local queue is full (back-pressure, not an error); any other error is returned.
pub fn send_queued<'a, D: IntoOpaque>(
    encoded: &'a Encoded<'_>,
    mut opaque: D,
    mut send: impl FnMut(BaseRecord<'a, str, [u8], D>) -> SendResult<'a, D>,
    mut wait: impl FnMut(Duration),
) -> Result<(), KafkaError> {
    loop {
        let mut rec =
            BaseRecord::with_opaque_to(encoded.topic, opaque).payload(encoded.payload.as_slice());
        if let Some(k) = &encoded.key {
            rec = rec.key(k.as_str());
        }
        if let Some(tp) = &encoded.traceparent {
            rec = rec.headers(OwnedHeaders::new_with_capacity(1).insert(Header {
                key: panoptes_schemas::headers::TRACEPARENT,
                value: Some(tp.as_bytes()),
            }));
        }
        match send(rec) {
            Ok(()) => return Ok(()),
            Err((e, rec)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                opaque = rec.delivery_opaque;
                wait(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(e),
        }
    }
}
