//! The coordinator's spans: one `grant <kind>` or `handover <kind>` span (INTERNAL) per
//! placement action written, with the item, its owner(s), the epoch and the planner's reason
//! ([`panoptes_runtime::trace`] has the conventions). Always kept: actions are rare and each
//! explains why a camera or partition moved. Nothing is built with tracing off. The returned
//! log span (its ids, [`panoptes_runtime::trace::logs`]) is for the caller's log line about
//! the action.

use std::time::SystemTime;

use panoptes_coordinator_client::MemberKind;
use panoptes_runtime::trace::otel::KeyValue;
use panoptes_runtime::trace::otel::trace::{Span as _, SpanKind, Tracer};
use panoptes_runtime::trace::{self as rt_trace, KEPT_BECAUSE};

/// Records an action that started at `started` and is written now; returns the log span
/// of the action's span (none with tracing off), to enter around the lines logged about it.
pub fn action(
    what: &str,
    kind: MemberKind,
    item: &str,
    attrs: &[(&'static str, String)],
    started: SystemTime,
) -> tracing::Span {
    let Some(tracer) = rt_trace::tracer() else {
        return tracing::Span::none();
    };
    let mut kvs = vec![
        KeyValue::new("panoptes.member.kind", kind.as_str()),
        KeyValue::new("panoptes.item", item.to_owned()),
        KeyValue::new(KEPT_BECAUSE, "control_plane"),
    ];
    kvs.extend(attrs.iter().map(|(k, v)| KeyValue::new(*k, v.clone())));
    let mut span = tracer
        .span_builder(format!("{what} {}", kind.as_str()))
        .with_kind(SpanKind::Internal)
        .with_start_time(started)
        .with_attributes(kvs)
        .start(tracer);
    let log = rt_trace::logs::span(span.span_context());
    span.end();
    log
}
