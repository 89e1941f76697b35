//! Detection output records, published by workers on [`crate::topics::DETECTIONS`] (and on
//! [`crate::topics::DETECTIONS_SHADOW`] for shadow models).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::EnvelopeError;
use crate::frame::check_dimension;
use crate::ids::{CAMERA_ID_PATTERN, TRACEPARENT_PATTERN, parse_traceparent, validate_camera_id};
use crate::{SCHEMA_VERSION, check_name, check_position, check_version};

/// Largest accepted difference between `bbox_norm` and `bbox` divided by the frame size.
///
/// Both are computed from the same `f32` values, so they agree to a few ULPs; the slack only
/// absorbs a producer that normalises before clamping or rounds pixels.
pub const BBOX_NORM_TOLERANCE: f32 = 1e-3;

/// Which model produced a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    /// Model name as registered with the coordinator, e.g. `"yolo-people"`.
    pub name: String,
    /// Model version as registered, e.g. `"2024-06-01"` or `"3"`.
    pub version: String,
}

/// What the worker did with the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FrameStatus {
    /// Inference ran; `detections` holds its result (possibly empty).
    Ok,
    /// The frame was older than its deadline when dequeued and was not inferred.
    SkippedStale,
    /// The worker was over capacity and dropped the frame without inferring it.
    ShedOverload,
    /// The frame came from a superseded ingest owner (a zombie): its `owner_epoch` is lower
    /// than one already seen for its camera. Not inferred.
    SupersededOwner,
}

impl FrameStatus {
    /// The wire spelling, e.g. `"skipped_stale"` (handy as a metrics label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::SkippedStale => "skipped_stale",
            Self::ShedOverload => "shed_overload",
            Self::SupersededOwner => "superseded_owner",
        }
    }
}

/// One detected object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Detection {
    /// Class index in the model's output.
    pub class_id: u32,
    /// Human-readable class name from the model's label list.
    pub label: String,
    /// Confidence in `[0, 1]`.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub score: f32,
    /// Box corners `[x1, y1, x2, y2]` in pixels of the payload frame, clamped to the frame.
    #[schemars(inner(range(min = 0.0)))]
    pub bbox: [f32; 4],
    /// `bbox` divided by frame width/height, each in `[0, 1]`; lets consumers map boxes onto
    /// the source stream without knowing the analytic resolution.
    #[schemars(inner(range(min = 0.0, max = 1.0)))]
    pub bbox_norm: [f32; 4],
}

impl Detection {
    /// Builds a detection from a pixel box, clamping it to the frame and deriving `bbox_norm`.
    ///
    /// Models can predict boxes that poke out of the image; clamping here keeps every worker
    /// consistent with [`DetectionRecord::validate`].
    pub fn from_pixels(
        class_id: u32,
        label: impl Into<String>,
        score: f32,
        bbox: [f32; 4],
        frame_width: u32,
        frame_height: u32,
    ) -> Self {
        let (w, h) = (frame_width as f32, frame_height as f32);
        let x1 = bbox[0].clamp(0.0, w);
        let y1 = bbox[1].clamp(0.0, h);
        let x2 = bbox[2].clamp(x1, w);
        let y2 = bbox[3].clamp(y1, h);
        let bbox = [x1, y1, x2, y2];
        Self {
            class_id,
            label: label.into(),
            score: score.clamp(0.0, 1.0),
            bbox,
            bbox_norm: [x1 / w, y1 / h, x2 / w, y2 / h],
        }
    }

    /// Checks score, box geometry and the normalised box against a frame size.
    fn validate(
        &self,
        path: &str,
        frame_width: u32,
        frame_height: u32,
    ) -> Result<(), EnvelopeError> {
        let field = |name: &str| format!("{path}.{name}");
        // `contains` is false for NaN, which is what makes this reject it.
        if !(0.0..=1.0).contains(&self.score) {
            return Err(EnvelopeError::invalid_field(
                field("score"),
                format!("{} is outside [0, 1]", self.score),
            ));
        }
        let (w, h) = (frame_width as f32, frame_height as f32);
        let [x1, y1, x2, y2] = self.bbox;
        let bbox_ok = (0.0..=w).contains(&x1)
            && (0.0..=h).contains(&y1)
            && (x1..=w).contains(&x2)
            && (y1..=h).contains(&y2);
        if !bbox_ok {
            return Err(EnvelopeError::invalid_field(
                field("bbox"),
                format!(
                    "{:?} must satisfy 0 <= x1 <= x2 <= {frame_width} and 0 <= y1 <= y2 <= {frame_height}",
                    self.bbox
                ),
            ));
        }
        let expected = [x1 / w, y1 / h, x2 / w, y2 / h];
        for (i, (&got, want)) in self.bbox_norm.iter().zip(expected).enumerate() {
            if !(0.0..=1.0).contains(&got) {
                return Err(EnvelopeError::invalid_field(
                    format!("{path}.bbox_norm[{i}]"),
                    format!("{got} is outside [0, 1]"),
                ));
            }
            if (got - want).abs() > BBOX_NORM_TOLERANCE {
                return Err(EnvelopeError::invalid_field(
                    format!("{path}.bbox_norm[{i}]"),
                    format!("{got} does not match bbox / frame size = {want}"),
                ));
            }
        }
        Ok(())
    }
}

/// Time spent in each worker stage for one frame, in milliseconds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StageLatencies {
    /// From the record's broker timestamp to the worker dequeuing it.
    #[schemars(range(min = 0.0))]
    pub queue_ms: f32,
    /// Decoding the payload into a tensor.
    #[schemars(range(min = 0.0))]
    pub decode_ms: f32,
    /// Waiting for the batch to fill or its timer to fire.
    #[schemars(range(min = 0.0))]
    pub batch_wait_ms: f32,
    /// The model forward pass, for the whole batch the frame was in.
    #[schemars(range(min = 0.0))]
    pub inference_ms: f32,
    /// Non-maximum suppression and box scaling.
    #[schemars(range(min = 0.0))]
    pub postprocess_ms: f32,
    /// From `capture_time_us` to publishing the record.
    #[schemars(range(min = 0.0))]
    pub end_to_end_ms: f32,
}

impl StageLatencies {
    fn validate(&self) -> Result<(), EnvelopeError> {
        let stages = [
            ("queue_ms", self.queue_ms),
            ("decode_ms", self.decode_ms),
            ("batch_wait_ms", self.batch_wait_ms),
            ("inference_ms", self.inference_ms),
            ("postprocess_ms", self.postprocess_ms),
            ("end_to_end_ms", self.end_to_end_ms),
        ];
        for (name, value) in stages {
            // Clock steps can make a difference of timestamps negative; the worker clamps to
            // zero, so a negative or non-finite value here is a bug worth surfacing.
            if !(value.is_finite() && value >= 0.0) {
                return Err(EnvelopeError::invalid_field(
                    format!("latency.{name}"),
                    format!("{value} is not a finite non-negative number"),
                ));
            }
        }
        Ok(())
    }
}

/// One detection output record on `panoptes.detections` (JSON, key = camera id), produced by
/// workers: exactly one per frame record consumed, whatever its status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetectionRecord {
    /// Layout version; always `SCHEMA_VERSION` (currently 1) when written by this build.
    #[schemars(extend("const" = SCHEMA_VERSION))]
    pub schema_version: u32,
    /// Camera of the frame; equal to the record key.
    #[schemars(pattern(CAMERA_ID_PATTERN))]
    pub camera_id: String,
    /// `seq` of the frame (from its envelope).
    pub seq: u64,
    /// `capture_time_us` of the frame (from its envelope).
    pub capture_time_us: i64,
    /// Width of the frame that was inferred (the payload, not the source stream), in pixels.
    #[schemars(range(min = 1, max = crate::MAX_DIMENSION))]
    pub frame_width: u32,
    /// Height of the frame that was inferred, in pixels.
    #[schemars(range(min = 1, max = crate::MAX_DIMENSION))]
    pub frame_height: u32,
    /// Model that produced the detections.
    pub model: ModelRef,
    /// Whether inference ran; when it did not, `detections` is empty.
    pub status: FrameStatus,
    /// Detected objects, empty unless `status` is `ok`.
    pub detections: Vec<Detection>,
    /// Per-stage timings of this frame.
    pub latency: StageLatencies,
    /// Assignment epoch of the source partition when processed. Readers drop records whose
    /// epoch was superseded: they come from a worker that lost the partition (a zombie).
    pub epoch: u64,
    /// Worker node that processed the frame.
    pub worker_id: String,
    /// Partition of the frame record on `panoptes.frames`.
    #[schemars(range(min = 0))]
    pub partition: i32,
    /// Offset of the frame record in that partition.
    #[schemars(range(min = 0))]
    pub offset: i64,
    /// Unix epoch microseconds when the worker published this record, on the cluster clock
    /// (like `capture_time_us`).
    pub published_time_us: i64,
    /// W3C trace context of the worker's span, child of the frame's trace, if traced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(TRACEPARENT_PATTERN))]
    pub traceparent: Option<String>,
}

impl DetectionRecord {
    /// Checks the rules the type system cannot: version, camera id, frame size, names,
    /// status/detections consistency, every box inside the frame with `x1 <= x2`, `y1 <= y2`,
    /// `bbox_norm` in `[0, 1]` and consistent with `bbox`, scores in `[0, 1]`, latencies
    /// finite and non-negative, partition/offset non-negative, traceparent well-formed.
    pub fn validate(&self) -> Result<(), EnvelopeError> {
        check_version(self.schema_version)?;
        validate_camera_id(&self.camera_id)?;
        check_dimension("frame_width", self.frame_width)?;
        check_dimension("frame_height", self.frame_height)?;
        check_name("model.name", &self.model.name)?;
        check_name("model.version", &self.model.version)?;
        if self.status != FrameStatus::Ok && !self.detections.is_empty() {
            return Err(EnvelopeError::invalid_field(
                "detections",
                format!(
                    "status {:?} must carry no detections, found {}",
                    self.status.as_str(),
                    self.detections.len()
                ),
            ));
        }
        for (i, detection) in self.detections.iter().enumerate() {
            detection.validate(
                &format!("detections[{i}]"),
                self.frame_width,
                self.frame_height,
            )?;
        }
        self.latency.validate()?;
        check_name("worker_id", &self.worker_id)?;
        check_position(self.partition, self.offset)?;
        if let Some(traceparent) = &self.traceparent {
            parse_traceparent(traceparent)?;
        }
        Ok(())
    }

    crate::json_codec!("a record");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_pixels_clamps_and_normalises() {
        let d = Detection::from_pixels(0, "person", 1.5, [-10.0, 20.0, 700.0, 10.0], 640, 360);
        assert_eq!(d.bbox, [0.0, 20.0, 640.0, 20.0]);
        assert_eq!(d.score, 1.0);
        assert_eq!(d.bbox_norm[2], 1.0);
        assert!(d.validate("d", 640, 360).is_ok());
    }

    #[test]
    fn detection_errors_name_the_field() {
        let good = Detection::from_pixels(1, "car", 0.5, [10.0, 10.0, 20.0, 20.0], 100, 100);
        let mut nan = good.clone();
        nan.score = f32::NAN;
        assert_eq!(
            nan.validate("detections[0]", 100, 100).unwrap_err().field(),
            Some("detections[0].score")
        );
        let mut swapped = good.clone();
        swapped.bbox = [20.0, 10.0, 10.0, 20.0];
        assert_eq!(
            swapped.validate("d", 100, 100).unwrap_err().field(),
            Some("d.bbox")
        );
        let mut off = good;
        off.bbox_norm[3] = 0.5;
        assert_eq!(
            off.validate("d", 100, 100).unwrap_err().field(),
            Some("d.bbox_norm[3]")
        );
    }

    #[test]
    fn negative_latency_rejected() {
        let latency = StageLatencies {
            decode_ms: -1.0,
            ..StageLatencies::default()
        };
        assert_eq!(
            latency.validate().unwrap_err().field(),
            Some("latency.decode_ms")
        );
    }
}
