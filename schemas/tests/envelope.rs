//! Round trips and error cases of the frame envelope, traceparent parsing and message
//! validation, checking that every error names the header or field at fault.

mod common;

use panoptes_schemas::{
    CaptureClock, ControlMessage, DeadLetter, DeadLetterReason, Detection, DetectionRecord,
    EnvelopeError, FrameEncoding, FrameHeaders, FrameStatus, MAX_REPORTED_VALUE_CHARS,
    SCHEMA_VERSION, child_traceparent, headers, new_traceparent, parse_traceparent,
    validate_camera_id,
};

/// Every envelope header, in order: the example's, less the one unrelated tooling added.
fn all_headers() -> Vec<&'static str> {
    let pairs = common::frame_header_pairs();
    pairs
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| !n.starts_with("x-"))
        .collect()
}

/// Decodes the example headers with `name` replaced by `value` (or removed when `None`).
fn decode_with(name: &str, value: Option<&[u8]>) -> Result<FrameHeaders, EnvelopeError> {
    let pairs = common::frame_header_pairs();
    let mut borrowed: Vec<(&str, Option<&[u8]>)> = common::borrowed(&pairs)
        .into_iter()
        .filter(|(n, _)| *n != name)
        .collect();
    if let Some(value) = value {
        borrowed.push((name, Some(value)));
    }
    FrameHeaders::from_kafka_headers(borrowed)
}

fn assert_bad_header(result: Result<FrameHeaders, EnvelopeError>, name: &str) -> String {
    match result {
        Err(EnvelopeError::BadHeader {
            name: got, reason, ..
        }) if got == name => reason,
        other => panic!("expected BadHeader naming {name}, got {other:?}"),
    }
}

#[test]
fn example_headers_decode_to_expected_fields() {
    let frame = common::frame_headers();
    assert_eq!(
        frame,
        FrameHeaders {
            schema_version: 1,
            camera_id: "lobby-east.cam_03".into(),
            seq: 48213,
            capture_time_us: 1_732_802_400_123_456,
            pts_ns: Some(1_607_200_000_000),
            width: 640,
            height: 360,
            source_width: 1920,
            source_height: 1080,
            encoding: FrameEncoding::Jpeg,
            traceparent: common::TRACEPARENT.into(),
            owner_epoch: Some(7),
            capture_clock: CaptureClock::Camera,
        }
    );
    assert!(frame.validate().is_ok());
}

#[test]
fn kafka_headers_round_trip() {
    let mut frame = common::frame_headers();
    for (pts, encoding) in [(Some(0), FrameEncoding::Rgb24), (None, FrameEncoding::Jpeg)] {
        frame.pts_ns = pts;
        frame.encoding = encoding;
        frame.capture_time_us = -42; // before the epoch: odd, but representable
        let pairs = frame.to_kafka_headers();
        let decoded =
            FrameHeaders::from_kafka_headers(pairs.iter().map(|(n, v)| (*n, Some(v.as_bytes()))))
                .unwrap();
        assert_eq!(decoded, frame);
    }
}

#[test]
fn to_kafka_headers_has_one_pair_per_field() {
    let mut frame = common::frame_headers();
    let names: Vec<&str> = frame.to_kafka_headers().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, all_headers());
    assert_eq!(names.len(), 13);
    let pairs = frame.to_kafka_headers();
    assert!(pairs.contains(&(headers::ENCODING, "jpeg".to_owned())));
    assert!(pairs.contains(&(headers::SEQ, "48213".to_owned())));

    frame.pts_ns = None;
    let names: Vec<&str> = frame.to_kafka_headers().iter().map(|(n, _)| *n).collect();
    assert_eq!(names.len(), 12);
    assert!(!names.contains(&headers::PTS_NS));

    // Without a coordinator the frame has no owner epoch, and reads back without one.
    frame.owner_epoch = None;
    let pairs = frame.to_kafka_headers();
    assert!(!pairs.iter().any(|(n, _)| *n == headers::OWNER_EPOCH));
    let decoded =
        FrameHeaders::from_kafka_headers(pairs.iter().map(|(n, v)| (*n, Some(v.as_bytes()))))
            .unwrap();
    assert_eq!(decoded.owner_epoch, None);
}

#[test]
fn unknown_headers_are_ignored() {
    let pairs = common::frame_header_pairs();
    let mut borrowed = common::borrowed(&pairs);
    borrowed.push((
        "Panoptes-Seq",
        Some(b"not checked: names are case-sensitive"),
    ));
    borrowed.push(("x-empty", None));
    assert_eq!(
        FrameHeaders::from_kafka_headers(borrowed).unwrap(),
        common::frame_headers()
    );
}

#[test]
fn each_missing_required_header_is_named() {
    for name in all_headers() {
        let result = decode_with(name, None);
        if name == headers::PTS_NS {
            assert_eq!(result.unwrap().pts_ns, None);
        } else if name == headers::OWNER_EPOCH {
            assert_eq!(result.unwrap().owner_epoch, None);
        } else if name == headers::CAPTURE_CLOCK {
            // Absent means the node's arrival time (records written before the header existed).
            assert_eq!(result.unwrap().capture_clock, CaptureClock::Arrival);
        } else {
            assert_eq!(result, Err(EnvelopeError::MissingHeader(name)), "{name}");
            assert_eq!(result.unwrap_err().header(), Some(name));
        }
    }
}

#[test]
fn unparsable_headers_are_named() {
    let cases: [(&str, &[u8]); 17] = [
        (headers::SCHEMA_VERSION, b"one"),
        (headers::CAMERA_ID, b"-cam"),
        (headers::CAMERA_ID, b""),
        (headers::SEQ, b"-1"),
        (headers::SEQ, b"+5"),
        (headers::SEQ, b"18446744073709551616"),
        (headers::CAPTURE_TIME_US, b"12.5"),
        (headers::PTS_NS, b"soon"),
        (headers::WIDTH, b"0"),
        (headers::WIDTH, b" 640"),
        (headers::HEIGHT, b"16385"),
        (headers::SOURCE_WIDTH, b"0"),
        (headers::SOURCE_HEIGHT, b"1e3"),
        (headers::ENCODING, b"png"),
        (headers::ENCODING, b"JPEG"),
        (
            headers::TRACEPARENT,
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        ),
        (headers::TRACEPARENT, &[0xff, 0xfe]),
    ];
    for (name, value) in cases {
        let reason = assert_bad_header(decode_with(name, Some(value)), name);
        assert!(!reason.is_empty());
    }
}

#[test]
fn bad_header_error_is_readable_and_truncated() {
    let huge = "9".repeat(500);
    let err = decode_with(headers::SEQ, Some(huge.as_bytes())).unwrap_err();
    let EnvelopeError::BadHeader { value, .. } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(value.chars().count(), MAX_REPORTED_VALUE_CHARS);
    let message = err.to_string();
    assert!(message.contains("panoptes-seq"), "{message}");
    assert!(message.len() < 200, "{message}");

    let err = decode_with(headers::WIDTH, Some(b"0")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "header `panoptes-width` has unusable value \"0\": 0 is outside 1..=16384"
    );
}

#[test]
fn header_without_value_or_repeated_is_rejected() {
    let pairs = common::frame_header_pairs();
    let mut borrowed: Vec<_> = common::borrowed(&pairs)
        .into_iter()
        .filter(|(n, _)| *n != headers::HEIGHT)
        .collect();
    borrowed.push((headers::HEIGHT, None));
    let reason = assert_bad_header(FrameHeaders::from_kafka_headers(borrowed), headers::HEIGHT);
    assert!(reason.contains("no value"), "{reason}");

    let pairs = common::frame_header_pairs();
    let mut borrowed = common::borrowed(&pairs);
    let second = new_traceparent();
    borrowed.push((headers::TRACEPARENT, Some(second.as_bytes())));
    let reason = assert_bad_header(
        FrameHeaders::from_kafka_headers(borrowed),
        headers::TRACEPARENT,
    );
    assert!(reason.contains("more than once"), "{reason}");
}

#[test]
fn unsupported_version_is_reported_first() {
    // Version 2 with everything else missing: the version is what the reader must hear about.
    let result = FrameHeaders::from_kafka_headers([(headers::SCHEMA_VERSION, Some(&b"2"[..]))]);
    assert_eq!(
        result,
        Err(EnvelopeError::UnsupportedVersion {
            found: 2,
            supported: SCHEMA_VERSION
        })
    );
    assert_eq!(
        FrameHeaders::from_kafka_headers(std::iter::empty()),
        Err(EnvelopeError::MissingHeader(headers::SCHEMA_VERSION))
    );
}

#[test]
fn validate_names_the_field() {
    let good = common::frame_headers();
    type Break = Box<dyn Fn(&mut FrameHeaders)>;
    let cases: Vec<(&str, Break)> = vec![
        ("camera_id", Box::new(|f| f.camera_id = "a/b".into())),
        ("width", Box::new(|f| f.width = 0)),
        ("height", Box::new(|f| f.height = 20_000)),
        ("source_width", Box::new(|f| f.source_width = 0)),
        ("source_height", Box::new(|f| f.source_height = 16_385)),
        (
            "traceparent",
            Box::new(|f| f.traceparent = "not-a-trace".into()),
        ),
    ];
    for (field, break_it) in cases {
        let mut frame = good.clone();
        break_it(&mut frame);
        assert_eq!(frame.validate().unwrap_err().field(), Some(field));
    }
    let mut future = good;
    future.schema_version = 9;
    assert!(matches!(
        future.validate(),
        Err(EnvelopeError::UnsupportedVersion {
            found: 9,
            supported: 1
        })
    ));
}

#[test]
fn record_key_must_match_camera_id() {
    let frame = common::frame_headers();
    assert!(frame.check_record_key(Some(b"lobby-east.cam_03")).is_ok());
    assert!(matches!(
        frame.check_record_key(Some(b"other")),
        Err(EnvelopeError::Invalid(_))
    ));
    assert!(frame.check_record_key(None).is_err());
}

#[test]
fn traceparent_parsing() {
    let (trace, span, flags) = parse_traceparent(common::TRACEPARENT).unwrap();
    assert_eq!(hex::encode(trace), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex::encode(span), "00f067aa0ba902b7");
    assert_eq!(flags, 1);

    let t = common::TRACEPARENT;
    let bad = [
        (
            "all-zero trace id",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01".to_owned(),
        ),
        (
            "all-zero span id",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".to_owned(),
        ),
        ("version ff", t.replacen("00", "ff", 1)),
        ("uppercase hex", t.to_uppercase()),
        (
            "uppercase flags",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A".to_owned(),
        ),
        ("short trace id", t.replacen("4bf9", "4bf", 1)),
        ("long span id", t.replacen("00f0", "00f00", 1)),
        ("trailing data", format!("{t}-00")),
        ("missing flags", t[..52].to_owned()),
        ("wrong separator", t.replacen('-', "_", 1)),
        ("non-hex", t.replacen('b', "g", 1)),
        ("non-ASCII", t.replacen('b', "é", 1)),
        ("empty", String::new()),
    ];
    for (what, s) in bad {
        let err = parse_traceparent(&s).expect_err(what);
        assert_eq!(err.field(), Some("traceparent"), "{what}: {err}");
    }
}

#[test]
fn fresh_traceparents() {
    let mut seen = std::collections::HashSet::new();
    for _ in 0..1000 {
        let t = new_traceparent();
        let (trace, span, flags) = parse_traceparent(&t).unwrap();
        assert_ne!(trace, [0; 16]);
        assert_ne!(span, [0; 8]);
        assert_eq!(flags, 1);
        assert!(seen.insert(t), "duplicate traceparent");
    }
    let child = child_traceparent(common::TRACEPARENT).unwrap();
    assert_eq!(
        parse_traceparent(&child).unwrap().0,
        parse_traceparent(common::TRACEPARENT).unwrap().0
    );
    assert!(child_traceparent("garbage").is_err());
}

#[test]
fn camera_id_rules() {
    assert!(validate_camera_id("lobby-east.cam_03").is_ok());
    assert!(validate_camera_id(&"c".repeat(64)).is_ok());
    for bad in ["", ".cam", "-cam", "cam 1", "cam/1", "cäm", &"c".repeat(65)] {
        let err = validate_camera_id(bad).unwrap_err();
        assert_eq!(err.field(), Some("camera_id"), "{bad:?}");
    }
}

#[test]
fn detection_record_round_trip_and_errors() {
    let record = common::detection_record();
    let bytes = record.to_json().unwrap();
    assert_eq!(DetectionRecord::from_json(&bytes).unwrap(), record);

    type Break = Box<dyn Fn(&mut DetectionRecord)>;
    let cases: Vec<(&str, Break)> = vec![
        ("camera_id", Box::new(|r| r.camera_id = ".x".into())),
        ("frame_width", Box::new(|r| r.frame_width = 0)),
        ("model.name", Box::new(|r| r.model.name.clear())),
        (
            "detections[0].bbox",
            Box::new(|r| r.detections[0].bbox[2] = 641.0),
        ),
        (
            "detections[1].bbox",
            Box::new(|r| r.detections[1].bbox[1] = 361.0),
        ),
        (
            "detections[0].bbox",
            Box::new(|r| r.detections[0].bbox[0] = -1.0),
        ),
        (
            "detections[1].bbox_norm[0]",
            Box::new(|r| r.detections[1].bbox_norm[0] = 1.5),
        ),
        (
            "detections[0].score",
            Box::new(|r| r.detections[0].score = -0.1),
        ),
        (
            "detections[1].score",
            Box::new(|r| r.detections[1].score = 1.01),
        ),
        (
            "detections",
            Box::new(|r| r.status = FrameStatus::ShedOverload),
        ),
        (
            "latency.end_to_end_ms",
            Box::new(|r| r.latency.end_to_end_ms = f32::INFINITY),
        ),
        ("worker_id", Box::new(|r| r.worker_id = "worker 1".into())),
        ("partition", Box::new(|r| r.partition = -1)),
        ("offset", Box::new(|r| r.offset = -1)),
        (
            "traceparent",
            Box::new(|r| r.traceparent = Some("00-zz".into())),
        ),
    ];
    for (field, break_it) in cases {
        let mut broken = record.clone();
        break_it(&mut broken);
        let err = broken.validate().unwrap_err();
        assert_eq!(err.field(), Some(field), "{err}");
        assert_eq!(broken.to_json().unwrap_err(), err, "to_json must validate");
    }

    // x1 > x2 (a swapped box)
    let mut swapped = record.clone();
    let d = &mut swapped.detections[0];
    d.bbox = [d.bbox[2], d.bbox[1], d.bbox[0], d.bbox[3]];
    assert_eq!(
        swapped.validate().unwrap_err().field(),
        Some("detections[0].bbox")
    );

    // A box touching the frame edges is inside it.
    let edge = Detection::from_pixels(1, "bus", 1.0, [0.0, 0.0, 640.0, 360.0], 640, 360);
    assert_eq!(edge.bbox_norm, [0.0, 0.0, 1.0, 1.0]);
    let mut full = record;
    full.detections = vec![edge];
    assert!(full.validate().is_ok());
}

#[test]
fn json_decoding_reports_versions_and_shapes() {
    let mut value = serde_json::to_value(common::detection_record()).unwrap();
    value["schema_version"] = 2.into();
    value["new_field_in_v2"] = true.into();
    assert_eq!(
        DetectionRecord::from_json(value.to_string().as_bytes()),
        Err(EnvelopeError::UnsupportedVersion {
            found: 2,
            supported: 1
        })
    );
    let err = DetectionRecord::from_json(b"{\"schema_version\": 1}").unwrap_err();
    assert!(matches!(err, EnvelopeError::Json(_)), "{err:?}");
    assert!(err.to_string().contains("missing field"), "{err}");
    assert!(matches!(
        DeadLetter::from_json(b"not json"),
        Err(EnvelopeError::Json(_))
    ));
}

#[test]
fn dead_letter_round_trip_and_errors() {
    let letter = common::dead_letter();
    let bytes = letter.to_json().unwrap();
    assert_eq!(DeadLetter::from_json(&bytes).unwrap(), letter);
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(value["reason"], "undecodable");
    assert!(value.get("payload").is_none());

    let mut anonymous = letter.clone();
    anonymous.camera_id = None;
    anonymous.seq = None;
    anonymous.reason = DeadLetterReason::BadHeaders;
    let bytes = anonymous.to_json().unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("camera_id"));
    assert_eq!(DeadLetter::from_json(&bytes).unwrap(), anonymous);

    type Break = Box<dyn Fn(&mut DeadLetter)>;
    let cases: Vec<(&str, Break)> = vec![
        ("camera_id", Box::new(|d| d.camera_id = Some(String::new()))),
        ("source_topic", Box::new(|d| d.source_topic.clear())),
        ("partition", Box::new(|d| d.partition = -3)),
        ("offset", Box::new(|d| d.offset = -3)),
        ("detail", Box::new(|d| d.detail = "é".repeat(1025))),
        ("worker_id", Box::new(|d| d.worker_id = "\n".into())),
    ];
    for (field, break_it) in cases {
        let mut broken = letter.clone();
        break_it(&mut broken);
        assert_eq!(broken.validate().unwrap_err().field(), Some(field));
    }
    let mut long = letter;
    long.detail = DeadLetter::truncate_detail(&"é".repeat(5000));
    assert!(long.validate().is_ok());
}

#[test]
fn dead_letter_reason_from_header_errors() {
    let err = decode_with(headers::SOURCE_HEIGHT, Some(b"0")).unwrap_err();
    assert_eq!(
        DeadLetterReason::for_envelope_error(&err),
        DeadLetterReason::BadDimensions
    );
    let err = decode_with(headers::ENCODING, Some(b"png")).unwrap_err();
    assert_eq!(
        DeadLetterReason::for_envelope_error(&err),
        DeadLetterReason::BadHeaders
    );
}

#[test]
fn control_messages_round_trip() {
    for message in common::control_messages() {
        let bytes = message.to_json().unwrap();
        assert_eq!(ControlMessage::from_json(&bytes).unwrap(), message);
        assert_eq!(message.schema_version(), SCHEMA_VERSION);
        assert!(!message.node_id().is_empty());
    }
    let json = serde_json::to_value(&common::control_messages()[1]).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "type": "partition_assignment",
            "schema_version": 1,
            "topic": "panoptes.frames",
            "partition": 5,
            "worker_id": "worker-eu-2",
            "epoch": 7,
            "region": "eu-west"
        })
    );
}

#[test]
fn control_message_errors() {
    let cases = [
        (
            "camera_id",
            ControlMessage::CameraAssignment {
                schema_version: 1,
                camera_id: "bad id".into(),
                node_id: "n".into(),
                epoch: 1,
                region: "r".into(),
            },
        ),
        (
            "region",
            ControlMessage::PartitionAssignment {
                schema_version: 1,
                topic: "t".into(),
                partition: 0,
                worker_id: "w".into(),
                epoch: 1,
                region: String::new(),
            },
        ),
        (
            "partitions[1]",
            ControlMessage::Release {
                schema_version: 1,
                node_id: "n".into(),
                epoch: 1,
                cameras: vec![],
                partitions: vec![0, -2],
            },
        ),
        (
            "node_id",
            ControlMessage::Drain {
                schema_version: 1,
                node_id: String::new(),
                deadline_ms: 0,
            },
        ),
    ];
    for (field, message) in cases {
        assert_eq!(message.validate().unwrap_err().field(), Some(field));
    }
    let future = ControlMessage::Drain {
        schema_version: 2,
        node_id: "n".into(),
        deadline_ms: 0,
    };
    assert!(matches!(
        future.validate(),
        Err(EnvelopeError::UnsupportedVersion { found: 2, .. })
    ));
    let unknown = br#"{"type": "reboot", "schema_version": 1, "node_id": "n"}"#;
    assert!(matches!(
        ControlMessage::from_json(unknown),
        Err(EnvelopeError::Json(_))
    ));
}
