//! Agreement of a shadow model with the active one, per class (pure).
//!
//! The primary's detections play the truth and the shadow's the detections of
//! [`match_frame`]: a matched pair agrees, an unmatched primary box is `primary_only`, an
//! unmatched shadow box `shadow_only`. Agreement = 2·agree / (2·agree + primary_only +
//! shadow_only): 1 when both report the same boxes, 0 when they share none, symmetric in the
//! two models (the Dice coefficient of the two detection sets).

use std::collections::BTreeMap;

use panoptes_schemas::Detection;

use crate::validate::matching::{Counts, LabelledBox, match_frame};

/// Counts per class since the shadow started.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Agreement {
    per_class: BTreeMap<String, Counts>,
}

impl Agreement {
    /// Adds one frame; returns its counts per class (tp = agree, fn = primary only, fp =
    /// shadow only).
    pub fn add(&mut self, primary: &[Detection], shadow: &[Detection]) -> BTreeMap<String, Counts> {
        let frame = match_frame(&boxes(primary), &boxes(shadow));
        for (class, c) in &frame {
            self.per_class.entry(class.clone()).or_default().add(*c);
        }
        frame
    }

    /// Agreement of `class` so far (`None` before either model reported it).
    pub fn of(&self, class: &str) -> Option<f64> {
        self.per_class.get(class).map(|c| ratio(*c))
    }

    /// Every class seen so far with its agreement.
    pub fn classes(&self) -> impl Iterator<Item = (&str, f64)> {
        self.per_class.iter().map(|(k, c)| (k.as_str(), ratio(*c)))
    }
}

fn ratio(c: Counts) -> f64 {
    let den = 2 * c.tp + c.fp + c.fn_;
    if den == 0 {
        1.0
    } else {
        (2 * c.tp) as f64 / den as f64
    }
}

fn boxes(detections: &[Detection]) -> Vec<LabelledBox> {
    detections
        .iter()
        .map(|d| LabelledBox {
            class: d.label.clone(),
            bbox: d.bbox,
            score: d.score,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class: &str, x: f32) -> Detection {
        Detection::from_pixels(0, class, 0.9, [x, 0.0, x + 10.0, 10.0], 100, 100)
    }

    #[test]
    fn identical_outputs_agree_fully_and_a_missing_class_not_at_all() {
        let mut a = Agreement::default();
        let frame = [det("car", 0.0), det("person", 50.0)];
        a.add(&frame, &frame);
        a.add(&frame, &frame);
        assert_eq!(a.of("car"), Some(1.0));
        assert_eq!(a.of("person"), Some(1.0));
        // The shadow misses every car: car agreement falls to 2·2 / (2·2 + 2) = 0.67.
        let counts = a.add(&frame, &frame[1..]);
        assert_eq!(counts["car"].fn_, 1);
        a.add(&frame, &frame[1..]);
        assert!((a.of("car").unwrap() - 4.0 / 6.0).abs() < 1e-9);
        assert_eq!(a.of("person"), Some(1.0));
        // A shifted box (IoU < 0.5) is one of each.
        let mut b = Agreement::default();
        let c = b.add(&[det("car", 0.0)], &[det("car", 6.0)]);
        assert_eq!((c["car"].tp, c["car"].fp, c["car"].fn_), (0, 1, 1));
        assert_eq!(b.of("car"), Some(0.0));
        assert_eq!(b.of("bicycle"), None);
        assert_eq!(b.classes().count(), 1);
    }
}
