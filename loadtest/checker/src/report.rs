//! The checker's result: per-camera and total counts, JSON-serialisable, with a Markdown
//! rendering for people.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use super::accuracy::MatchCounts;

/// Detection accuracy of one camera or of the whole run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AccuracyReport {
    /// Frames with an accepted `ok` record and a readable barcode, i.e. the frames scored.
    pub frames_evaluated: u64,
    /// Frames whose barcode could not be read (or whose payload could not be decoded);
    /// excluded from accuracy.
    pub unreadable_frames: u64,
    /// Frames whose source size in the headers differs from the camera's scene spec;
    /// excluded from accuracy (the `--camera` spec does not describe this camera).
    pub mismatched_frames: u64,
    /// Detections matched or not, and ground-truth boxes missed, over the frames scored.
    #[serde(flatten)]
    pub counts: MatchCounts,
    /// `tp / (tp + fp)`; `None` when there were no detections.
    pub precision: Option<f64>,
    /// `tp / (tp + fn)`; `None` when there was no ground truth.
    pub recall: Option<f64>,
}

impl AccuracyReport {
    /// Builds the report from raw counts, deriving precision and recall.
    pub fn from_counts(
        frames_evaluated: u64,
        unreadable: u64,
        mismatched: u64,
        c: MatchCounts,
    ) -> Self {
        let ratio = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
        Self {
            frames_evaluated,
            unreadable_frames: unreadable,
            mismatched_frames: mismatched,
            counts: c,
            precision: ratio(c.tp, c.tp + c.fp),
            recall: ratio(c.tp, c.tp + c.fn_),
        }
    }

    /// Sum of two reports, precision and recall recomputed from the sums.
    pub fn merged(&self, other: &Self) -> Self {
        let mut counts = self.counts;
        counts += other.counts;
        Self::from_counts(
            self.frames_evaluated + other.frames_evaluated,
            self.unreadable_frames + other.unreadable_frames,
            self.mismatched_frames + other.mismatched_frames,
            counts,
        )
    }
}

/// Accounting of one camera (or, in [`Report::total`], of all cameras).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CameraReport {
    /// Distinct `(camera, seq)` seen on the frames topic.
    pub frames: u64,
    /// Detection records accepted (not superseded), duplicates included, any status.
    pub detections_accepted: u64,
    /// Frames seen on the frames topic with neither an accepted detection record nor a
    /// dead letter: the silent losses guarantee 2 forbids.
    pub lost: u64,
    /// Accepted records beyond the first for a `(camera, seq)`.
    pub duplicated: u64,
    /// Of the duplicates, those whose epoch is higher than that of the frame's first accepted
    /// record, by the worker that wrote that first record (frames processed again after a
    /// takeover; see the accounting rules).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub duplicated_across_epochs: BTreeMap<String, u64>,
    /// First accepted records of a frame whose seq is lower than that of a record accepted
    /// earlier for the same camera (in detections-topic order).
    pub reordered: u64,
    /// Frames accounted for by a `skipped_stale` / `shed_overload` record, by status.
    pub skipped: BTreeMap<String, u64>,
    /// Dead letters, by reason.
    pub dead_lettered: BTreeMap<String, u64>,
    /// Records discarded because their assignment epoch was superseded (zombie output).
    pub superseded: u64,
    /// Frames on the frames topic that the owner-epoch rule calls a superseded ingest
    /// owner's (a zombie ingest node's): their `owner_epoch` is lower than one read before
    /// for their camera. Workers account for them with a `superseded_owner` record.
    #[serde(default)]
    pub owner_superseded_frames: u64,
    /// Of those, frames whose first accepted record is `ok`: a zombie ingest node's frame
    /// was inferred, which the owner-epoch rule forbids (0 in a correct run).
    #[serde(default)]
    pub owner_superseded_inferred: u64,
    /// Distinct frames with an accepted record that never appeared on the frames topic
    /// (e.g. dropped by retention before the checker read them).
    pub unknown_frames: u64,
    /// Missing seq numbers on the frames topic between the lowest and highest seq seen
    /// (frames dropped before Kafka, or by retention); not counted as lost.
    pub gaps: u64,
    /// Up to [`MAX_EXAMPLES`] lost seq numbers, lowest first, for debugging.
    pub lost_examples: Vec<u64>,
    /// Accuracy, when requested and the camera's scene is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<AccuracyReport>,
}

/// Most example seq numbers kept per camera in [`CameraReport::lost_examples`].
pub const MAX_EXAMPLES: usize = 10;

fn add_maps(into: &mut BTreeMap<String, u64>, from: &BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k.clone()).or_default() += v;
    }
}

impl CameraReport {
    /// Adds another camera's counts into this one (examples are not merged).
    pub fn add(&mut self, o: &CameraReport) {
        self.frames += o.frames;
        self.detections_accepted += o.detections_accepted;
        self.lost += o.lost;
        self.duplicated += o.duplicated;
        add_maps(
            &mut self.duplicated_across_epochs,
            &o.duplicated_across_epochs,
        );
        self.reordered += o.reordered;
        add_maps(&mut self.skipped, &o.skipped);
        add_maps(&mut self.dead_lettered, &o.dead_lettered);
        self.superseded += o.superseded;
        self.owner_superseded_frames += o.owner_superseded_frames;
        self.owner_superseded_inferred += o.owner_superseded_inferred;
        self.unknown_frames += o.unknown_frames;
        self.gaps += o.gaps;
        self.accuracy = match (&self.accuracy, &o.accuracy) {
            (Some(a), Some(b)) => Some(a.merged(b)),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
    }

    /// Total of [`CameraReport::duplicated_across_epochs`].
    pub fn duplicated_across_epochs_total(&self) -> u64 {
        self.duplicated_across_epochs.values().sum()
    }

    /// Total of [`CameraReport::skipped`].
    pub fn skipped_total(&self) -> u64 {
        self.skipped.values().sum()
    }

    /// Total of [`CameraReport::dead_lettered`].
    pub fn dead_lettered_total(&self) -> u64 {
        self.dead_lettered.values().sum()
    }
}

/// The whole accounting of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Per camera id.
    pub cameras: BTreeMap<String, CameraReport>,
    /// Sum over all cameras, plus dead letters that name no known frame.
    pub total: CameraReport,
    /// Frame records whose envelope could not be decoded (or whose key disagrees with it).
    pub malformed_frames: u64,
    /// Malformed frame records without a dead letter at their position: lost as well.
    pub malformed_lost: u64,
    /// Detection and dead-letter records that could not be decoded; ignored.
    pub malformed_records: u64,
    /// Whether accuracy was evaluated.
    pub accuracy_enabled: bool,
    /// Payloads decoded for accuracy, and the CPU time spent doing it.
    pub decoded_frames: u64,
    /// Seconds spent decoding payloads and reading barcodes.
    pub decode_seconds: f64,
}

impl Report {
    /// Whether anything was lost (including malformed frames) or duplicated.
    pub fn has_loss_or_duplicates(&self) -> bool {
        self.total.lost > 0 || self.malformed_lost > 0 || self.total.duplicated > 0
    }

    /// A per-camera Markdown table plus a total row and a line of run-wide counters.
    pub fn to_markdown(&self) -> String {
        let mut out = self.table_head();
        for (id, r) in &self.cameras {
            self.push_row(&mut out, &format!("`{id}`"), r);
        }
        self.push_row(&mut out, "**total**", &self.total);
        let _ = writeln!(
            out,
            "\nmalformed frames: {} ({} lost), malformed records: {}",
            self.malformed_frames, self.malformed_lost, self.malformed_records
        );
        if self.accuracy_enabled && self.decoded_frames > 0 {
            let _ = writeln!(
                out,
                "decoded {} payloads for accuracy, {:.3} ms each",
                self.decoded_frames,
                self.decode_seconds * 1e3 / self.decoded_frames as f64
            );
        }
        out
    }

    /// The same table with the total row only: a run's accounting at a glance.
    pub fn totals_markdown(&self) -> String {
        let mut out = self.table_head();
        self.push_row(&mut out, "**total**", &self.total);
        out
    }

    /// Header and rule of the accounting table; accuracy columns when it was evaluated.
    fn table_head(&self) -> String {
        let mut out = String::from(
            "| camera | frames | accepted | lost | duplicated | reordered | skipped | dead-lettered | superseded | unknown | gaps |",
        );
        if self.accuracy_enabled {
            out.push_str(" unreadable | TP | FP | FN | precision | recall |");
        }
        out.push('\n');
        let cols = if self.accuracy_enabled { 17 } else { 11 };
        out.push('|');
        out.push_str(&" --- |".repeat(cols));
        out.push('\n');
        out
    }

    /// One row of the accounting table.
    fn push_row(&self, out: &mut String, name: &str, r: &CameraReport) {
        let _ = write!(
            out,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.frames,
            r.detections_accepted,
            r.lost,
            r.duplicated,
            r.reordered,
            fmt_map(&r.skipped),
            fmt_map(&r.dead_lettered),
            r.superseded,
            r.unknown_frames,
            r.gaps,
        );
        if self.accuracy_enabled {
            match &r.accuracy {
                Some(a) => {
                    let _ = write!(
                        out,
                        " {} | {} | {} | {} | {} | {} |",
                        a.unreadable_frames,
                        a.counts.tp,
                        a.counts.fp,
                        a.counts.fn_,
                        fmt_ratio(a.precision),
                        fmt_ratio(a.recall),
                    );
                }
                None => out.push_str(" – | – | – | – | – | – |"),
            }
        }
        out.push('\n');
    }
}

/// A count map as `total (key: n, …)` with its zero entries left out; `0` when empty.
/// Shared with the load-run report, which prints the checker's maps the same way.
pub fn fmt_map(m: &BTreeMap<String, u64>) -> String {
    let total: u64 = m.values().sum();
    if total == 0 {
        return "0".to_owned();
    }
    let parts: Vec<String> = m
        .iter()
        .filter(|(_, v)| **v > 0)
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    format!("{total} ({})", parts.join(", "))
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_owned(), |v| format!("{v:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_has_a_row_per_camera_and_total() {
        let mut report = Report {
            accuracy_enabled: true,
            ..Report::default()
        };
        let mut cam = CameraReport {
            frames: 3,
            lost: 1,
            ..CameraReport::default()
        };
        cam.skipped.insert("skipped_stale".into(), 2);
        cam.accuracy = Some(AccuracyReport::from_counts(
            2,
            0,
            0,
            MatchCounts {
                tp: 3,
                fp: 1,
                fn_: 0,
            },
        ));
        report.total.add(&cam);
        report.cameras.insert("cam0".into(), cam);
        let md = report.to_markdown();
        assert!(md.contains("| `cam0` | 3 | 0 | 1 |"), "{md}");
        assert!(md.contains("2 (skipped_stale: 2)"), "{md}");
        assert!(md.contains("| **total** |"), "{md}");
        assert!(md.contains("0.7500 | 1.0000 |"), "{md}");
        let totals = report.totals_markdown();
        assert!(
            totals.starts_with("| camera | frames | accepted |"),
            "{totals}"
        );
        assert!(totals.ends_with("| **total** | 3 | 0 | 1 | 0 | 0 | 2 (skipped_stale: 2) | 0 | 0 | 0 | 0 | 0 | 3 | 1 | 0 | 0.7500 | 1.0000 |\n"), "{totals}");
        assert!(!totals.contains("cam0"), "{totals}");
        let json = serde_json::to_string(&report).unwrap();
        assert!(
            json.contains(r#""true_positives":3,"false_positives":1,"false_negatives":0"#),
            "{json}"
        );
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        assert!(report.has_loss_or_duplicates());
    }
}
