//! Unit tests of [`super::Accounting`] on synthetic records (no Kafka).

use panoptes_schemas::{
    DeadLetter, DeadLetterReason, Detection, DetectionRecord, FrameEncoding, FrameHeaders,
    FrameStatus, ModelRef, SCHEMA_VERSION, StageLatencies, new_traceparent,
};

use super::{Accounting, Verdict};
use crate::report::Report;
use panoptes_scene::camera::CameraConfig;
use panoptes_scene::{SceneSpec, ground_truth, render_rgb};

const BASE_US: i64 = 1_700_000_000_000_000;

fn headers(camera: &str, seq: u64, w: u32, h: u32, encoding: FrameEncoding) -> FrameHeaders {
    FrameHeaders {
        schema_version: SCHEMA_VERSION,
        camera_id: camera.into(),
        seq,
        capture_time_us: BASE_US + seq as i64 * 100_000,
        pts_ns: None,
        width: w,
        height: h,
        source_width: w,
        source_height: h,
        encoding,
        traceparent: new_traceparent(),
        owner_epoch: None,
        capture_clock: Default::default(),
    }
}

fn record(
    camera: &str,
    seq: u64,
    partition: i32,
    epoch: u64,
    status: FrameStatus,
) -> DetectionRecord {
    DetectionRecord {
        schema_version: SCHEMA_VERSION,
        camera_id: camera.into(),
        seq,
        capture_time_us: BASE_US + seq as i64 * 100_000,
        frame_width: 320,
        frame_height: 180,
        model: ModelRef {
            name: "m".into(),
            version: "1".into(),
        },
        status,
        detections: Vec::new(),
        latency: StageLatencies::default(),
        epoch,
        worker_id: "w1".into(),
        partition,
        offset: seq as i64,
        published_time_us: BASE_US,
        traceparent: None,
    }
}

fn letter(camera: Option<&str>, seq: Option<u64>, partition: i32, offset: i64) -> DeadLetter {
    DeadLetter {
        schema_version: SCHEMA_VERSION,
        camera_id: camera.map(str::to_owned),
        seq,
        source_topic: "panoptes.frames".into(),
        partition,
        offset,
        reason: DeadLetterReason::Undecodable,
        detail: "bad".into(),
        worker_id: "w1".into(),
        time_us: BASE_US,
    }
}

enum Event {
    Frame(i32, i64, FrameHeaders),
    Detection(DetectionRecord),
    Letter(DeadLetter),
}

/// Frames 0..10 of cam0 (partition 0) and cam1 (partition 1), with: cam0 seq 3 lost, seq 5
/// duplicated, 7/8 reordered, seq 4 skipped, seq 6 dead-lettered by seq and cam1 seq 2 by
/// position; cam1 frame 6 missing from the frames topic (a gap), epoch 2 from cam1 seq 5 on
/// with a zombie record for seq 6 at epoch 1, and a record for an unknown frame (cam1 seq 20).
fn scenario() -> (Vec<Event>, Vec<Event>, Vec<Event>) {
    let mut frames = Vec::new();
    for (p, cam) in [(0, "cam0"), (1, "cam1")] {
        for seq in 0..10u64 {
            if cam == "cam1" && seq == 6 {
                continue;
            }
            frames.push(Event::Frame(
                p,
                seq as i64,
                headers(cam, seq, 320, 180, FrameEncoding::Jpeg),
            ));
        }
    }
    let mut dets = Vec::new();
    let ok = FrameStatus::Ok;
    for seq in [0, 1, 2, 4, 5, 5, 8, 7, 9] {
        let status = if seq == 4 {
            FrameStatus::SkippedStale
        } else {
            ok
        };
        dets.push(Event::Detection(record("cam0", seq, 0, 1, status)));
    }
    for seq in 0..10u64 {
        if seq == 2 || seq == 6 {
            continue;
        }
        let epoch = if seq >= 5 { 2 } else { 1 };
        dets.push(Event::Detection(record("cam1", seq, 1, epoch, ok)));
        if seq == 5 {
            dets.push(Event::Detection(record("cam1", 7, 1, 1, ok)));
        }
    }
    dets.push(Event::Detection(record("cam1", 20, 1, 2, ok)));
    let letters = vec![
        Event::Letter(letter(Some("cam0"), Some(6), 0, 6)),
        Event::Letter(letter(None, None, 1, 2)),
    ];
    (frames, dets, letters)
}

fn feed(acc: &mut Accounting, events: &[Event]) -> Vec<Verdict> {
    let mut verdicts = Vec::new();
    for (i, e) in events.iter().enumerate() {
        match e {
            Event::Frame(p, o, h) => {
                acc.observe_frame(*p, *o, Some(h.camera_id.as_bytes()), h, b"");
            }
            Event::Detection(r) => verdicts.push(acc.observe_detection(0, i as i64, r)),
            Event::Letter(l) => acc.observe_dead_letter(l),
        }
    }
    verdicts
}

fn check_scenario_report(r: &Report) {
    let c0 = &r.cameras["cam0"];
    assert_eq!(c0.frames, 10);
    assert_eq!(c0.detections_accepted, 9);
    assert_eq!((c0.lost, c0.lost_examples.clone()), (1, vec![3]));
    assert_eq!((c0.duplicated, c0.reordered, c0.superseded), (1, 1, 0));
    assert_eq!(c0.skipped.get("skipped_stale"), Some(&1));
    assert_eq!(c0.dead_lettered.get("undecodable"), Some(&1));
    assert_eq!((c0.unknown_frames, c0.gaps), (0, 0));
    let c1 = &r.cameras["cam1"];
    assert_eq!(c1.frames, 9);
    assert_eq!(c1.detections_accepted, 9);
    assert_eq!((c1.lost, c1.duplicated, c1.reordered), (0, 0, 0));
    assert_eq!((c1.superseded, c1.unknown_frames, c1.gaps), (1, 1, 1));
    assert_eq!(c1.dead_lettered.get("undecodable"), Some(&1));
    assert_eq!(r.total.frames, 19);
    assert_eq!(r.total.lost, 1);
    assert_eq!(r.total.dead_lettered_total(), 2);
    assert_eq!(r.total.skipped_total(), 1);
    assert!(r.has_loss_or_duplicates());
    assert!(r.cameras.values().all(|c| c.accuracy.is_none()));
}

#[test]
fn scenario_counts_in_any_interleaving() {
    let (frames, dets, letters) = scenario();
    let orders: [[&Vec<Event>; 3]; 3] = [
        [&frames, &dets, &letters],
        [&dets, &letters, &frames],
        [&letters, &dets, &frames],
    ];
    let mut reports = Vec::new();
    for order in orders {
        let mut acc = Accounting::new(false, &[]);
        for part in order {
            feed(&mut acc, part);
        }
        let r = acc.report();
        check_scenario_report(&r);
        reports.push(r);
    }
    // Round-robin interleaving of the three topics, too.
    let mut acc = Accounting::new(false, &[]);
    let longest = frames.len().max(dets.len());
    for i in 0..longest {
        for part in [&frames, &dets, &letters] {
            if let Some(e) = part.get(i) {
                feed(&mut acc, std::slice::from_ref(e));
            }
        }
    }
    reports.push(acc.report());
    for r in &reports[1..] {
        assert_eq!(r, &reports[0]);
    }
}

#[test]
fn epoch_rule() {
    let ok = FrameStatus::Ok;
    let mut acc = Accounting::new(false, &[]);
    let mut see =
        |cam: &str, seq, p, epoch| acc.observe_detection(0, 0, &record(cam, seq, p, epoch, ok));
    // A zombie record before the new epoch is accepted: nobody could know yet.
    assert_eq!(see("a", 0, 0, 3), Verdict::Accepted);
    assert_eq!(see("a", 1, 0, 4), Verdict::Accepted);
    // Lower than the highest epoch of its frames partition: superseded.
    assert_eq!(see("a", 2, 0, 3), Verdict::Superseded);
    // Equal epoch is fine; the mark is per frames partition, not per camera.
    assert_eq!(see("a", 2, 0, 4), Verdict::Accepted);
    assert_eq!(see("b", 0, 1, 1), Verdict::Accepted);
    assert_eq!(see("c", 0, 0, 1), Verdict::Superseded);
    // A superseded record is not a duplicate and does not account for a frame.
    assert_eq!(see("a", 1, 0, 5), Verdict::Duplicate);
    assert_eq!(see("a", 0, 0, 5), Verdict::Duplicate);
    let r = acc.report();
    assert_eq!(r.cameras["a"].superseded, 1);
    assert_eq!(r.cameras["a"].duplicated, 2);
    // Both duplicates came after a takeover (epoch 5 over records of epochs 3 and 4).
    assert_eq!(
        r.cameras["a"]
            .duplicated_across_epochs
            .values()
            .sum::<u64>(),
        2
    );
    assert_eq!(r.cameras["a"].reordered, 0);
    assert_eq!(r.cameras["c"].superseded, 1);
    assert_eq!(r.cameras["c"].unknown_frames, 0);
}

#[test]
fn malformed_frames_and_positional_letters() {
    let mut acc = Accounting::new(false, &[]);
    let h = headers("cam0", 0, 320, 180, FrameEncoding::Jpeg);
    // Key disagrees with the headers: malformed.
    acc.observe_frame(0, 0, Some(b"other"), &h, b"");
    acc.observe_malformed_frame(0, 1);
    acc.observe_malformed_frame(0, 2);
    let mut l = letter(None, None, 0, 1);
    l.reason = DeadLetterReason::BadHeaders;
    acc.observe_dead_letter(&l);
    acc.observe_malformed_record();
    let r = acc.report();
    assert_eq!(
        (r.malformed_frames, r.malformed_lost, r.malformed_records),
        (3, 2, 1)
    );
    assert_eq!(r.total.dead_lettered.get("bad_headers"), Some(&1));
    assert!(r.cameras.is_empty());
    assert!(r.has_loss_or_duplicates());
}

/// The same box moved to the other side of a `width`-pixel frame, clear of where it was.
pub(crate) fn misplace(b: [f32; 4], width: f32) -> [f32; 4] {
    let w = b[2] - b[0];
    let x1 = if b[0] + w / 2.0 < width / 2.0 {
        width - w - 1.0
    } else {
        1.0
    };
    [x1, b[1], x1 + w, b[3]]
}

/// RGB24 payload of frame `seq` of a 320×180 scene.
fn rgb_frame(spec: &SceneSpec, cam: &str, seq: u64) -> (FrameHeaders, Vec<u8>, u64) {
    let h = headers(cam, seq, spec.width, spec.height, FrameEncoding::Rgb24);
    let index = (h.capture_time_us as u64) / 100_000;
    let mut rgb = Vec::new();
    render_rgb(spec, cam, index, &mut rgb);
    (h, rgb, index)
}

#[test]
fn accuracy_scores_first_ok_record_whichever_comes_first() {
    let cam = CameraConfig {
        width: 320,
        height: 180,
        ..CameraConfig::new("cam0")
    };
    let spec = cam.scene();
    let mut acc = Accounting::new(true, std::slice::from_ref(&cam));
    for seq in 0..4u64 {
        let (h, rgb, index) = rgb_frame(&spec, "cam0", seq);
        let mut rec = record("cam0", seq, 0, 1, FrameStatus::Ok);
        rec.detections = ground_truth(&spec, "cam0", index)
            .iter()
            .map(|b| {
                Detection::from_pixels(
                    b.class_id,
                    b.class_name(),
                    0.9,
                    [b.x1, b.y1, b.x2, b.y2],
                    320,
                    180,
                )
            })
            .collect();
        if seq == 1 {
            // One box moved off its object: a false positive and a false negative.
            rec.detections[0].bbox = misplace(rec.detections[0].bbox, 320.0);
        }
        let payload = if seq == 3 {
            vec![128u8; rgb.len()]
        } else {
            rgb
        };
        if seq % 2 == 0 {
            acc.observe_frame(0, seq as i64, Some(b"cam0"), &h, &payload);
            acc.observe_detection(0, seq as i64, &rec);
        } else {
            acc.observe_detection(0, seq as i64, &rec);
            acc.observe_frame(0, seq as i64, Some(b"cam0"), &h, &payload);
        }
        // A duplicate is never scored.
        acc.observe_detection(
            0,
            10 + seq as i64,
            &record("cam0", seq, 0, 1, FrameStatus::Ok),
        );
    }
    let r = acc.report();
    let a = r.cameras["cam0"].accuracy.clone().expect("accuracy");
    assert_eq!(a.frames_evaluated, 3);
    assert_eq!(a.unreadable_frames, 1);
    assert_eq!((a.counts.tp, a.counts.fp, a.counts.fn_), (8, 1, 1));
    assert_eq!(a.precision, Some(8.0 / 9.0));
    assert_eq!(r.total.accuracy, Some(a));
    assert_eq!(r.decoded_frames, 4);
    assert_eq!(r.cameras["cam0"].duplicated, 4);
}

/// A zombie ingest node's frames: cam0 published by its old owner (epoch 3) up to seq 4, the
/// new owner (epoch 4) from seq 10, and two late frames of the old owner (seq 5, 6) read
/// after the new owner's first. The worker dropped seq 5 (`superseded_owner`) but inferred
/// seq 6: the checker counts both as owner-superseded, one of them inferred, and neither the
/// drop nor its low seq counts as reordered.
#[test]
fn frames_of_a_superseded_ingest_owner_are_counted() {
    let mut a = Accounting::new(false, &[]);
    let frame = |seq: u64, epoch: u64| {
        let mut h = headers("cam0", seq, 320, 180, FrameEncoding::Jpeg);
        h.owner_epoch = Some(epoch);
        h
    };
    let order = [
        (0, 3),
        (1, 3),
        (2, 3),
        (3, 3),
        (4, 3),
        (10, 4),
        (5, 3),
        (11, 4),
        (6, 3),
    ];
    for (offset, (seq, epoch)) in order.into_iter().enumerate() {
        a.observe_frame(0, offset as i64, Some(b"cam0"), &frame(seq, epoch), b"");
    }
    for seq in [0, 1, 2, 3, 4, 10] {
        assert_eq!(
            a.observe_detection(0, 0, &record("cam0", seq, 0, 1, FrameStatus::Ok)),
            Verdict::Accepted
        );
    }
    let dropped = record("cam0", 5, 0, 1, FrameStatus::SupersededOwner);
    assert_eq!(a.observe_detection(0, 0, &dropped), Verdict::Accepted);
    a.observe_detection(0, 0, &record("cam0", 11, 0, 1, FrameStatus::Ok));
    // A worker that broke the rule: inferred, and out of order.
    a.observe_detection(0, 0, &record("cam0", 6, 0, 1, FrameStatus::Ok));
    let t = a.report().total;
    assert_eq!(t.owner_superseded_frames, 2, "{t:?}");
    assert_eq!(t.owner_superseded_inferred, 1, "{t:?}");
    assert_eq!(t.skipped.get("superseded_owner"), Some(&1), "{t:?}");
    assert_eq!(t.reordered, 1, "only the inferred zombie frame: {t:?}");
    assert_eq!(t.lost, 0, "{t:?}");
}
