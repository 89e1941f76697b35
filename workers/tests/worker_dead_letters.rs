//! Poisoned and stale frames, produced straight into the frames topic: a garbage payload with
//! valid headers, a record with bad headers and a JPEG whose size disagrees with its envelope
//! go to the dead-letter topic with their reason; frames captured long ago are skipped
//! (`skipped_stale`, no inference); the worker goes on and the checker accounts for all.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::node::{Worker, checker, finish_when_settled, topics};
use panoptes_loadtest::camsim::config::CameraConfig;
use panoptes_schemas::{FrameEncoding, FrameHeaders, SCHEMA_VERSION, new_traceparent};
use panoptes_testkit::{DevBroker, metric_value, unique_name};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

fn headers(camera: &str, seq: u64, age: Duration) -> FrameHeaders {
    FrameHeaders {
        schema_version: SCHEMA_VERSION,
        camera_id: camera.into(),
        seq,
        capture_time_us: panoptes_workers::work::now_us() - age.as_micros() as i64,
        pts_ns: None,
        width: 640,
        height: 360,
        source_width: 1280,
        source_height: 720,
        encoding: FrameEncoding::Jpeg,
        traceparent: new_traceparent(),
    }
}

fn send(
    p: &BaseProducer,
    topic: &str,
    partition: i32,
    key: &str,
    h: Option<&FrameHeaders>,
    raw: &[(&str, &str)],
    payload: &[u8],
) -> Result<()> {
    let mut owned = OwnedHeaders::new();
    if let Some(h) = h {
        for (key, value) in h.to_kafka_headers() {
            owned = owned.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
    }
    for (key, value) in raw {
        owned = owned.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    p.send(
        BaseRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(payload)
            .headers(owned),
    )
    .map_err(|(e, _)| e)?;
    p.poll(Duration::ZERO);
    Ok(())
}

#[test]
fn poisoned_and_stale_frames_are_accounted() -> Result<()> {
    let models = common::models();
    let broker = DevBroker::start(1)?;
    let t = topics(&broker, 2)?;
    let checker = checker(&broker.bootstrap, &t, Vec::new())?;
    let worker = Worker::start(
        &broker.bootstrap,
        &t,
        &unique_name("group"),
        &models.reference,
        "",
        "",
    )?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .set("linger.ms", "5")
        .create()?;
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
        send(&producer, &t.frames, 0, "cam0", Some(&h), &[], &payload)?;
    }
    // cam1 on partition 1: a record without any envelope, one with an unparsable seq, then
    // 3 frames captured 10 s ago (stale under the default 2 s policy), then 3 fresh ones.
    let (jpeg, _) = common::simulator_frame(&spec, "cam1", 0);
    send(&producer, &t.frames, 1, "cam1", None, &[], &jpeg)?;
    let mut bad = OwnedHeaders::new();
    for (key, value) in headers("cam1", 0, fresh).to_kafka_headers() {
        let value = if key == panoptes_schemas::headers::SEQ {
            "seven".to_string()
        } else {
            value
        };
        bad = bad.insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    }
    producer
        .send(
            BaseRecord::to(&t.frames)
                .partition(1)
                .key("cam1")
                .payload(&jpeg)
                .headers(bad),
        )
        .map_err(|(e, _)| e)?;
    for seq in 1..7u64 {
        let age = if seq <= 3 {
            Duration::from_secs(10)
        } else {
            fresh
        };
        send(
            &producer,
            &t.frames,
            1,
            "cam1",
            Some(&headers("cam1", seq, age)),
            &[],
            &jpeg,
        )?;
    }
    producer.flush(Duration::from_secs(10))?;

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
