//! Detection accuracy against the synthetic scenes' exact ground truth.
//!
//! For a frame of a camera whose [`SceneSpec`] is known, the checker reads the frame index
//! from the barcode in the payload ([`frame_index_of_payload`]), recomputes the ground truth
//! boxes with [`ground_truth`] in source pixels, scales them to the payload size
//! ([`scaled_ground_truth`]) and matches the worker's detections greedily
//! ([`match_detections`]): detections in descending score order, each taking the unmatched
//! ground-truth box of the same class with the highest IoU, when that IoU is at least
//! [`MATCH_IOU`]. Matched detections are true positives, the rest false positives, unmatched
//! ground-truth boxes false negatives.
//!
//! Decoding is the expensive part, so JPEG payloads are decoded to luma only (no chroma
//! upsampling or colour conversion), and nothing of the image is kept afterwards.

use panoptes_schemas::{Detection, FrameEncoding, FrameHeaders};
use serde::{Deserialize, Serialize};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use panoptes_scene::{
    GroundTruthBox, SceneSpec, frame_index_at, ground_truth, read_frame_index, rgb_to_ycbcr,
    unwrap_frame_index,
};

/// Smallest IoU for a detection to match a ground-truth box of the same class.
pub const MATCH_IOU: f32 = 0.5;

/// One detection as needed for matching: class, score and box in payload pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredBox {
    /// Class index (same numbering as [`panoptes_scene::CLASS_NAMES`]).
    pub class_id: u32,
    /// Confidence; higher scores are matched first.
    pub score: f32,
    /// `[x1, y1, x2, y2]` in payload pixels.
    pub bbox: [f32; 4],
}

impl From<&Detection> for ScoredBox {
    fn from(d: &Detection) -> Self {
        Self {
            class_id: d.class_id,
            score: d.score,
            bbox: d.bbox,
        }
    }
}

/// True positives, false positives and false negatives of one or more frames (in JSON
/// `true_positives`, `false_positives`, `false_negatives`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchCounts {
    /// Detections matched to a ground-truth box of the same class with IoU ≥ 0.5.
    #[serde(rename = "true_positives")]
    pub tp: u64,
    /// Detections matched to nothing.
    #[serde(rename = "false_positives")]
    pub fp: u64,
    /// Ground-truth boxes no detection matched.
    #[serde(rename = "false_negatives")]
    pub fn_: u64,
}

impl std::ops::AddAssign for MatchCounts {
    fn add_assign(&mut self, o: Self) {
        self.tp += o.tp;
        self.fp += o.fp;
        self.fn_ += o.fn_;
    }
}

/// Greedy matching of `detections` against `truth` (see the module docs).
pub fn match_detections(truth: &[GroundTruthBox], detections: &[ScoredBox]) -> MatchCounts {
    let mut order: Vec<&ScoredBox> = detections.iter().collect();
    order.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut taken = vec![false; truth.len()];
    let mut counts = MatchCounts::default();
    for det in order {
        let [x1, y1, x2, y2] = det.bbox;
        let as_box = GroundTruthBox {
            class_id: det.class_id,
            x1,
            y1,
            x2,
            y2,
        };
        let best = truth
            .iter()
            .enumerate()
            .filter(|(i, gt)| !taken[*i] && gt.class_id == det.class_id)
            .map(|(i, gt)| (i, gt.iou(&as_box)))
            .filter(|(_, iou)| *iou >= MATCH_IOU)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((i, _)) => {
                taken[i] = true;
                counts.tp += 1;
            }
            None => counts.fp += 1,
        }
    }
    counts.fn_ = taken.iter().filter(|t| !**t).count() as u64;
    counts
}

/// Ground truth of frame `frame_index` scaled from the scene's size to `width`×`height`.
pub fn scaled_ground_truth(
    spec: &SceneSpec,
    camera_id: &str,
    frame_index: u64,
    width: u32,
    height: u32,
) -> Vec<GroundTruthBox> {
    let sx = width as f32 / spec.width as f32;
    let sy = height as f32 / spec.height as f32;
    ground_truth(spec, camera_id, frame_index)
        .into_iter()
        .map(|b| GroundTruthBox {
            class_id: b.class_id,
            x1: b.x1 * sx,
            y1: b.y1 * sy,
            x2: b.x2 * sx,
            y2: b.y2 * sy,
        })
        .collect()
}

/// Decodes a payload to its luma plane: `(pixels, width, height)`, tightly packed.
///
/// JPEG is decoded straight to luma; RGB24 is converted with BT.601 weights. `None` when the
/// payload cannot be decoded or its size disagrees with the headers.
pub fn decode_luma(headers: &FrameHeaders, payload: &[u8]) -> Option<(Vec<u8>, u32, u32)> {
    match headers.encoding {
        FrameEncoding::Jpeg => {
            let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::Luma);
            let mut decoder = JpegDecoder::new_with_options(ZCursor::new(payload), options);
            let pixels = decoder.decode().ok()?;
            let (w, h) = decoder.dimensions()?;
            let (w, h) = (u32::try_from(w).ok()?, u32::try_from(h).ok()?);
            (pixels.len() == w as usize * h as usize).then_some((pixels, w, h))
        }
        FrameEncoding::Rgb24 => {
            let (w, h) = (headers.width, headers.height);
            if payload.len() != w as usize * h as usize * 3 {
                return None;
            }
            let luma = payload
                .chunks_exact(3)
                .map(|p| rgb_to_ycbcr([p[0], p[1], p[2]]).0)
                .collect();
            Some((luma, w, h))
        }
    }
}

/// The full frame index shown in a payload: the barcode's 30 bits, unwrapped around the
/// index a `fps` camera showed at the frame's capture time. `None` when the payload cannot
/// be decoded or carries no readable barcode.
pub fn frame_index_of_payload(headers: &FrameHeaders, payload: &[u8], fps: u32) -> Option<u64> {
    let (luma, w, h) = decode_luma(headers, payload)?;
    let read = read_frame_index(&luma, w, h, w as usize)?;
    let capture_ns = u128::try_from(headers.capture_time_us).unwrap_or(0) * 1000;
    Some(unwrap_frame_index(read, frame_index_at(capture_ns, fps)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gt(class_id: u32, x1: f32, y1: f32, x2: f32, y2: f32) -> GroundTruthBox {
        GroundTruthBox {
            class_id,
            x1,
            y1,
            x2,
            y2,
        }
    }

    fn det(class_id: u32, score: f32, bbox: [f32; 4]) -> ScoredBox {
        ScoredBox {
            class_id,
            score,
            bbox,
        }
    }

    /// `(tp, fp, fn)` of matching `dets` to `truth`.
    fn counts(truth: &[GroundTruthBox], dets: &[ScoredBox]) -> (u64, u64, u64) {
        let c = match_detections(truth, dets);
        (c.tp, c.fp, c.fn_)
    }

    #[test]
    fn greedy_matching_counts() {
        let truth = [gt(0, 0.0, 0.0, 10.0, 10.0), gt(1, 20.0, 20.0, 30.0, 30.0)];
        // Perfect.
        let perfect = [
            det(0, 0.9, [0.0, 0.0, 10.0, 10.0]),
            det(1, 0.8, [20.0, 20.0, 30.0, 30.0]),
        ];
        assert_eq!(counts(&truth, &perfect), (2, 0, 0));
        // Wrong class, a duplicate of a matched box, and a box with IoU below 0.5.
        let bad = [
            det(0, 0.9, [0.0, 0.0, 10.0, 10.0]),
            det(0, 0.5, [0.0, 0.0, 10.0, 10.0]),
            det(0, 0.8, [20.0, 20.0, 30.0, 30.0]),
            det(1, 0.7, [25.0, 25.0, 35.0, 35.0]),
        ];
        assert_eq!(counts(&truth, &bad), (1, 3, 1));
        assert_eq!(match_detections(&truth, &[]).fn_, 2);
    }

    #[test]
    fn higher_score_wins_the_box() {
        let truth = [gt(0, 0.0, 0.0, 10.0, 10.0)];
        let dets = [
            det(0, 0.3, [0.0, 0.0, 10.0, 10.0]),
            det(0, 0.9, [1.0, 1.0, 10.0, 10.0]),
        ];
        assert_eq!(counts(&truth, &dets), (1, 1, 0));
    }

    #[test]
    fn rgb_payload_barcode_reads() {
        let spec = SceneSpec::new(320, 180);
        let mut rgb = Vec::new();
        let index = 17_000_000_123u64;
        panoptes_scene::render_rgb(&spec, "cam0", index, &mut rgb);
        let headers = FrameHeaders {
            schema_version: 1,
            camera_id: "cam0".into(),
            seq: 0,
            capture_time_us: (index as i64) * 100_000 + 30_000,
            pts_ns: None,
            width: 320,
            height: 180,
            source_width: 320,
            source_height: 180,
            encoding: FrameEncoding::Rgb24,
            traceparent: panoptes_schemas::new_traceparent(),
            owner_epoch: None,
            capture_clock: Default::default(),
        };
        assert_eq!(frame_index_of_payload(&headers, &rgb, 10), Some(index));
        assert_eq!(frame_index_of_payload(&headers, &rgb[1..], 10), None);
        let jpeg = FrameHeaders {
            encoding: FrameEncoding::Jpeg,
            ..headers
        };
        assert_eq!(frame_index_of_payload(&jpeg, b"not a jpeg", 10), None);
    }
}
