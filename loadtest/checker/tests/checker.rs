//! The accounting checker against a real Kafka-protocol broker (`panoptes-devbroker`):
//! synthetic frames (real scene renders, downscaled to half and JPEG-encoded) and detection
//! records built from ground truth, with known faults injected; the report must show
//! exactly those faults, and the binary must agree with the library.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use panoptes_checker::{AccuracyReport, Checker, Progress, ReaderConfig, Report};
use panoptes_scene::camera::CameraConfig;
use panoptes_scene::{SceneSpec, frame_index_at, ground_truth, render_rgb};
use panoptes_schemas::{
    DeadLetter, DeadLetterReason, Detection, DetectionRecord, FrameEncoding, FrameHeaders,
    FrameStatus, ModelRef, SCHEMA_VERSION, StageLatencies, new_traceparent,
};
use panoptes_testkit::fixtures::{self, halve_rgb};
use panoptes_testkit::{DevBroker, unique_name};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

/// Capture time of seq 0 (Unix µs); frame `seq` is captured `seq` × 100 ms later.
const BASE_US: i64 = 1_700_000_000_000_000;
const FPS: u32 = 10;

fn cameras() -> Vec<CameraConfig> {
    [
        "id=cam0,width=640,height=360,fps=10,objects=3,seed=1",
        "id=cam1,width=640,height=360,fps=10,objects=3,seed=2",
    ]
    .iter()
    .map(|s| s.parse().expect("camera spec"))
    .collect()
}

struct Topics {
    frames: String,
    detections: String,
    dlq: String,
}

fn topics(broker: &DevBroker) -> Result<Topics> {
    let t = Topics {
        frames: unique_name("frames"),
        detections: unique_name("detections"),
        dlq: unique_name("dlq"),
    };
    broker.create_topic(&t.frames, 2)?;
    broker.create_topic(&t.detections, 2)?;
    broker.create_topic(&t.dlq, 1)?;
    Ok(t)
}

fn capture_us(seq: u64) -> i64 {
    BASE_US + seq as i64 * 100_000
}

/// The frame index the scene shows at `seq`'s capture time.
fn frame_index(seq: u64) -> u64 {
    frame_index_at(capture_us(seq) as u128 * 1000, FPS)
}

/// Renders a frame, downscales it to half (2×2 box filter) and JPEG-encodes it.
fn half_jpeg(spec: &SceneSpec, cam: &str, index: u64) -> Vec<u8> {
    let mut rgb = Vec::new();
    render_rgb(spec, cam, index, &mut rgb);
    let (w, h) = (spec.width as usize, spec.height as usize);
    encode_jpeg(&halve_rgb(&rgb, w, h), w / 2, h / 2)
}

/// An accuracy report's true positives, false positives and false negatives.
fn box_counts(a: &AccuracyReport) -> (u64, u64, u64) {
    (a.counts.tp, a.counts.fp, a.counts.fn_)
}

fn encode_jpeg(rgb: &[u8], w: usize, h: usize) -> Vec<u8> {
    fixtures::encode_jpeg(rgb, w, h, 85)
}

fn frame_headers(cam: &str, seq: u64) -> FrameHeaders {
    FrameHeaders {
        schema_version: SCHEMA_VERSION,
        camera_id: cam.into(),
        seq,
        capture_time_us: capture_us(seq),
        pts_ns: None,
        width: 320,
        height: 180,
        source_width: 640,
        source_height: 360,
        encoding: FrameEncoding::Jpeg,
        traceparent: new_traceparent(),
        owner_epoch: None,
        capture_clock: Default::default(),
    }
}

/// A record with perfect boxes (ground truth scaled to the half-size frame).
fn record(
    spec: &SceneSpec,
    cam: &str,
    seq: u64,
    partition: i32,
    offset: i64,
    epoch: u64,
) -> DetectionRecord {
    let detections = ground_truth(spec, cam, frame_index(seq))
        .iter()
        .map(|b| {
            let bbox = [b.x1 / 2.0, b.y1 / 2.0, b.x2 / 2.0, b.y2 / 2.0];
            Detection::from_pixels(b.class_id, b.class_name(), 0.9, bbox, 320, 180)
        })
        .collect();
    DetectionRecord {
        schema_version: SCHEMA_VERSION,
        camera_id: cam.into(),
        seq,
        capture_time_us: capture_us(seq),
        frame_width: 320,
        frame_height: 180,
        model: ModelRef {
            name: "synthetic".into(),
            version: "1".into(),
        },
        status: FrameStatus::Ok,
        detections,
        latency: StageLatencies::default(),
        epoch,
        worker_id: format!("worker-e{epoch}"),
        partition,
        offset,
        published_time_us: capture_us(seq) + 50_000,
        traceparent: None,
    }
}

/// Moves a box to the other side of the 320-px frame, clear of its object.
fn misplace(d: &Detection) -> Detection {
    let [x1, y1, x2, y2] = d.bbox;
    let w = x2 - x1;
    let nx = if x1 + w / 2.0 < 160.0 {
        320.0 - w - 1.0
    } else {
        1.0
    };
    Detection::from_pixels(
        d.class_id,
        d.label.clone(),
        d.score,
        [nx, y1, nx + w, y2],
        320,
        180,
    )
}

struct Publisher {
    producer: BaseProducer,
}

impl Publisher {
    fn new(bootstrap: &str) -> Result<Self> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("max.in.flight.requests.per.connection", "1")
            .set("linger.ms", "5")
            .create()
            .context("producer")?;
        Ok(Self { producer })
    }

    fn send(
        &self,
        topic: &str,
        partition: i32,
        key: &str,
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<()> {
        let mut rec = BaseRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(payload);
        if let Some(h) = headers {
            rec = rec.headers(h);
        }
        self.producer.send(rec).map_err(|(e, _)| e)?;
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    fn frame(&self, topic: &str, partition: i32, h: &FrameHeaders, payload: &[u8]) -> Result<()> {
        let mut headers = OwnedHeaders::new();
        for (key, value) in h.to_kafka_headers() {
            headers = headers.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        self.send(topic, partition, &h.camera_id, payload, Some(headers))
    }

    fn detection(&self, topic: &str, r: &DetectionRecord) -> Result<()> {
        self.send(topic, r.partition, &r.camera_id, &r.to_json()?, None)
    }

    fn flush(&self) -> Result<()> {
        self.producer.flush(Duration::from_secs(10))?;
        Ok(())
    }
}

fn start_checker(broker: &DevBroker, t: &Topics) -> Result<Checker> {
    let mut config = ReaderConfig::new(&broker.bootstrap);
    config.frames_topic = t.frames.clone();
    config.detections_topic = t.detections.clone();
    config.dlq_topic = t.dlq.clone();
    config.accuracy = true;
    config.cameras = cameras();
    config.drain = Duration::from_secs(10);
    Ok(Checker::start(config)?)
}

/// Waits until the checker has read `want` records, then stops it and returns the report.
fn finish_after(checker: Checker, want: Progress) -> Result<Report> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while checker.progress() != want {
        if Instant::now() > deadline || checker.is_finished() {
            bail!("checker read {:?}, expected {want:?}", checker.progress());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(checker.finish()?)
}

fn counts(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

#[test]
fn injected_faults_are_counted_exactly() -> Result<()> {
    let broker = DevBroker::start(1)?;
    let t = topics(&broker)?;
    let checker = start_checker(&broker, &t)?;
    let cams = cameras();
    let specs: Vec<SceneSpec> = cams.iter().map(CameraConfig::scene).collect();
    let publisher = Publisher::new(&broker.bootstrap)?;

    // Frames: cam0 → partition 0, seq 0..20; cam1 → partition 1, seq 0..20 without 17
    // (dropped before Kafka: a gap), and seq 19 an unreadable flat-gray picture.
    let gray = encode_jpeg(&vec![128u8; 320 * 180 * 3], 320, 180);
    let mut frame_offsets = [Vec::new(), Vec::new()];
    for (p, cam) in ["cam0", "cam1"].iter().enumerate() {
        for seq in 0..20u64 {
            if *cam == "cam1" && seq == 17 {
                continue;
            }
            let payload = if *cam == "cam1" && seq == 19 {
                gray.clone()
            } else {
                half_jpeg(&specs[p], cam, frame_index(seq))
            };
            frame_offsets[p].push(seq);
            publisher.frame(&t.frames, p as i32, &frame_headers(cam, seq), &payload)?;
        }
    }
    let offset = |p: usize, seq: u64| {
        frame_offsets[p]
            .iter()
            .position(|s| *s == seq)
            .expect("frame") as i64
    };

    // cam0 detections (epoch 1): 3 lost, 5 duplicated, 8 before 7, 10 skipped_stale,
    // 12 dead-lettered, 14 with one box misplaced (one false positive, one false negative).
    let mut n_detections = 0;
    for seq in [
        0, 1, 2, 4, 5, 5, 6, 8, 7, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19,
    ] {
        let mut r = record(&specs[0], "cam0", seq, 0, offset(0, seq), 1);
        if seq == 10 {
            r.status = FrameStatus::SkippedStale;
            r.detections.clear();
        }
        if seq == 14 {
            r.detections[0] = misplace(&r.detections[0]);
        }
        publisher.detection(&t.detections, &r)?;
        n_detections += 1;
    }
    let letter = DeadLetter {
        schema_version: SCHEMA_VERSION,
        camera_id: Some("cam0".into()),
        seq: Some(12),
        source_topic: t.frames.clone(),
        partition: 0,
        offset: offset(0, 12),
        reason: DeadLetterReason::Undecodable,
        detail: "synthetic".into(),
        worker_id: "worker-e1".into(),
        time_us: BASE_US,
    };
    publisher.send(&t.dlq, 0, "cam0", &letter.to_json()?, None)?;

    // cam1: epoch 1 up to seq 9, epoch 2 from seq 10; a zombie (epoch 1) writes seq 11
    // right after the first epoch-2 record.
    for seq in (0..20u64).filter(|s| *s != 17) {
        let epoch = if seq < 10 { 1 } else { 2 };
        publisher.detection(
            &t.detections,
            &record(&specs[1], "cam1", seq, 1, offset(1, seq), epoch),
        )?;
        n_detections += 1;
        if seq == 10 {
            publisher.detection(
                &t.detections,
                &record(&specs[1], "cam1", 11, 1, offset(1, 11), 1),
            )?;
            n_detections += 1;
        }
    }
    publisher.flush()?;

    let report = finish_after(
        checker,
        Progress {
            frames: 39,
            detections: n_detections,
            dead_letters: 1,
        },
    )?;
    eprintln!("{}", report.to_markdown());

    let c0 = &report.cameras["cam0"];
    assert_eq!(c0.frames, 20);
    assert_eq!(c0.detections_accepted, 19);
    assert_eq!((c0.lost, c0.lost_examples.as_slice()), (1, &[3][..]));
    assert_eq!((c0.duplicated, c0.reordered, c0.superseded), (1, 1, 0));
    assert_eq!(c0.skipped, counts(&[("skipped_stale", 1)]));
    assert_eq!(c0.dead_lettered, counts(&[("undecodable", 1)]));
    assert_eq!((c0.unknown_frames, c0.gaps), (0, 0));
    let a0 = c0.accuracy.as_ref().expect("cam0 accuracy");
    assert_eq!(
        (
            a0.frames_evaluated,
            a0.unreadable_frames,
            a0.mismatched_frames
        ),
        (17, 0, 0)
    );
    assert_eq!(box_counts(a0), (50, 1, 1));
    assert_eq!(
        (a0.precision, a0.recall),
        (Some(50.0 / 51.0), Some(50.0 / 51.0))
    );

    let c1 = &report.cameras["cam1"];
    assert_eq!(c1.frames, 19);
    assert_eq!(c1.detections_accepted, 19);
    assert_eq!((c1.lost, c1.duplicated, c1.reordered), (0, 0, 0));
    assert_eq!((c1.superseded, c1.unknown_frames, c1.gaps), (1, 0, 1));
    assert!(c1.skipped.is_empty() && c1.dead_lettered.is_empty());
    let a1 = c1.accuracy.as_ref().expect("cam1 accuracy");
    assert_eq!((a1.frames_evaluated, a1.unreadable_frames), (18, 1));
    assert_eq!(box_counts(a1), (54, 0, 0));

    let total = &report.total;
    assert_eq!(
        (total.frames, total.detections_accepted, total.lost),
        (39, 38, 1)
    );
    assert_eq!(
        (total.duplicated, total.reordered, total.superseded),
        (1, 1, 1)
    );
    assert_eq!((total.skipped_total(), total.dead_lettered_total()), (1, 1));
    assert_eq!((total.unknown_frames, total.gaps), (0, 1));
    let a = total.accuracy.as_ref().expect("total accuracy");
    assert_eq!(box_counts(a), (104, 1, 1));
    assert_eq!(
        (a.precision, a.recall),
        (Some(104.0 / 105.0), Some(104.0 / 105.0))
    );
    assert_eq!((report.malformed_frames, report.malformed_records), (0, 0));
    assert_eq!(report.decoded_frames, 39);
    eprintln!(
        "decode + barcode per 320x180 JPEG frame: {:.3} ms",
        report.decode_seconds * 1e3 / report.decoded_frames as f64
    );

    // The binary reads the same topics from the beginning and agrees; --strict fails the run.
    let json = std::env::temp_dir().join(format!("{}.json", unique_name("check")));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_panoptes-check"));
    cmd.args([
        "--bootstrap",
        &broker.bootstrap,
        "--duration",
        "2s",
        "--drain",
        "10s",
    ])
    .args([
        "--frames-topic",
        &t.frames,
        "--detections-topic",
        &t.detections,
    ])
    .args(["--dlq-topic", &t.dlq, "--accuracy", "--strict", "--json"])
    .arg(&json);
    for cam in [
        "id=cam0,width=640,height=360,fps=10,objects=3,seed=1",
        "id=cam1,width=640,height=360,fps=10,objects=3,seed=2",
    ] {
        cmd.args(["--camera", cam]);
    }
    let started = Instant::now();
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "strict exit; stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| `cam0` | 20 | 19 | 1 | 1 | 1 |"),
        "{stdout}"
    );
    // Compared as JSON values: both sides then went through the same float parsing.
    let mut from_bin: serde_json::Value = serde_json::from_slice(&std::fs::read(&json)?)?;
    std::fs::remove_file(&json).ok();
    let from_lib = serde_json::from_str::<serde_json::Value>(&serde_json::to_string(&report)?)?;
    from_bin["decode_seconds"] = from_lib["decode_seconds"].clone();
    assert_eq!(from_bin, from_lib);
    eprintln!("binary run: {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

#[test]
fn clean_run_reports_zero_faults_and_perfect_accuracy() -> Result<()> {
    let broker = DevBroker::start(1)?;
    let t = topics(&broker)?;
    let checker = start_checker(&broker, &t)?;
    let specs: Vec<SceneSpec> = cameras().iter().map(CameraConfig::scene).collect();
    let publisher = Publisher::new(&broker.bootstrap)?;
    for seq in 0..15u64 {
        for (p, cam) in ["cam0", "cam1"].iter().enumerate() {
            let payload = half_jpeg(&specs[p], cam, frame_index(seq));
            publisher.frame(&t.frames, p as i32, &frame_headers(cam, seq), &payload)?;
            // Interleave: the record is published right after its frame.
            let r = record(&specs[p], cam, seq, p as i32, seq as i64, 7);
            publisher.detection(&t.detections, &r)?;
        }
    }
    publisher.flush()?;
    let report = finish_after(
        checker,
        Progress {
            frames: 30,
            detections: 30,
            dead_letters: 0,
        },
    )?;
    eprintln!("{}", report.to_markdown());
    for r in report.cameras.values().chain([&report.total]) {
        assert_eq!(
            r.lost + r.duplicated + r.reordered + r.superseded,
            0,
            "{r:?}"
        );
        assert_eq!(r.skipped_total() + r.dead_lettered_total(), 0, "{r:?}");
        assert_eq!(r.unknown_frames + r.gaps, 0, "{r:?}");
        let a = r.accuracy.as_ref().expect("accuracy");
        assert_eq!((a.counts.fp, a.counts.fn_, a.unreadable_frames), (0, 0, 0));
        assert_eq!((a.precision, a.recall), (Some(1.0), Some(1.0)));
    }
    assert_eq!(
        (report.total.frames, report.total.detections_accepted),
        (30, 30)
    );
    assert_eq!(
        report.total.accuracy.as_ref().map(|a| a.counts.tp),
        Some(90)
    );
    assert!(!report.has_loss_or_duplicates());
    Ok(())
}
