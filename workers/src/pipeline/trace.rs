//! A frame's trace through the worker: what the stages record for it, and the spans made
//! from that once its outcome is known ([`panoptes_runtime::trace`] has the conventions).
//!
//! Spans, per the OpenTelemetry messaging conventions:
//! - per frame, `receive <frames topic>` (CONSUMER): child of the frame's creation context
//!   (the ingest PRODUCER span named by its `traceparent` header), from the consumer's poll
//!   to the end of decoding; partition, offset, key, camera, sequence number;
//! - per batch, `process <frames topic>` (CONSUMER, its own trace) with a **link** to every
//!   frame's creation context (a batch has many parents), and its child `inference`
//!   (INTERNAL: batch size, device, model name and version) around the forward pass;
//! - per record, `send <detections or dead-letter topic>` (PRODUCER), child of the frame's
//!   receive span and linked to its batch span; its context is the record's `traceparent`
//!   (JSON field and Kafka header), so the trace goes on downstream.
//!
//! Cost: with tracing off (no endpoint), [`FrameTrace`] is an empty `Option` and nothing
//! else runs. With tracing on, a frame carries its parsed parent and three timestamps; spans
//! are built only for frames that are kept: sampled upstream (the `traceparent` flag), or,
//! with `keep_anomalies`, dead-lettered or skipped, or slower end to end than
//! `slow_threshold`. Because those facts are known only at the end, the receive span is made
//! when the frame is published, with its real start and end times.

use std::time::{Duration, SystemTime};

use panoptes_runtime::trace::otel::trace::{Link, SpanContext, SpanKind, TraceContextExt, Tracer};
use panoptes_runtime::trace::otel::{Context, KeyValue};
use panoptes_runtime::trace::{self as rt_trace, KEPT_BECAUSE, attr};
use panoptes_schemas::{FrameHeaders, FrameStatus};

use crate::pipeline::work::{Output, Position, now_us};

/// The span type of the process's tracer.
pub type Span = <panoptes_runtime::trace::otel_sdk::trace::SdkTracer as Tracer>::Span;

/// A frame's trace state, carried from the consumer to the publisher. Empty (and free) when
/// tracing is off or the frame's `traceparent` cannot be read.
#[derive(Debug, Default)]
pub struct FrameTrace(Option<Box<FrameSpans>>);

#[derive(Debug)]
struct FrameSpans {
    /// The frame's creation context (ingest's PRODUCER span).
    parent: SpanContext,
    /// When the consumer handed it on.
    received: SystemTime,
    /// When decoding ended (or the frame was turned into a skip or dead letter).
    ready: Option<SystemTime>,
    /// The batch span that inferred it, when that one was recorded.
    batch: Option<SpanContext>,
}

impl FrameTrace {
    /// At the consumer: starts a frame's trace state when tracing is on and its
    /// `traceparent` reads.
    pub fn received(traceparent: Option<&str>) -> Self {
        if rt_trace::tracer().is_none() {
            return Self::default();
        }
        let Some(parent) = traceparent.and_then(rt_trace::remote_context) else {
            return Self::default();
        };
        Self(Some(Box::new(FrameSpans {
            parent,
            received: SystemTime::now(),
            ready: None,
            batch: None,
        })))
    }

    /// Decoding (or the decision not to decode) ended.
    pub fn ready(&mut self) {
        if let Some(s) = &mut self.0 {
            s.ready = Some(SystemTime::now());
        }
    }

    /// The log span of the frame (its trace and creation-span ids, see
    /// [`panoptes_runtime::trace::logs`]) to enter while handling it; none when untraced.
    pub fn log_span(&self) -> tracing::Span {
        self.0
            .as_ref()
            .map_or_else(tracing::Span::none, |s| rt_trace::logs::span(&s.parent))
    }

    /// The frame's creation context, when traced.
    pub fn parent(&self) -> Option<&SpanContext> {
        self.0.as_ref().map(|s| &s.parent)
    }

    fn set_batch(&mut self, batch: SpanContext) {
        if let Some(s) = &mut self.0 {
            s.batch = Some(batch);
        }
    }
}

/// Why a frame's spans are kept against the sampling decision, if one of the always-keep
/// rules applies: its status (dead letter, skip) or its end-to-end latency.
fn kept_because(output: &Output, end_to_end: Duration) -> Option<&'static str> {
    let settings = rt_trace::settings()?;
    if settings.keep_anomalies {
        match output {
            Output::DeadLetter(_) => return Some("dead_letter"),
            Output::Record(r) if r.status != FrameStatus::Ok => return Some(r.status.as_str()),
            Output::Record(_) => {}
        }
    }
    settings
        .slow_threshold
        .filter(|t| end_to_end > *t)
        .map(|_| "slow")
}

/// A batch's `process` span (see the module doc); nothing when no frame of the batch is
/// kept.
pub struct BatchSpan {
    span: Option<Span>,
}

impl BatchSpan {
    /// Opens the batch's span at `closed` when tracing is on and one of `frames` is sampled,
    /// or (with a slow threshold) already older than the threshold.
    pub fn open<'a>(
        frames_topic: &str,
        frames: impl Iterator<Item = (&'a FrameTrace, &'a FrameHeaders)> + Clone,
        closed: SystemTime,
    ) -> Self {
        let Some(tracer) = rt_trace::tracer() else {
            return Self { span: None };
        };
        let sampled = frames
            .clone()
            .any(|(t, _)| t.parent().is_some_and(SpanContext::is_sampled));
        let now = now_us();
        let slow = rt_trace::settings()
            .and_then(|s| s.slow_threshold)
            .is_some_and(|threshold| {
                frames.clone().any(|(_, h)| {
                    now.saturating_sub(h.capture_time_us) > threshold.as_micros() as i64
                })
            });
        if !sampled && !slow {
            return Self { span: None };
        }
        let links: Vec<Link> = frames
            .clone()
            .filter_map(|(t, h)| {
                t.parent().map(|p| {
                    Link::new(
                        p.clone(),
                        vec![
                            KeyValue::new(attr::CAMERA, h.camera_id.clone()),
                            KeyValue::new(attr::SEQ, h.seq as i64),
                        ],
                        0,
                    )
                })
            })
            .collect();
        let count = frames.count() as i64;
        let reason = if slow { "slow" } else { "linked_frame_sampled" };
        let span = tracer
            .span_builder(format!("process {frames_topic}"))
            .with_kind(SpanKind::Consumer)
            .with_start_time(closed)
            .with_attributes(vec![
                KeyValue::new(attr::MESSAGING_SYSTEM, "kafka"),
                KeyValue::new(attr::MESSAGING_OPERATION_TYPE, "process"),
                KeyValue::new(attr::MESSAGING_OPERATION_NAME, "process"),
                KeyValue::new(attr::MESSAGING_DESTINATION, frames_topic.to_owned()),
                KeyValue::new(attr::MESSAGING_BATCH_COUNT, count),
                KeyValue::new(KEPT_BECAUSE, reason),
            ])
            .with_links(links)
            .start_with_context(tracer, &Context::new());
        Self { span: Some(span) }
    }

    /// Records the `inference` child span (`started`..now) with its facts.
    pub fn inference(&self, started: SystemTime, batch: usize, device: &str, model: (&str, &str)) {
        let (Some(tracer), Some(span)) = (rt_trace::tracer(), &self.span) else {
            return;
        };
        use panoptes_runtime::trace::otel::trace::Span as _;
        let cx = Context::new().with_remote_span_context(span.span_context().clone());
        let mut child = tracer
            .span_builder("inference")
            .with_kind(SpanKind::Internal)
            .with_start_time(started)
            .with_attributes(vec![
                KeyValue::new(attr::BATCH_SIZE, batch as i64),
                KeyValue::new(attr::DEVICE, device.to_owned()),
                KeyValue::new(attr::MODEL_NAME, model.0.to_owned()),
                KeyValue::new(attr::MODEL_VERSION, model.1.to_owned()),
            ])
            .start_with_context(tracer, &cx);
        child.end();
    }

    /// The log span of the batch (its own trace) to enter while inferring it; none when the
    /// batch span is not recorded.
    pub fn log_span(&self) -> tracing::Span {
        use panoptes_runtime::trace::otel::trace::Span as _;
        self.span.as_ref().map_or_else(tracing::Span::none, |s| {
            rt_trace::logs::span(s.span_context())
        })
    }

    /// Notes the batch span in a frame's trace (for the links of its later spans).
    pub fn mark(&self, frame: &mut FrameTrace) {
        use panoptes_runtime::trace::otel::trace::Span as _;
        if let Some(span) = &self.span {
            frame.set_batch(span.span_context().clone());
        }
    }

    /// Ends the batch span.
    pub fn end(self) {
        use panoptes_runtime::trace::otel::trace::Span as _;
        if let Some(mut span) = self.span {
            span.end();
        }
    }
}

/// The `send` span of one record, open while it is handed to the producer.
pub struct SendSpan(Option<Span>);

impl SendSpan {
    /// No span.
    pub fn none() -> Self {
        Self(None)
    }

    /// The record's `traceparent` (the span's context), when there is a span.
    pub fn traceparent(&self) -> Option<String> {
        use panoptes_runtime::trace::otel::trace::Span as _;
        self.0
            .as_ref()
            .map(|s| rt_trace::traceparent(s.span_context()))
    }

    /// The log span to enter while handing the record over: the `send` span's ids when it
    /// was made, else the frame's ([`FrameTrace::log_span`]).
    pub fn log_span(&self, frame: &FrameTrace) -> tracing::Span {
        use panoptes_runtime::trace::otel::trace::Span as _;
        match &self.0 {
            Some(s) => rt_trace::logs::span(s.span_context()),
            None => frame.log_span(),
        }
    }

    /// Ends the span; `error` marks a failed hand-over.
    pub fn end(self, error: Option<&str>) {
        use panoptes_runtime::trace::otel::trace::{Span as _, Status};
        if let Some(mut span) = self.0 {
            if let Some(e) = error {
                span.set_status(Status::error(e.to_owned()));
            }
            span.end();
        }
    }
}

/// At the publisher, before encoding: when the frame is kept, makes its `receive` span
/// (ended at its real times) and opens the record's `send` span to `topic`, whose
/// `traceparent` it writes into a detection record. `frames_topic` names the receive span.
pub fn publish_spans(
    trace: &FrameTrace,
    pos: Position,
    output: &mut Output,
    frames_topic: &str,
    topic: &str,
) -> SendSpan {
    let (Some(tracer), Some(spans)) = (rt_trace::tracer(), trace.0.as_deref()) else {
        return SendSpan::none();
    };
    let (camera, seq, capture_us, status) = match &*output {
        Output::Record(r) => (
            Some(r.camera_id.clone()),
            Some(r.seq),
            Some(r.capture_time_us),
            r.status.as_str(),
        ),
        Output::DeadLetter(d) => (d.camera_id.clone(), d.seq, None, "dead_letter"),
    };
    let end_to_end = capture_us.map_or(Duration::ZERO, |c| {
        Duration::from_micros(now_us().saturating_sub(c).max(0) as u64)
    });
    let reason = kept_because(output, end_to_end);
    if reason.is_none() && !spans.parent.is_sampled() {
        return SendSpan::none();
    }
    let mut common = vec![KeyValue::new(attr::MESSAGING_SYSTEM, "kafka")];
    if let Some(c) = &camera {
        common.push(KeyValue::new(attr::CAMERA, c.clone()));
    }
    if let Some(s) = seq {
        common.push(KeyValue::new(attr::SEQ, s as i64));
    }
    if let Some(r) = reason {
        common.push(KeyValue::new(KEPT_BECAUSE, r));
    }
    let links: Vec<Link> = spans
        .batch
        .iter()
        .cloned()
        .map(Link::with_context)
        .collect();
    let mut receive_attrs = common.clone();
    receive_attrs.extend([
        KeyValue::new(attr::MESSAGING_OPERATION_TYPE, "receive"),
        KeyValue::new(attr::MESSAGING_OPERATION_NAME, "poll"),
        KeyValue::new(attr::MESSAGING_DESTINATION, frames_topic.to_owned()),
        KeyValue::new(attr::MESSAGING_PARTITION, pos.partition.to_string()),
        KeyValue::new(attr::MESSAGING_OFFSET, pos.offset),
    ]);
    if let Some(c) = &camera {
        receive_attrs.push(KeyValue::new(attr::MESSAGING_KEY, c.clone()));
    }
    let parent = Context::new().with_remote_span_context(spans.parent.clone());
    let receive = tracer
        .span_builder(format!("receive {frames_topic}"))
        .with_kind(SpanKind::Consumer)
        .with_start_time(spans.received)
        .with_attributes(receive_attrs)
        .with_links(links.clone())
        .start_with_context(tracer, &parent);
    let receive_cx = Context::new().with_span(receive);
    receive_cx
        .span()
        .end_with_timestamp(spans.ready.unwrap_or_else(SystemTime::now));
    let mut send_attrs = common;
    send_attrs.extend([
        KeyValue::new(attr::MESSAGING_OPERATION_TYPE, "send"),
        KeyValue::new(attr::MESSAGING_OPERATION_NAME, "send"),
        KeyValue::new(attr::MESSAGING_DESTINATION, topic.to_owned()),
        KeyValue::new(attr::STATUS, status),
        KeyValue::new(attr::END_TO_END_MS, end_to_end.as_secs_f64() * 1000.0),
    ]);
    if let Some(c) = camera {
        send_attrs.push(KeyValue::new(attr::MESSAGING_KEY, c));
    }
    let send = tracer
        .span_builder(format!("send {topic}"))
        .with_kind(SpanKind::Producer)
        .with_attributes(send_attrs)
        .with_links(links)
        .start_with_context(tracer, &receive_cx);
    let send = SendSpan(Some(send));
    if let (Output::Record(r), Some(tp)) = (output, send.traceparent()) {
        r.traceparent = Some(tp);
    }
    send
}

/// (trace id, span id) of a frame's creation context for log lines, empty when unknown.
pub fn log_ids(headers: Option<&FrameHeaders>) -> (String, String) {
    headers
        .and_then(|h| rt_trace::remote_context(&h.traceparent))
        .map(|cx| (cx.trace_id().to_string(), cx.span_id().to_string()))
        .unwrap_or_default()
}
