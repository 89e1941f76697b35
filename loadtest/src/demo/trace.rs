//! `panoptes-loadtest demo --trace`: the demo's ingest node and workers export OpenTelemetry
//! traces over OTLP/HTTP to an in-process receiver (`panoptes_testkit::otlp`, the one the
//! trace tests use), and the demo prints the first frame trace that crossed the whole path
//! (ingest `send` → worker `receive`/`process`/`inference` → detection `send`) as a tree.
//!
//! The nodes get the receiver through their `PANOPTES_TRACING__*` environment overrides, the
//! way an operator points them at a collector. A higher sampling ratio than the default 1 %
//! makes a trace appear within seconds at the demo's 20 frames/s.

use anyhow::Result;
use panoptes_testkit::otlp::{OtlpReceiver, ReceivedSpan, print_trace};

use crate::stack::Stack;

/// Share of frames traced in the demo.
const DEMO_SAMPLE_RATIO: &str = "0.05";

/// The demo's receiver and whether its trace was printed.
pub struct DemoTrace {
    receiver: OtlpReceiver,
    printed: bool,
}

impl DemoTrace {
    /// Starts the receiver.
    pub fn start() -> Result<Self> {
        Ok(Self {
            receiver: OtlpReceiver::start()?,
            printed: false,
        })
    }

    /// Points the nodes `ids` of `stack` (started after this) at the receiver.
    pub fn export_from(&self, stack: &mut Stack, ids: &[String]) {
        for id in ids {
            stack.node_env.entry(id.clone()).or_default().extend([
                ("PANOPTES_TRACING__ENDPOINT", self.receiver.http_url.clone()),
                ("PANOPTES_TRACING__PROTOCOL", "http_protobuf".to_string()),
                (
                    "PANOPTES_TRACING__SAMPLE_RATIO",
                    DEMO_SAMPLE_RATIO.to_string(),
                ),
            ]);
        }
    }

    /// Where the spans go, for the "where to look" lines.
    pub fn url(&self) -> &str {
        &self.receiver.http_url
    }

    /// The first complete frame trace received, rendered, once; `None` before and after.
    pub fn take_complete(&mut self) -> Option<String> {
        if self.printed {
            return None;
        }
        let trace = complete_trace(&self.receiver.spans())?;
        self.printed = true;
        Some(print_trace(&self.receiver.trace(&trace)))
    }

    /// Whether a trace was printed.
    pub fn printed(&self) -> bool {
        self.printed
    }
}

/// A trace id with the ingest node's frame span and a worker's detection `send` span.
fn complete_trace(spans: &[ReceivedSpan]) -> Option<String> {
    spans
        .iter()
        .filter(|s| s.service == "panoptes-worker" && s.kind == "PRODUCER")
        .map(|s| &s.trace_id)
        .find(|t| {
            spans.iter().any(|s| {
                &s.trace_id == *t && s.service == "panoptes-ingest" && s.kind == "PRODUCER"
            })
        })
        .cloned()
}
