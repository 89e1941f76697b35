//! Poisoned and stale frames, produced straight into the frames topic: a garbage payload with
//! valid headers, a record with bad headers and a JPEG whose size disagrees with its envelope
//! go to the dead-letter topic with their reason; frames captured long ago are skipped
//! (`skipped_stale`, no inference); the worker goes on and the checker accounts for all.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::node::{Rig, finish_when_settled};
use panoptes_scene::camera::CameraConfig;
use panoptes_schemas::FrameHeaders;
use panoptes_testkit::kafka::{FrameProducer, frame_headers};
use panoptes_testkit::metric_value;

/// The envelope of a 1280×720 frame published at 640×360, captured `age` ago.
fn headers(camera: &str, seq: u64, age: Duration) -> FrameHeaders {
    let mut h = frame_headers(camera, seq, (640, 360), age);
    (h.source_width, h.source_height) = (1280, 720);
    h
}

#[test]
fn poisoned_and_stale_frames_are_accounted() -> Result<()> {
    let rig = Rig::new(2)?;
    let Rig { broker, t, .. } = &rig;
    let checker = rig.checker(Vec::new())?;
    let worker = rig.worker(|_| ())?;
    let producer = FrameProducer::new(&broker.bootstrap, &[])?;
    let mut spec = CameraConfig::new("cam0").scene();
    spec.width = 1280;
    spec.height = 720;
    let fresh = Duration::ZERO;
    // cam0 on partition 0: 0..10 good, 4 garbage payload, 7 wrong size.
    for seq in 0..10u64 {
        let (jpeg, _) = common::simulator_frame(&spec, "cam0", seq);
        let mut h = headers("cam0", seq, fresh);
        let payload = match seq {
            4 => b"definitely not a jpeg".to_vec(),
            7 => {
                h.width = 320;
                jpeg
            }
            _ => jpeg,
        };
        producer.send(&t.frames, 0, &h, &payload)?;
    }
    // cam1 on partition 1: a record without any envelope, one with an unparsable seq, then
    // 3 frames captured 10 s ago (stale under the default 2 s policy), then 3 fresh ones.
    let (jpeg, _) = common::simulator_frame(&spec, "cam1", 0);
    producer.send_raw(&t.frames, 1, "cam1", &[], &jpeg)?;
    let mut bad = headers("cam1", 0, fresh).to_kafka_headers();
    for (key, value) in &mut bad {
        if *key == panoptes_schemas::headers::SEQ {
            *value = "seven".to_string();
        }
    }
    producer.send_raw(&t.frames, 1, "cam1", &bad, &jpeg)?;
    for seq in 1..7u64 {
        let age = if seq <= 3 {
            Duration::from_secs(10)
        } else {
            fresh
        };
        producer.send(&t.frames, 1, &headers("cam1", seq, age), &jpeg)?;
    }
    producer.flush()?;

    let report = finish_when_settled(checker, Duration::from_secs(30))?;
    println!("{}", report.to_markdown());
    let cam0 = &report.cameras["cam0"];
    assert_eq!(cam0.lost, 0);
    assert_eq!(cam0.detections_accepted, 8);
    assert_eq!(cam0.dead_lettered.get("undecodable"), Some(&1), "{cam0:?}");
    assert_eq!(
        cam0.dead_lettered.get("bad_dimensions"),
        Some(&1),
        "{cam0:?}"
    );
    let cam1 = &report.cameras["cam1"];
    assert_eq!(cam1.lost, 0);
    assert_eq!(cam1.skipped.get("skipped_stale"), Some(&3), "{cam1:?}");
    assert_eq!(report.malformed_frames, 2);
    assert_eq!(
        report.malformed_lost, 0,
        "bad-header frames are dead-lettered"
    );
    assert_eq!(report.total.duplicated, 0);
    assert_eq!(report.total.reordered, 0);

    let m = worker.metrics();
    let v = |s: &str| metric_value(&m, s).unwrap_or(0.0);
    assert_eq!(
        v("panoptes_worker_dead_letters_total{reason=\"undecodable\"}"),
        1.0
    );
    assert_eq!(
        v("panoptes_worker_dead_letters_total{reason=\"bad_dimensions\"}"),
        1.0
    );
    assert_eq!(
        v("panoptes_worker_dead_letters_total{reason=\"bad_headers\"}"),
        2.0
    );
    assert_eq!(
        v("panoptes_worker_frames_skipped_total{reason=\"skipped_stale\"}"),
        3.0
    );
    assert_eq!(v("panoptes_worker_records_total{status=\"ok\"}"), 11.0);
    Ok(())
}
