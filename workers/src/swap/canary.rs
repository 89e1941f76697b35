//! The worker's canary figures: what its lanes measured per model version since the current
//! canary started, reported to the coordinator by the rollout watcher
//! ([`super::watch`]) as a [`CanaryReport`].
//!
//! The book follows the record's canary ([`CanaryBook::follow`]): a new canary (another
//! `since_generation`) starts an empty report; no canary, no recording (a lock and a check per
//! forward pass and frame, nothing else). Inference threads add each forward pass (batch
//! size, time) and each frame's detections under the version that inferred it; loaders add
//! refusals.

use std::sync::Arc;

use panoptes_schemas::Detection;
use panoptes_schemas::model::CanaryReport;
use parking_lot::Mutex;

/// Per-version figures of the running canary; cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct CanaryBook {
    inner: Arc<Mutex<Book>>,
}

#[derive(Debug, Default)]
struct Book {
    since: Option<u64>,
    report: CanaryReport,
}

impl CanaryBook {
    /// Follows the record's canary (`since_generation`, or `None` without one); a different
    /// canary starts from an empty report.
    pub fn follow(&self, since: Option<u64>) {
        let mut b = self.inner.lock();
        if b.since != since {
            b.since = since;
            b.report = CanaryReport::default();
        }
    }

    /// One forward pass of `version` over `frames` frames, taking `ms`.
    pub fn pass(&self, version: &str, frames: usize, ms: f64) {
        let mut b = self.inner.lock();
        if b.since.is_some() {
            let arm = b.report.versions.entry(version.to_owned()).or_default();
            arm.pass(frames, ms);
        }
    }

    /// One frame inferred by `version`, with its detections.
    pub fn frame(&self, version: &str, detections: &[Detection]) {
        let mut b = self.inner.lock();
        if b.since.is_some() {
            let arm = b.report.versions.entry(version.to_owned()).or_default();
            arm.frame(detections.iter().map(|d| (d.label.as_str(), d.score)));
        }
    }

    /// `version` could not be loaded.
    pub fn refused(&self, version: &str, why: &str) {
        let mut b = self.inner.lock();
        if b.since.is_some() {
            b.report.refused.insert(version.to_owned(), why.to_owned());
        }
    }

    /// The canary followed and the report so far (stamped `at_ms`), while one runs.
    pub fn report(&self, at_ms: u64) -> Option<(u64, CanaryReport)> {
        let mut b = self.inner.lock();
        let since = b.since?;
        b.report.at_ms = at_ms;
        Some((since, b.report.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class: &str, score: f32) -> Detection {
        Detection::from_pixels(0, class, score, [0.0, 0.0, 1.0, 1.0], 10, 10)
    }

    #[test]
    fn records_only_while_a_canary_runs_and_restarts_with_a_new_one() {
        let book = CanaryBook::default();
        let frames = [vec![det("car", 0.5)], vec![]];
        let pass = |version: &str, frames: &[Vec<Detection>], ms: f64| {
            book.pass(version, frames.len(), ms);
            for f in frames {
                book.frame(version, f);
            }
        };
        pass("1", &frames, 4.0);
        assert!(book.report(1).is_none());
        book.follow(Some(3));
        pass("1", &frames, 4.0);
        pass("2", &frames[..1], 9.0);
        book.refused("3", "refused_load");
        let (since, r) = book.report(7).unwrap();
        assert_eq!((since, r.at_ms), (3, 7));
        assert_eq!(r.versions["1"].frames, 2);
        assert_eq!(r.versions["1"].passes["2"].count, 1);
        assert_eq!(r.versions["2"].passes["1"].count, 1);
        assert_eq!(r.versions["1"].classes["car"].count, 1);
        assert_eq!(r.refused["3"], "refused_load");
        book.follow(Some(3));
        assert_eq!(book.report(8).unwrap().1.versions.len(), 2, "same canary");
        book.follow(Some(5));
        assert!(
            book.report(9).unwrap().1.versions.is_empty(),
            "a new canary"
        );
        book.follow(None);
        assert!(book.report(10).is_none());
    }
}
