//! Realistic example messages shared by the integration tests.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::PathBuf;

use panoptes_schemas::{
    ControlMessage, DeadLetter, DeadLetterReason, Detection, DetectionRecord, FrameHeaders,
    FrameStatus, ModelRef, SCHEMA_VERSION, StageLatencies, headers, topics,
};
use serde_json::Value;

/// The W3C Trace Context specification's own example.
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// Headers as an ingest node publishes them for a 1080p camera scaled to 640x360, plus a
/// header added by unrelated tooling.
pub fn frame_header_pairs() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (headers::SCHEMA_VERSION, b"1".to_vec()),
        (headers::CAMERA_ID, b"lobby-east.cam_03".to_vec()),
        (headers::SEQ, b"48213".to_vec()),
        (headers::CAPTURE_TIME_US, b"1732802400123456".to_vec()),
        (headers::PTS_NS, b"1607200000000".to_vec()),
        (headers::WIDTH, b"640".to_vec()),
        (headers::HEIGHT, b"360".to_vec()),
        (headers::SOURCE_WIDTH, b"1920".to_vec()),
        (headers::SOURCE_HEIGHT, b"1080".to_vec()),
        (headers::ENCODING, b"jpeg".to_vec()),
        (headers::TRACEPARENT, TRACEPARENT.as_bytes().to_vec()),
        (headers::OWNER_EPOCH, b"7".to_vec()),
        (headers::CAPTURE_CLOCK, b"camera".to_vec()),
        ("x-mirror-origin", b"eu-west".to_vec()),
    ]
}

/// Borrowed view in the shape rdkafka's `Headers` iterator yields.
pub fn borrowed<'a>(pairs: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'static str, Option<&'a [u8]>)> {
    pairs
        .iter()
        .map(|(name, value)| (*name, Some(value.as_slice())))
        .collect()
}

/// [`frame_header_pairs`] decoded through `from_kafka_headers`.
pub fn frame_headers() -> FrameHeaders {
    FrameHeaders::from_kafka_headers(borrowed(&frame_header_pairs()))
        .expect("example headers are valid")
}

/// A detection record for the example frame, with two boxes.
pub fn detection_record() -> DetectionRecord {
    let frame = frame_headers();
    DetectionRecord {
        schema_version: SCHEMA_VERSION,
        camera_id: frame.camera_id.clone(),
        seq: frame.seq,
        capture_time_us: frame.capture_time_us,
        frame_width: frame.width,
        frame_height: frame.height,
        model: ModelRef {
            name: "yolo-people".into(),
            version: "2024-11-02".into(),
        },
        status: FrameStatus::Ok,
        detections: vec![
            Detection::from_pixels(
                0,
                "person",
                0.91,
                [112.5, 40.0, 198.25, 351.0],
                frame.width,
                frame.height,
            ),
            Detection::from_pixels(
                2,
                "car",
                0.47,
                [400.0, 200.0, 640.0, 360.0],
                frame.width,
                frame.height,
            ),
        ],
        latency: StageLatencies {
            queue_ms: 3.2,
            decode_ms: 1.8,
            batch_wait_ms: 4.0,
            inference_ms: 11.5,
            postprocess_ms: 0.4,
            end_to_end_ms: 27.9,
        },
        epoch: 7,
        worker_id: "worker-eu-2".into(),
        partition: 5,
        offset: 1_204_331,
        published_time_us: frame.capture_time_us + 27_900,
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-b7ad6b7169203331-01".into()),
    }
}

/// A dead letter for an undecodable frame.
pub fn dead_letter() -> DeadLetter {
    DeadLetter {
        schema_version: SCHEMA_VERSION,
        camera_id: Some("lobby-east.cam_03".into()),
        seq: Some(48214),
        source_topic: topics::FRAMES.into(),
        partition: 5,
        offset: 1_204_332,
        reason: DeadLetterReason::Undecodable,
        detail: "JPEG decode failed: unexpected end of file after 8192 bytes".into(),
        worker_id: "worker-eu-2".into(),
        time_us: 1_732_802_400_200_000,
    }
}

/// One message of each control variant.
pub fn control_messages() -> Vec<ControlMessage> {
    vec![
        ControlMessage::CameraAssignment {
            schema_version: SCHEMA_VERSION,
            camera_id: "lobby-east.cam_03".into(),
            node_id: "ingest-eu-1".into(),
            epoch: 12,
            region: "eu-west".into(),
        },
        ControlMessage::PartitionAssignment {
            schema_version: SCHEMA_VERSION,
            topic: topics::FRAMES.into(),
            partition: 5,
            worker_id: "worker-eu-2".into(),
            epoch: 7,
            region: "eu-west".into(),
        },
        ControlMessage::Release {
            schema_version: SCHEMA_VERSION,
            node_id: "worker-eu-3".into(),
            epoch: 6,
            cameras: vec![],
            partitions: vec![5, 9],
        },
        ControlMessage::Drain {
            schema_version: SCHEMA_VERSION,
            node_id: "ingest-eu-1".into(),
            deadline_ms: 10_000,
        },
    ]
}

/// Path of a checked-in schema file.
pub fn schema_path(file_name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("json")
        .join(file_name)
}

/// A checked-in schema file, parsed.
pub fn checked_in_schema(file_name: &str) -> Value {
    let path = schema_path(file_name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not JSON: {err}", path.display()))
}
