//! Logging set-up shared by all binaries.
//!
//! Logs go to stderr; `RUST_LOG` filters them (default `info`). `PANOPTES_LOG_FORMAT=json`
//! switches to one JSON object per line for log shippers. Text logs are coloured only when
//! stderr is a terminal, so piped logs carry no escape codes. Traces are separate: OTLP export
//! of spans is [`crate::trace`], installed by each node's `run` from its `[tracing]` section;
//! with tracing on, every line written while a traced frame, batch, record or grant is handled
//! carries its `trace_id`/`span_id` ([`crate::trace::logs`]: top-level keys of a JSON line,
//! the `panoptes.trace{…}` prefix of a text line).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::trace::logs::{IdsLayer, JsonWithIds};

/// Installs the global subscriber. Safe to call twice (the second call does nothing).
pub fn init(service: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("PANOPTES_LOG_FORMAT")
        .map(|v| v == "json")
        .unwrap_or(false);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    // The ids layer sits above the formatter: it fills the extension the JSON format reads.
    let result = if json {
        builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .map_event_format(JsonWithIds)
            .finish()
            .with(IdsLayer)
            .try_init()
    } else {
        builder
            .with_target(false)
            .finish()
            .with(IdsLayer)
            .try_init()
    };
    if result.is_ok() {
        tracing::debug!(service, "telemetry initialised");
    }
}
