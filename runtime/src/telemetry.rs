//! Logging set-up shared by all binaries.
//!
//! Logs go to stderr; `RUST_LOG` filters them (default `info`). `PANOPTES_LOG_FORMAT=json`
//! switches to one JSON object per line for log shippers. Text logs are coloured only when
//! stderr is a terminal, so piped logs carry no escape codes. Traces are separate: OTLP export
//! of spans is [`crate::trace`], installed by each node's `run` from its `[tracing]` section;
//! log lines about one frame name its `trace_id`/`span_id` as fields (docs/tracing.md).

use tracing_subscriber::EnvFilter;

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
    let result = if json {
        builder.json().with_current_span(false).try_init()
    } else {
        builder.with_target(false).try_init()
    };
    if result.is_ok() {
        tracing::debug!(service, "telemetry initialised");
    }
}
