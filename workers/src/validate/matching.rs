//! The pure matching core of a validation run: detections against ground truth, per class.
//!
//! Contract: within one image and one class, detections are taken best score first (ties by
//! their order) and each is matched to the not-yet-matched truth box of the same class with
//! the highest IoU; IoU ≥ [`MATCH_IOU`] (0.5) makes it a true positive, anything else a false
//! positive. Truth boxes left unmatched are false negatives. A class the model does not know
//! (truth labelled with a name missing from its manifest) can only produce false negatives.
//! Precision is `tp / (tp + fp)`, recall `tp / (tp + fn)`; both are 1.0 when their
//! denominator is 0 (nothing claimed means nothing wrongly claimed; nothing to find means
//! nothing missed). No I/O, no libtorch.

use std::collections::BTreeMap;

use crate::postprocess::iou;

/// IoU at or above which a detection matches a truth box.
pub const MATCH_IOU: f32 = 0.5;

/// A box with a class name, in frame pixels `[x1, y1, x2, y2]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledBox {
    /// Class name.
    pub class: String,
    /// `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// Confidence (1.0 for ground truth).
    pub score: f32,
}

/// True positives, false positives and false negatives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Detections matched to a truth box.
    pub tp: u64,
    /// Detections matched to nothing.
    pub fp: u64,
    /// Truth boxes no detection matched.
    pub fn_: u64,
}

impl Counts {
    /// `tp / (tp + fp)`, 1.0 when nothing was detected.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// `tp / (tp + fn)`, 1.0 when there was nothing to find.
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// Adds another count.
    pub fn add(&mut self, other: Counts) {
        self.tp += other.tp;
        self.fp += other.fp;
        self.fn_ += other.fn_;
    }
}

fn ratio(num: u64, den: u64) -> f64 {
    if den == 0 {
        1.0
    } else {
        num as f64 / den as f64
    }
}

/// Counts over a whole golden set, in total and per class name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    /// All classes together.
    pub total: Counts,
    /// Per class name (truth and detection classes both appear).
    pub per_class: BTreeMap<String, Counts>,
    /// Images matched.
    pub frames: u64,
}

impl Tally {
    /// Matches one image's detections against its truth and adds the counts.
    pub fn add_frame(&mut self, truth: &[LabelledBox], detections: &[LabelledBox]) {
        for (class, counts) in match_frame(truth, detections) {
            self.total.add(counts);
            self.per_class.entry(class).or_default().add(counts);
        }
        self.frames += 1;
    }
}

/// Matches one image, returning the counts per class name present in either list.
pub fn match_frame(truth: &[LabelledBox], detections: &[LabelledBox]) -> BTreeMap<String, Counts> {
    let mut out: BTreeMap<String, Counts> = BTreeMap::new();
    let mut used = vec![false; truth.len()];
    let mut order: Vec<&LabelledBox> = detections.iter().collect();
    order.sort_by(|a, b| b.score.total_cmp(&a.score));
    for det in order {
        let best = truth
            .iter()
            .enumerate()
            .filter(|(i, t)| !used[*i] && t.class == det.class)
            .map(|(i, t)| (i, iou(&t.bbox, &det.bbox)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        let counts = out.entry(det.class.clone()).or_default();
        match best {
            Some((i, v)) if v >= MATCH_IOU => {
                used[i] = true;
                counts.tp += 1;
            }
            _ => counts.fp += 1,
        }
    }
    for (t, _) in truth.iter().zip(&used).filter(|(_, u)| !**u) {
        out.entry(t.class.clone()).or_default().fn_ += 1;
    }
    out
}

/// The `q`-quantile (0..=1) of `samples` by nearest rank (the smallest sample with at least
/// `q` of the samples at or below it); 0.0 for no samples.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(class: &str, bbox: [f32; 4], score: f32) -> LabelledBox {
        LabelledBox {
            class: class.into(),
            bbox,
            score,
        }
    }

    #[test]
    fn exact_and_shifted_boxes() {
        let truth = [b("car", [0.0, 0.0, 10.0, 10.0], 1.0)];
        // IoU of a box shifted by 2 of 10 px: 80 / 120 = 0.67 -> match.
        let m = match_frame(&truth, &[b("car", [2.0, 0.0, 12.0, 10.0], 0.9)]);
        assert_eq!(
            m["car"],
            Counts {
                tp: 1,
                fp: 0,
                fn_: 0
            }
        );
        // Shifted by 4: 60 / 140 = 0.43 -> a false positive and a miss.
        let m = match_frame(&truth, &[b("car", [4.0, 0.0, 14.0, 10.0], 0.9)]);
        assert_eq!(
            m["car"],
            Counts {
                tp: 0,
                fp: 1,
                fn_: 1
            }
        );
    }

    #[test]
    fn class_must_agree() {
        let truth = [b("car", [0.0, 0.0, 10.0, 10.0], 1.0)];
        let m = match_frame(&truth, &[b("person", [0.0, 0.0, 10.0, 10.0], 0.9)]);
        assert_eq!(
            m["car"],
            Counts {
                tp: 0,
                fp: 0,
                fn_: 1
            }
        );
        assert_eq!(
            m["person"],
            Counts {
                tp: 0,
                fp: 1,
                fn_: 0
            }
        );
    }

    #[test]
    fn duplicates_are_false_positives_and_best_score_wins() {
        let truth = [b("car", [0.0, 0.0, 10.0, 10.0], 1.0)];
        let dets = [
            b("car", [0.0, 0.0, 10.0, 10.0], 0.6),
            b("car", [1.0, 0.0, 11.0, 10.0], 0.9),
        ];
        let m = match_frame(&truth, &dets);
        assert_eq!(
            m["car"],
            Counts {
                tp: 1,
                fp: 1,
                fn_: 0
            }
        );
    }

    #[test]
    fn greedy_takes_the_highest_iou_free_truth() {
        let truth = [
            b("car", [0.0, 0.0, 10.0, 10.0], 1.0),
            b("car", [20.0, 0.0, 30.0, 10.0], 1.0),
        ];
        let dets = [
            b("car", [19.0, 0.0, 29.0, 10.0], 0.9),
            b("car", [0.0, 0.0, 10.0, 10.0], 0.8),
        ];
        assert_eq!(match_frame(&truth, &dets)["car"].tp, 2);
    }

    #[test]
    fn tally_precision_recall_and_empty_cases() {
        let mut t = Tally::default();
        assert_eq!((t.total.precision(), t.total.recall()), (1.0, 1.0));
        let truth = [
            b("car", [0.0, 0.0, 10.0, 10.0], 1.0),
            b("person", [20.0, 0.0, 30.0, 10.0], 1.0),
        ];
        t.add_frame(&truth, &[b("car", [0.0, 0.0, 10.0, 10.0], 0.9)]);
        t.add_frame(&truth, &truth);
        t.add_frame(&[], &[b("bicycle", [0.0, 0.0, 5.0, 5.0], 0.7)]);
        assert_eq!(t.frames, 3);
        assert_eq!(
            t.total,
            Counts {
                tp: 3,
                fp: 1,
                fn_: 1
            }
        );
        assert_eq!(t.total.precision(), 0.75);
        assert_eq!(t.total.recall(), 0.75);
        assert_eq!(t.per_class["person"].recall(), 0.5);
        assert_eq!(t.per_class["bicycle"].precision(), 0.0);
    }

    #[test]
    fn quantile_nearest_rank() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&s, 0.99), 99.0);
        assert_eq!(quantile(&s, 0.5), 50.0);
        assert_eq!(quantile(&s, 1.0), 100.0);
        assert_eq!(quantile(&[3.0, 1.0, 2.0], 0.99), 3.0);
        assert_eq!(quantile(&[], 0.99), 0.0);
        assert_eq!(quantile(&[5.0], 0.0), 5.0);
    }
}
