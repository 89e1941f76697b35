//! Turning model outputs into detections.
//!
//! - [`decode_output`] reads either contract from a tensor: `post_nms` rows are thresholded and
//!   capped; `yolo_raw` heads are decoded (best class per candidate, `cx, cy, w, h` → corners),
//!   thresholded and de-duplicated with class-aware greedy [`nms`].
//! - [`to_detections`] maps boxes from model-input pixels back to the source frame (undoing the
//!   [`Letterbox`]) and builds [`Detection`]s with pixel and normalised coordinates.

use panoptes_schemas::Detection;
use tch::{Device, Kind, Tensor};

use crate::error::{ModelError, torch_message};
use crate::model::{ModelManifest, OutputContract};
use crate::preprocess::Letterbox;

/// One detection in model-input pixels, before mapping back to the frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RawDetection {
    /// Class index.
    pub class_id: u32,
    /// Confidence in `[0, 1]`.
    pub score: f32,
    /// `[x1, y1, x2, y2]` in input pixels.
    pub bbox: [f32; 4],
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes (0 when either is empty).
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 { 0.0 } else { inter / union }
}

/// Class-aware greedy non-maximum suppression: keeps the highest-scoring boxes, dropping any
/// box whose IoU with a kept box of the same class exceeds `iou_threshold`; at most `max_det`.
pub fn nms(mut dets: Vec<RawDetection>, iou_threshold: f32, max_det: usize) -> Vec<RawDetection> {
    dets.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<RawDetection> = Vec::with_capacity(max_det.min(dets.len()));
    for d in dets {
        if kept.len() >= max_det {
            break;
        }
        let suppressed = kept
            .iter()
            .any(|k| k.class_id == d.class_id && iou(&k.bbox, &d.bbox) > iou_threshold);
        if !suppressed {
            kept.push(d);
        }
    }
    kept
}

/// Decodes `post_nms` output data of shape `[B, N, 6]`: rows scoring at least
/// `score_threshold` (and above 0, which marks padding), best first, at most `max_det` per image.
pub fn decode_post_nms(
    data: &[f32],
    shape: [usize; 3],
    score_threshold: f32,
    max_det: usize,
) -> Vec<Vec<RawDetection>> {
    let [b, n, six] = shape;
    debug_assert_eq!(six, 6);
    (0..b)
        .map(|i| {
            let mut dets: Vec<RawDetection> = data[i * n * 6..(i + 1) * n * 6]
                .chunks_exact(6)
                .filter(|r| r[4] > 0.0 && r[4] >= score_threshold && r[5] >= 0.0)
                .map(|r| RawDetection {
                    class_id: r[5].round() as u32,
                    score: r[4],
                    bbox: [r[0], r[1], r[2], r[3]],
                })
                .collect();
            dets.sort_by(|a, b| b.score.total_cmp(&a.score));
            dets.truncate(max_det);
            dets
        })
        .collect()
}

/// Decodes raw YOLO heads of shape `[B, 4 + C, N]` (`cx, cy, w, h`, then `C` class scores):
/// the best class per candidate, if it scores at least `score_threshold`, then [`nms`].
pub fn decode_yolo_raw(
    data: &[f32],
    shape: [usize; 3],
    score_threshold: f32,
    iou_threshold: f32,
    max_det: usize,
) -> Vec<Vec<RawDetection>> {
    let [b, rows, n] = shape;
    let classes = rows.saturating_sub(4);
    let mut best = vec![0.0f32; n];
    let mut best_class = vec![0u32; n];
    (0..b)
        .map(|i| {
            let img = &data[i * rows * n..(i + 1) * rows * n];
            best.fill(f32::NEG_INFINITY);
            for c in 0..classes {
                let row = &img[(4 + c) * n..(5 + c) * n];
                for ((bs, bc), &s) in best.iter_mut().zip(best_class.iter_mut()).zip(row) {
                    if s > *bs {
                        *bs = s;
                        *bc = c as u32;
                    }
                }
            }
            let candidates: Vec<RawDetection> = (0..n)
                .filter(|&j| best[j] >= score_threshold && best[j] > 0.0)
                .map(|j| {
                    let (cx, cy, w, h) = (img[j], img[n + j], img[2 * n + j], img[3 * n + j]);
                    RawDetection {
                        class_id: best_class[j],
                        score: best[j],
                        bbox: [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
                    }
                })
                .collect();
            nms(candidates, iou_threshold, max_det)
        })
        .collect()
}

/// Copies a model output to the CPU and decodes it according to the manifest's contract and
/// thresholds. Returns one list per image of the batch.
pub fn decode_output(
    manifest: &ModelManifest,
    output: &Tensor,
) -> Result<Vec<Vec<RawDetection>>, ModelError> {
    let shape = output.size();
    let batch = shape.first().copied().unwrap_or(0);
    manifest.check_output_shape(&shape, batch)?;
    let dims = [shape[0] as usize, shape[1] as usize, shape[2] as usize];
    let flat = output
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
        .view([-1]);
    let data = Vec::<f32>::try_from(&flat).map_err(|e| ModelError::Inference {
        model: manifest.name.clone(),
        message: torch_message(&e),
    })?;
    Ok(match manifest.output {
        OutputContract::PostNms => decode_post_nms(
            &data,
            dims,
            manifest.score_threshold,
            manifest.max_detections,
        ),
        OutputContract::YoloRaw => decode_yolo_raw(
            &data,
            dims,
            manifest.score_threshold,
            manifest.iou_threshold,
            manifest.max_detections,
        ),
    })
}

/// Maps detections from input pixels back to the source frame and labels them. Boxes are
/// clamped to the frame (by [`Detection::from_pixels`]); boxes that end up empty are dropped.
pub fn to_detections(
    raw: &[RawDetection],
    letterbox: &Letterbox,
    classes: &[String],
) -> Vec<Detection> {
    raw.iter()
        .filter_map(|d| {
            let label = classes.get(d.class_id as usize)?;
            let det = Detection::from_pixels(
                d.class_id,
                label.as_str(),
                d.score,
                letterbox.to_source(d.bbox),
                letterbox.src_width,
                letterbox.src_height,
            );
            (det.bbox[2] > det.bbox[0] && det.bbox[3] > det.bbox[1]).then_some(det)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class_id: u32, score: f32, bbox: [f32; 4]) -> RawDetection {
        RawDetection {
            class_id,
            score,
            bbox,
        }
    }

    #[test]
    fn iou_basics() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[10.0, 0.0, 20.0, 10.0]), 0.0);
        assert!((iou(&a, &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(iou(&a, &[3.0, 3.0, 3.0, 8.0]), 0.0);
    }

    #[test]
    fn nms_is_class_aware_and_keeps_best() {
        let dets = vec![
            det(0, 0.6, [1.0, 1.0, 11.0, 11.0]),
            det(0, 0.9, [0.0, 0.0, 10.0, 10.0]),
            det(1, 0.8, [0.0, 0.0, 10.0, 10.0]),
            det(0, 0.7, [50.0, 50.0, 60.0, 60.0]),
        ];
        let kept = nms(dets.clone(), 0.5, 10);
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, [0.9, 0.8, 0.7]);
        assert_eq!(nms(dets.clone(), 0.5, 2).len(), 2);
        // A threshold above their overlap keeps both class-0 boxes.
        assert_eq!(nms(dets, 0.9, 10).len(), 4);
    }

    #[test]
    fn yolo_raw_decoding() {
        // B=1, C=2, N=3, layout [4 + C, N].
        let n = 3;
        let mut data = vec![0.0f32; 6 * n];
        let cand = [
            (50.0, 50.0, 20.0, 10.0, [0.9, 0.1]),
            (51.0, 50.0, 20.0, 10.0, [0.8, 0.2]), // duplicate of the first, suppressed
            (10.0, 10.0, 4.0, 4.0, [0.1, 0.3]),   // class 1 below threshold 0.5
        ];
        for (j, (cx, cy, w, h, s)) in cand.iter().enumerate() {
            data[j] = *cx;
            data[n + j] = *cy;
            data[2 * n + j] = *w;
            data[3 * n + j] = *h;
            data[4 * n + j] = s[0];
            data[5 * n + j] = s[1];
        }
        let out = decode_yolo_raw(&data, [1, 6, n], 0.5, 0.5, 100);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0], vec![det(0, 0.9, [40.0, 45.0, 60.0, 55.0])]);
    }

    #[test]
    fn post_nms_decoding_skips_padding() {
        let data = [
            1.0, 2.0, 3.0, 4.0, 0.0, 0.0, // padding
            1.0, 2.0, 30.0, 40.0, 0.7, 2.0, //
            5.0, 6.0, 7.0, 8.0, 0.2, 1.0, // below threshold
            0.0, 0.0, 9.0, 9.0, 0.95, 1.0,
        ];
        let out = decode_post_nms(&data, [1, 4, 6], 0.5, 10);
        assert_eq!(
            out[0],
            vec![
                det(1, 0.95, [0.0, 0.0, 9.0, 9.0]),
                det(2, 0.7, [1.0, 2.0, 30.0, 40.0])
            ]
        );
    }

    #[test]
    fn mapping_back_to_the_frame() {
        let lb = Letterbox::new(1280, 720, 640, 640);
        let classes = vec!["person".to_owned(), "car".to_owned()];
        let raw = [
            det(1, 0.9, [100.0, 150.0, 200.0, 250.0]),
            det(0, 0.8, [600.0, 490.0, 700.0, 560.0]), // pokes into the bottom padding
            det(0, 0.8, [10.0, 0.0, 20.0, 100.0]),     // entirely in the top padding
        ];
        let dets = to_detections(&raw, &lb, &classes);
        assert_eq!(dets.len(), 2);
        assert_eq!(dets[0].label, "car");
        assert_eq!(dets[0].bbox, [200.0, 20.0, 400.0, 220.0]);
        assert_eq!(
            dets[0].bbox_norm,
            [200.0 / 1280.0, 20.0 / 720.0, 400.0 / 1280.0, 220.0 / 720.0]
        );
        assert_eq!(dets[1].bbox, [1200.0, 700.0, 1280.0, 720.0]);
    }
}
