//! Trace and span ids on every log line written while a traced item is handled.
//!
//! Contract:
//! - Code that handles one traced item (a frame, a batch, a detection record, a grant)
//!   enters [`span`] of the item's span context for the duration of that work; every log
//!   event emitted inside (on that thread) then carries the ids: as top-level `trace_id` and
//!   `span_id` keys of a JSON line (`PANOPTES_LOG_FORMAT=json`, [`JsonWithIds`]) and as the
//!   `panoptes.trace{trace_id=… span_id=…}` span prefix of a text line.
//! - With tracing off (no `[tracing] endpoint`) [`span`] is `Span::none()`: no span is
//!   created and entering it costs one branch, so a node without a collector pays nothing.
//! - The ids are those of the item's context: for a frame, its trace and the span that
//!   describes it at that stage (its creation context until the worker has made its own).
//!
//! Mechanism: [`span`] is a `tracing` span named [`SPAN_NAME`] with two fields; the
//! [`IdsLayer`] copies them into the span's extensions when it is created; [`JsonWithIds`]
//! wraps the JSON event format and splices the innermost ids into the object it writes. The
//! span is at ERROR level so that any filter letting an event through also keeps its span.

use std::fmt;

use opentelemetry::trace::SpanContext;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Name of the log span carrying the ids.
pub const SPAN_NAME: &str = "panoptes.trace";

/// The log span of `cx` (see the module doc); `Span::none()` with tracing off or an invalid
/// context.
pub fn span(cx: &SpanContext) -> tracing::Span {
    if super::tracer().is_none() || !cx.is_valid() {
        return tracing::Span::none();
    }
    ids_span(&cx.trace_id().to_string(), &cx.span_id().to_string())
}

/// The log span for these (hex) ids, whether tracing is on or not.
pub fn ids_span(trace_id: &str, span_id: &str) -> tracing::Span {
    tracing::error_span!("panoptes.trace", trace_id = trace_id, span_id = span_id)
}

/// The ids of one log span, kept in its extensions.
#[derive(Debug, Clone)]
struct LogIds {
    trace_id: String,
    span_id: String,
}

impl Visit for LogIds {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "trace_id" => self.trace_id = value.to_owned(),
            "span_id" => self.span_id = value.to_owned(),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// Copies the ids of each [`SPAN_NAME`] span into its extensions (see the module doc).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdsLayer;

impl<S> Layer<S> for IdsLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != SPAN_NAME {
            return;
        }
        let mut ids = LogIds {
            trace_id: String::new(),
            span_id: String::new(),
        };
        attrs.record(&mut ids);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(ids);
        }
    }
}

/// A JSON event format (the inner `F`) with the innermost log span's ids as top-level
/// `trace_id`/`span_id` keys.
#[derive(Debug, Clone)]
pub struct JsonWithIds<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for JsonWithIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let ids = ctx.event_scope().and_then(|scope| {
            scope
                .into_iter()
                .find_map(|span| span.extensions().get::<LogIds>().cloned())
        });
        let Some(ids) = ids else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            // Hex ids need no escaping.
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{}\",\"span_id\":\"{}\",{rest}",
                ids.trace_id, ids.span_id
            ),
            None => writer.write_str(&line),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_inside_the_span_carry_the_ids_at_top_level() {
        let buf = Buf::default();
        let w = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || w.clone())
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .map_event_format(JsonWithIds)
            .finish()
            .with(IdsLayer);
        tracing::subscriber::with_default(subscriber, || {
            let _g = ids_span("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331").entered();
            tracing::warn!(reason = "x", "inside");
            drop(_g);
            tracing::warn!("outside");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(lines[0]["span_id"], "b7ad6b7169203331");
        assert_eq!(lines[0]["fields"]["message"], "inside");
        assert!(lines[1].get("trace_id").is_none(), "{text}");
    }

    #[test]
    fn no_span_without_a_tracer() {
        let cx =
            crate::trace::remote_context("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
                .unwrap();
        assert!(span(&cx).is_none());
    }
}
