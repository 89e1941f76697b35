//! A frame's trace at the ingest node: one PRODUCER span per frame, the root of the frame's
//! trace, whose context is the frame's `traceparent` header ([`panoptes_runtime::trace`]
//! has the conventions).
//!
//! `send <frames topic>` (PRODUCER) starts when the frame's encoded access unit reached the
//! decoder (the first moment the node sees the frame: its capture, as far as the node can
//! tell) and ends at the broker's acknowledgement, with partition and offset; its children
//! `decode` (decoder in → raw frame out) and `encode` (raw frame → rate, scale, JPEG out)
//! come from the pipeline's pad probes ([`StageClock`]), matched by the buffer's PTS. A frame
//! whose stages cannot be matched (a rate element that re-stamped it, a probe that missed)
//! gets the span alone, starting when it was published. Attributes: `messaging.*`, camera,
//! sequence number, payload size. A frame refused before Kafka (queue full) ends its span
//! with an error status.
//!
//! With tracing off nothing here runs: no probe is attached and no span is built.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::SystemTime;

use gstreamer as gst;
use gstreamer::prelude::*;
use panoptes_runtime::trace::otel::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer};
use panoptes_runtime::trace::otel::{Context, KeyValue};
use panoptes_runtime::trace::{self as rt_trace, attr};
use panoptes_schemas::FrameHeaders;

/// The span type of the process's tracer.
type Span = <panoptes_runtime::trace::otel_sdk::trace::SdkTracer as Tracer>::Span;

/// PTS-keyed stamps kept per probe point: enough for the frames between decoder and appsink.
const RING: usize = 64;

/// Where in the pipeline a stamp was taken.
#[derive(Debug, Clone, Copy)]
pub enum Point {
    /// Encoded access unit entering the decoder.
    Received = 0,
    /// Raw frame leaving the decoder.
    Decoded = 1,
    /// JPEG leaving the encoder (at the appsink).
    Encoded = 2,
}

/// One camera pipeline's stage stamps (see the module doc).
#[derive(Debug, Default)]
pub struct StageClock {
    rings: [Mutex<VecDeque<(u64, SystemTime)>>; 3],
}

fn clocks() -> &'static Mutex<HashMap<String, Weak<StageClock>>> {
    static CLOCKS: OnceLock<Mutex<HashMap<String, Weak<StageClock>>>> = OnceLock::new();
    CLOCKS.get_or_init(Mutex::default)
}

impl StageClock {
    /// With tracing on: probes `pads` (one per [`Point`], in order) of `camera`'s pipeline
    /// and registers the clock under the camera id (replacing an earlier pipeline's). The
    /// returned handle keeps it alive; `None` with tracing off.
    pub fn attach(camera: &str, pads: [&gst::Pad; 3]) -> Option<Arc<StageClock>> {
        rt_trace::tracer()?;
        let clock = Arc::new(StageClock::default());
        for (i, pad) in pads.into_iter().enumerate() {
            let weak = Arc::downgrade(&clock);
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
                if let (Some(clock), Some(buffer)) = (weak.upgrade(), info.buffer())
                    && let Some(pts) = buffer.pts()
                {
                    clock.stamp(i, pts.nseconds());
                }
                gst::PadProbeReturn::Ok
            });
        }
        clocks()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(camera.to_owned(), Arc::downgrade(&clock));
        Some(clock)
    }

    fn stamp(&self, point: usize, pts: u64) {
        let mut ring = self.rings[point].lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == RING {
            ring.pop_front();
        }
        ring.push_back((pts, SystemTime::now()));
    }

    fn when(&self, point: Point, pts: u64) -> Option<SystemTime> {
        let ring = self.rings[point as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        ring.iter().rev().find(|(p, _)| *p == pts).map(|(_, t)| *t)
    }

    /// (received, decoded, encoded) of `camera`'s frame with `pts`, when all three match.
    fn stages(camera: &str, pts: u64) -> Option<[SystemTime; 3]> {
        let clock = clocks()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(camera)?
            .upgrade()?;
        let r = clock.when(Point::Received, pts)?;
        let d = clock.when(Point::Decoded, pts)?;
        let e = clock.when(Point::Encoded, pts)?;
        (r <= d && d <= e).then_some([r, d, e])
    }
}

/// A frame's `send` span, from before its record is built to its acknowledgement.
pub struct FrameSpan(Span);

impl FrameSpan {
    /// Starts the span of the frame `headers` describes (`bytes` of payload, to `topic`);
    /// `None` with tracing off. The partition is set at the acknowledgement.
    pub fn start(topic: &str, headers: &FrameHeaders, bytes: usize) -> Option<Self> {
        let tracer = rt_trace::tracer()?;
        let stages = headers
            .pts_ns
            .and_then(|pts| StageClock::stages(&headers.camera_id, pts));
        let attrs = vec![
            KeyValue::new(attr::MESSAGING_SYSTEM, "kafka"),
            KeyValue::new(attr::MESSAGING_OPERATION_TYPE, "send"),
            KeyValue::new(attr::MESSAGING_OPERATION_NAME, "send"),
            KeyValue::new(attr::MESSAGING_DESTINATION, topic.to_owned()),
            KeyValue::new(attr::MESSAGING_KEY, headers.camera_id.clone()),
            KeyValue::new(attr::MESSAGING_BODY_SIZE, bytes as i64),
            KeyValue::new(attr::CAMERA, headers.camera_id.clone()),
            KeyValue::new(attr::SEQ, headers.seq as i64),
        ];
        let mut builder = tracer
            .span_builder(format!("send {topic}"))
            .with_kind(SpanKind::Producer)
            .with_attributes(attrs);
        if let Some([received, ..]) = stages {
            builder = builder.with_start_time(received);
        }
        let span = builder.start_with_context(tracer, &Context::new());
        if let Some([received, decoded, encoded]) = stages
            && span.span_context().is_sampled()
        {
            let cx = Context::new().with_remote_span_context(span.span_context().clone());
            for (name, from, to) in [("decode", received, decoded), ("encode", decoded, encoded)] {
                tracer
                    .span_builder(name)
                    .with_kind(SpanKind::Internal)
                    .with_start_time(from)
                    .start_with_context(tracer, &cx)
                    .end_with_timestamp(to);
            }
        }
        Some(Self(span))
    }

    /// The `traceparent` to write into the frame's headers.
    pub fn traceparent(&self) -> String {
        rt_trace::traceparent(self.0.span_context())
    }

    /// The log span (the frame's trace and send-span ids, see
    /// [`panoptes_runtime::trace::logs`]) to enter while handling the frame.
    pub fn log_span(&self) -> tracing::Span {
        rt_trace::logs::span(self.0.span_context())
    }

    /// (trace id, span id) for log lines.
    pub fn ids(&self) -> (String, String) {
        let cx = self.0.span_context();
        (cx.trace_id().to_string(), cx.span_id().to_string())
    }

    /// The broker acknowledged the frame at `partition`/`offset`.
    pub fn delivered(mut self, partition: i32, offset: i64) {
        self.0.set_attribute(KeyValue::new(
            attr::MESSAGING_PARTITION,
            partition.to_string(),
        ));
        self.0
            .set_attribute(KeyValue::new(attr::MESSAGING_OFFSET, offset));
        self.0.end();
    }

    /// The frame did not reach the broker.
    pub fn failed(mut self, why: &str) {
        self.0.set_status(Status::error(why.to_owned()));
        self.0.end();
    }
}
