//! The sampler of every Panoptes process: parent-based with a trace-id ratio at the root,
//! plus an override for spans the code decided to keep after the fact.
//!
//! Head sampling alone cannot keep "every frame that was dead-lettered, skipped or slow":
//! those facts are known only once the frame is done. The worker therefore builds a frame's
//! spans when its outcome is known (with their real start and end times) and, when an
//! always-keep rule applies, marks the span with the [`KEPT_BECAUSE`] attribute; this
//! sampler records such a span whatever its parent's flag says. Everything else follows the
//! parent's sampled flag, and a root (a frame at ingest) is sampled by its trace id against
//! the ratio, so every process agrees on the same frames.

use opentelemetry::trace::{Link, SamplingDecision, SamplingResult, SpanKind, TraceId};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::{Sampler, ShouldSample};

/// Attribute naming why a span was kept against the sampling decision (`dead_letter`,
/// `skipped_stale`, `slow`, ...). Its presence forces recording.
pub const KEPT_BECAUSE: &str = "panoptes.trace.kept_because";

/// Parent-based ratio sampling with the [`KEPT_BECAUSE`] override.
#[derive(Debug, Clone)]
pub struct KeepSampler {
    inner: Sampler,
}

impl KeepSampler {
    /// Roots sampled with probability `ratio` (by trace id); children follow their parent.
    pub fn new(ratio: f64) -> Self {
        Self {
            inner: Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))),
        }
    }
}

impl ShouldSample for KeepSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        if attributes.iter().any(|kv| kv.key.as_str() == KEPT_BECAUSE) {
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: parent_context
                    .map(|cx| {
                        use opentelemetry::trace::TraceContextExt as _;
                        cx.span().span_context().trace_state().clone()
                    })
                    .unwrap_or_default(),
            };
        }
        self.inner
            .should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceState};

    use super::*;

    fn parent(sampled: bool) -> Context {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_bytes([7; 16]),
            SpanId::from_bytes([3; 8]),
            flags,
            true,
            TraceState::default(),
        ))
    }

    fn decide(s: &KeepSampler, cx: Option<&Context>, attrs: &[KeyValue], id: u128) -> bool {
        let r = s.should_sample(cx, TraceId::from(id), "x", &SpanKind::Consumer, attrs, &[]);
        r.decision == SamplingDecision::RecordAndSample
    }

    #[test]
    fn children_follow_the_parent_unless_kept() {
        let s = KeepSampler::new(0.0);
        assert!(decide(&s, Some(&parent(true)), &[], 1));
        assert!(!decide(&s, Some(&parent(false)), &[], 1));
        let kept = [KeyValue::new(KEPT_BECAUSE, "dead_letter")];
        assert!(decide(&s, Some(&parent(false)), &kept, 1));
        assert!(decide(&s, None, &kept, 1));
    }

    #[test]
    fn roots_follow_the_ratio() {
        let none = KeepSampler::new(0.0);
        let all = KeepSampler::new(1.0);
        let half = KeepSampler::new(0.5);
        let mut sampled = 0;
        for i in 0..2000u128 {
            // Spread ids over the whole range: the ratio sampler reads the low 64 bits.
            let id = i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835) | 1;
            assert!(!decide(&none, None, &[], id));
            assert!(decide(&all, None, &[], id));
            sampled += u32::from(decide(&half, None, &[], id));
        }
        assert!((800..1200).contains(&sampled), "{sampled} of 2000 at 0.5");
    }
}
