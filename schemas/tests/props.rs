//! Property-based tests of every wire format a node reads from the outside: the frame
//! envelope (Kafka headers), detection records, dead letters and control messages.
//!
//! For each: valid values survive their round trip unchanged; arbitrary bytes, arbitrary
//! header lists and valid documents with one field replaced by an arbitrary value never
//! panic, and every error names what is wrong (the header or field at fault) in a bounded
//! message. 256 cases per property (proptest's default), well under a second each.

mod common;

use panoptes_schemas::{
    ControlMessage, DeadLetter, DeadLetterReason, Detection, DetectionRecord, EnvelopeError,
    FrameEncoding, FrameHeaders, FrameStatus, MAX_DETAIL_CHARS, MAX_DIMENSION,
    MAX_REPORTED_VALUE_CHARS, format_traceparent, headers,
};
use proptest::prelude::*;
use serde_json::Value;

/// Every header name the envelope reads.
const ENVELOPE_HEADERS: [&str; 12] = [
    headers::SCHEMA_VERSION,
    headers::CAMERA_ID,
    headers::SEQ,
    headers::CAPTURE_TIME_US,
    headers::PTS_NS,
    headers::WIDTH,
    headers::HEIGHT,
    headers::SOURCE_WIDTH,
    headers::SOURCE_HEIGHT,
    headers::ENCODING,
    headers::TRACEPARENT,
    headers::OWNER_EPOCH,
];

fn camera_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9._-]{0,63}"
}

/// A node, worker, region, topic or model name: no whitespace or control characters.
fn name() -> impl Strategy<Value = String> {
    "[^\\s\\p{Cc}]{1,40}"
}

fn traceparent() -> impl Strategy<Value = String> {
    (any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>())
        .prop_filter("ids are not all zero", |(t, s, _)| {
            *t != [0; 16] && *s != [0; 8]
        })
        .prop_map(|(t, s, f)| format_traceparent(&t, &s, f))
}

fn dimension() -> impl Strategy<Value = u32> {
    prop_oneof![1..=MAX_DIMENSION, Just(1), Just(MAX_DIMENSION)]
}

/// A valid envelope: the shared example with every field drawn anew (so a field added to
/// the envelope keeps its example value here).
fn frame_headers() -> impl Strategy<Value = FrameHeaders> {
    (
        camera_id(),
        any::<u64>(),
        any::<i64>(),
        any::<Option<u64>>(),
        (dimension(), dimension(), dimension(), dimension()),
        prop_oneof![Just(FrameEncoding::Jpeg), Just(FrameEncoding::Rgb24)],
        traceparent(),
    )
        .prop_map(|(id, seq, t, pts, (w, h, sw, sh), enc, tp)| {
            let mut f = common::frame_headers();
            f.camera_id = id;
            f.seq = seq;
            f.capture_time_us = t;
            f.pts_ns = pts;
            (f.width, f.height, f.source_width, f.source_height) = (w, h, sw, sh);
            f.encoding = enc;
            f.traceparent = tp;
            f
        })
}

fn decode_pairs(pairs: &[(String, Option<Vec<u8>>)]) -> Result<FrameHeaders, EnvelopeError> {
    FrameHeaders::from_kafka_headers(pairs.iter().map(|(n, v)| (n.as_str(), v.as_deref())))
}

/// An error's message is non-empty and quotes at most a bounded part of the input.
fn assert_clear(err: &EnvelopeError, input_len: usize) {
    let text = err.to_string();
    assert!(!text.is_empty());
    if let EnvelopeError::BadHeader { value, .. } = err {
        assert!(value.chars().count() <= MAX_REPORTED_VALUE_CHARS, "{text}");
    }
    // Header errors quote at most MAX_REPORTED_VALUE_CHARS of the value; JSON errors name a
    // position. Either way the message does not grow with the input.
    assert!(
        text.len() < 600 + input_len.min(300),
        "{} chars: {text}",
        text.len()
    );
}

/// Any JSON value, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// `doc` with the value at one (possibly nested) key replaced by `with`; `pick` selects it.
fn replace_one(doc: &mut Value, pick: usize, with: Value) {
    let mut paths: Vec<Vec<String>> = Vec::new();
    fn walk(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        if let Value::Object(m) = v {
            for (k, child) in m {
                at.push(k.clone());
                out.push(at.clone());
                walk(child, at, out);
                at.pop();
            }
        }
    }
    walk(doc, &mut Vec::new(), &mut paths);
    let path = &paths[pick % paths.len()];
    let mut slot = doc;
    for key in path {
        slot = slot.get_mut(key).expect("path from walk");
    }
    *slot = with;
}

fn detection_record() -> impl Strategy<Value = DetectionRecord> {
    let boxes = prop::collection::vec((0u32..80, name(), 0u32..=100, any::<[u16; 4]>()), 0..6);
    (
        camera_id(),
        any::<u64>(),
        (dimension(), dimension()),
        prop_oneof![
            Just(FrameStatus::Ok),
            Just(FrameStatus::SkippedStale),
            Just(FrameStatus::ShedOverload),
            Just(FrameStatus::SupersededOwner)
        ],
        boxes,
        (any::<u64>(), name(), 0..i32::MAX, 0..i64::MAX),
        prop::option::of(traceparent()),
        (0u32..100_000).prop_map(|ms| ms as f32 / 8.0),
    )
        .prop_map(
            |(id, seq, (w, h), status, boxes, (epoch, worker, p, o), tp, ms)| {
                let mut r = common::detection_record();
                r.camera_id = id;
                r.seq = seq;
                (r.frame_width, r.frame_height) = (w, h);
                r.status = status;
                r.detections = if status == FrameStatus::Ok {
                    boxes
                        .into_iter()
                        .map(|(class, label, score, c)| {
                            // Corners on a quarter-pixel grid inside the frame.
                            let at = |v: u16, side: u32| f32::from(v) / 4.0 % (side as f32 + 1.0);
                            let (x1, x2) = (at(c[0], w), at(c[2], w));
                            let (y1, y2) = (at(c[1], h), at(c[3], h));
                            let bbox = [x1.min(x2), y1.min(y2), x1.max(x2), y1.max(y2)];
                            Detection::from_pixels(class, label, score as f32 / 100.0, bbox, w, h)
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                r.latency.decode_ms = ms;
                r.latency.end_to_end_ms = ms * 3.0;
                (r.epoch, r.worker_id, r.partition, r.offset) = (epoch, worker, p, o);
                r.traceparent = tp;
                r
            },
        )
}

fn dead_letter() -> impl Strategy<Value = DeadLetter> {
    (
        prop::option::of(camera_id()),
        any::<Option<u64>>(),
        (name(), 0..i32::MAX, 0..i64::MAX),
        prop_oneof![
            Just(DeadLetterReason::Undecodable),
            Just(DeadLetterReason::BadHeaders),
            Just(DeadLetterReason::TooLarge),
            Just(DeadLetterReason::BadDimensions)
        ],
        ".{0,200}",
        (name(), any::<i64>()),
    )
        .prop_map(|(cam, seq, (topic, p, o), reason, detail, (worker, t))| {
            let mut d = common::dead_letter();
            d.camera_id = cam;
            d.seq = seq;
            (d.source_topic, d.partition, d.offset) = (topic, p, o);
            d.reason = reason;
            d.detail = DeadLetter::truncate_detail(&detail);
            (d.worker_id, d.time_us) = (worker, t);
            d
        })
}

fn control_message() -> impl Strategy<Value = ControlMessage> {
    let v = panoptes_schemas::SCHEMA_VERSION;
    prop_oneof![
        (camera_id(), name(), any::<u64>(), name()).prop_map(move |(c, n, e, r)| {
            ControlMessage::CameraAssignment {
                schema_version: v,
                camera_id: c,
                node_id: n,
                epoch: e,
                region: r,
            }
        }),
        (name(), 0..i32::MAX, name(), any::<u64>(), name()).prop_map(move |(t, p, w, e, r)| {
            ControlMessage::PartitionAssignment {
                schema_version: v,
                topic: t,
                partition: p,
                worker_id: w,
                epoch: e,
                region: r,
            }
        }),
        (
            name(),
            any::<u64>(),
            prop::collection::vec(camera_id(), 0..4),
            prop::collection::vec(0..i32::MAX, 0..4)
        )
            .prop_map(move |(n, e, cameras, partitions)| ControlMessage::Release {
                schema_version: v,
                node_id: n,
                epoch: e,
                cameras,
                partitions,
            }),
        (name(), any::<u64>()).prop_map(move |(n, d)| ControlMessage::Drain {
            schema_version: v,
            node_id: n,
            deadline_ms: d,
        }),
    ]
}

/// The JSON codecs of the three message types, by name, for the shared properties.
fn decode_any(kind: usize, bytes: &[u8]) -> Result<(), EnvelopeError> {
    match kind % 3 {
        0 => DetectionRecord::from_json(bytes).map(drop),
        1 => DeadLetter::from_json(bytes).map(drop),
        _ => ControlMessage::from_json(bytes).map(drop),
    }
}

proptest! {
    #[test]
    fn envelope_round_trips(h in frame_headers()) {
        h.validate().unwrap();
        let pairs: Vec<(String, Option<Vec<u8>>)> = h
            .to_kafka_headers()
            .into_iter()
            .map(|(n, v)| (n.to_string(), Some(v.into_bytes())))
            .collect();
        prop_assert_eq!(decode_pairs(&pairs).unwrap(), h.clone());
        h.check_record_key(Some(h.camera_id.as_bytes())).unwrap();
    }

    /// One header of a valid envelope replaced by arbitrary bytes (or no value, or
    /// dropped): decoding never panics; when it fails, the error names that header.
    #[test]
    fn one_bad_header_is_named(
        h in frame_headers(),
        which in 0..ENVELOPE_HEADERS.len(),
        value in prop_oneof![
            4 => prop::collection::vec(any::<u8>(), 0..80).prop_map(Some),
            2 => "-?[0-9]{1,25}".prop_map(|s| Some(s.into_bytes())),
            1 => Just(None),
        ],
        drop_it in prop::bool::weighted(0.1),
    ) {
        let target = ENVELOPE_HEADERS[which];
        let mut pairs: Vec<(String, Option<Vec<u8>>)> = h
            .to_kafka_headers()
            .into_iter()
            .filter(|(n, _)| *n != target)
            .map(|(n, v)| (n.to_string(), Some(v.into_bytes())))
            .collect();
        if !drop_it {
            pairs.push((target.to_string(), value));
        }
        match decode_pairs(&pairs) {
            Ok(decoded) => {
                decoded.validate().unwrap();
                prop_assert!(decoded.width <= MAX_DIMENSION && decoded.height <= MAX_DIMENSION);
            }
            Err(EnvelopeError::UnsupportedVersion { .. }) => {
                prop_assert_eq!(target, headers::SCHEMA_VERSION);
            }
            Err(err) => {
                assert_clear(&err, 80);
                prop_assert_eq!(err.header(), Some(target), "{}", err);
            }
        }
    }

    /// Arbitrary header lists: known and unknown names, repeated, with and without values.
    #[test]
    fn arbitrary_headers_never_panic(
        pairs in prop::collection::vec(
            (
                prop_oneof![
                    3 => (0..ENVELOPE_HEADERS.len()).prop_map(|i| ENVELOPE_HEADERS[i].to_string()),
                    1 => ".{0,12}",
                ],
                prop::option::of(prop::collection::vec(any::<u8>(), 0..70)),
            ),
            0..16,
        ),
        key in prop::option::of(prop::collection::vec(any::<u8>(), 0..200)),
    ) {
        match decode_pairs(&pairs) {
            Ok(h) => {
                h.validate().unwrap();
                if let Err(e) = h.check_record_key(key.as_deref()) {
                    assert_clear(&e, key.as_ref().map_or(0, Vec::len));
                }
            }
            Err(e) => assert_clear(&e, 70),
        }
    }

    #[test]
    fn detection_records_round_trip(r in detection_record()) {
        let json = r.to_json().unwrap();
        prop_assert_eq!(DetectionRecord::from_json(&json).unwrap(), r);
    }

    #[test]
    fn dead_letters_round_trip(d in dead_letter()) {
        prop_assert!(d.detail.chars().count() <= MAX_DETAIL_CHARS);
        let json = d.to_json().unwrap();
        prop_assert_eq!(DeadLetter::from_json(&json).unwrap(), d);
    }

    #[test]
    fn control_messages_round_trip(m in control_message()) {
        let json = m.to_json().unwrap();
        prop_assert_eq!(ControlMessage::from_json(&json).unwrap(), m);
    }

    /// Arbitrary bytes, and arbitrary JSON documents, as any of the three messages.
    #[test]
    fn arbitrary_json_never_panics(
        kind in 0usize..3,
        bytes in prop::collection::vec(any::<u8>(), 0..300),
        doc in json_value(),
    ) {
        if let Err(e) = decode_any(kind, &bytes) {
            assert_clear(&e, bytes.len());
        }
        let text = serde_json::to_vec(&doc).unwrap();
        if let Err(e) = decode_any(kind, &text) {
            assert_clear(&e, text.len());
        }
    }

    /// A valid message with one field (at any depth) replaced by an arbitrary JSON value:
    /// decoded and valid, or refused with an error naming a field, a type or the version.
    #[test]
    fn one_bad_field_is_refused_clearly(
        kind in 0usize..3,
        r in detection_record(),
        d in dead_letter(),
        m in control_message(),
        pick in any::<usize>(),
        with in json_value(),
    ) {
        let mut doc = match kind {
            0 => serde_json::to_value(&r).unwrap(),
            1 => serde_json::to_value(&d).unwrap(),
            _ => serde_json::to_value(&m).unwrap(),
        };
        replace_one(&mut doc, pick, with);
        let text = serde_json::to_vec(&doc).unwrap();
        if let Err(e) = decode_any(kind, &text) {
            assert_clear(&e, text.len());
            let named = match &e {
                EnvelopeError::InvalidField { field, .. } => !field.is_empty(),
                EnvelopeError::UnsupportedVersion { .. } => true,
                // serde's messages name the field or the expected type / variant.
                EnvelopeError::Json(msg) => !msg.is_empty(),
                other => panic!("unexpected error kind {other:?}"),
            };
            prop_assert!(named, "{}", e);
        }
    }
}
