//! The `[tracing]` section every node has: where spans go (OTLP over gRPC or HTTP), how many
//! are kept, and the bounds of the export queue.
//!
//! Export is off unless `endpoint` is set: a node without a collector pays nothing (no span
//! is built). Sampling is decided at the root (the ingest node, per frame) by a trace-id
//! ratio and followed downstream through the `traceparent` flags (parent-based); the
//! always-keep rules (dead-lettered, skipped, slow frames) override it where the outcome is
//! known, see [`crate::trace`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigInvalid;

/// OTLP transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OtlpProtocol {
    /// OTLP/gRPC (a collector's port 4317).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (a collector's port 4318, path `/v1/traces`).
    HttpProtobuf,
}

/// `[tracing]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// OTLP endpoint, e.g. `http://otel-collector:4317` (gRPC) or `http://otel-collector:4318`
    /// (HTTP; `/v1/traces` is appended when the URL has no path). Unset: no export, no spans.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Transport of `endpoint`.
    pub protocol: OtlpProtocol,
    /// Share of new traces (frames, at the ingest node) that are sampled, `0.0..=1.0`.
    /// Downstream nodes follow the frame's sampled flag.
    pub sample_ratio: f64,
    /// Keep the spans of frames that were dead-lettered or skipped (stale, superseded owner)
    /// whatever the sampling said.
    pub keep_anomalies: bool,
    /// Keep the spans of frames whose end-to-end latency (capture to detection) exceeds
    /// this, whatever the sampling said. `0s` turns the rule off.
    #[serde(with = "humantime_serde")]
    pub slow_threshold: Duration,
    /// Finished spans waiting for export, at most; more are dropped and counted
    /// (`panoptes_<component>_trace_spans_dropped_total`), never waited for.
    pub queue_size: usize,
    /// Spans per export request, at most.
    pub max_export_batch: usize,
    /// How long a span may wait in the queue before its batch is sent.
    #[serde(with = "humantime_serde")]
    pub export_interval: Duration,
    /// Deadline of one export request.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            protocol: OtlpProtocol::Grpc,
            sample_ratio: 0.01,
            keep_anomalies: true,
            slow_threshold: Duration::from_secs(2),
            queue_size: 4096,
            max_export_batch: 512,
            export_interval: Duration::from_secs(1),
            export_timeout: Duration::from_secs(5),
        }
    }
}

impl TracingConfig {
    /// Whether spans are exported at all.
    pub fn enabled(&self) -> bool {
        self.endpoint.is_some()
    }

    /// Checks the values fit together.
    pub fn validate(&self) -> Result<(), ConfigInvalid> {
        let bad = |m: String| Err(ConfigInvalid(format!("tracing: {m}")));
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return bad(format!(
                "sample_ratio = {} must be within 0.0..=1.0",
                self.sample_ratio
            ));
        }
        if self.queue_size == 0 || self.max_export_batch == 0 {
            return bad("queue_size and max_export_batch must be at least 1".into());
        }
        if self.max_export_batch > self.queue_size {
            return bad(format!(
                "max_export_batch = {} exceeds queue_size = {}",
                self.max_export_batch, self.queue_size
            ));
        }
        if self.export_interval.is_zero() || self.export_timeout.is_zero() {
            return bad("export_interval and export_timeout must be positive".into());
        }
        if let Some(endpoint) = &self.endpoint {
            let url = url::Url::parse(endpoint)
                .map_err(|e| ConfigInvalid(format!("tracing: endpoint {endpoint:?}: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return bad(format!("endpoint {endpoint:?} must be an http(s) URL"));
            }
            if url.password().is_some() || !url.username().is_empty() {
                return bad("endpoint must not carry credentials".into());
            }
        }
        Ok(())
    }

    /// The URL the exporter is given: HTTP gets `/v1/traces` when the endpoint has no path.
    pub fn export_url(&self) -> Option<String> {
        let endpoint = self.endpoint.as_ref()?;
        Some(match self.protocol {
            OtlpProtocol::Grpc => endpoint.clone(),
            OtlpProtocol::HttpProtobuf => match url::Url::parse(endpoint) {
                Ok(u) if u.path() == "/" || u.path().is_empty() => {
                    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
                }
                _ => endpoint.clone(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_export_nothing_and_validate() {
        let c = TracingConfig::default();
        assert!(!c.enabled());
        assert!(c.validate().is_ok());
        assert_eq!(c.export_url(), None);
    }

    #[test]
    fn http_endpoints_get_the_traces_path() {
        let mut c = TracingConfig {
            endpoint: Some("http://collector:4318".into()),
            protocol: OtlpProtocol::HttpProtobuf,
            ..TracingConfig::default()
        };
        assert_eq!(
            c.export_url().as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        c.endpoint = Some("http://collector:4318/custom/path".into());
        assert_eq!(
            c.export_url().as_deref(),
            Some("http://collector:4318/custom/path")
        );
        c.protocol = OtlpProtocol::Grpc;
        c.endpoint = Some("http://collector:4317".into());
        assert_eq!(c.export_url().as_deref(), Some("http://collector:4317"));
    }

    #[test]
    fn bad_values_are_refused() {
        let bad = [
            TracingConfig {
                sample_ratio: 1.5,
                ..TracingConfig::default()
            },
            TracingConfig {
                queue_size: 10,
                max_export_batch: 11,
                ..TracingConfig::default()
            },
            TracingConfig {
                endpoint: Some("collector:4317".into()),
                ..TracingConfig::default()
            },
            TracingConfig {
                endpoint: Some("http://user:pw@collector:4317".into()),
                ..TracingConfig::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
