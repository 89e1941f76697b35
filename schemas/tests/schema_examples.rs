//! Example messages validate against the checked-in JSON Schema files, and broken ones are
//! rejected both by the schema and by the Rust decoder, so the two never disagree about
//! what a valid message is.

mod common;

use jsonschema::Validator;
use panoptes_schemas::{
    ControlMessage, DeadLetter, DetectionRecord, FrameHeaders, FrameStatus, all_schemas,
};
use serde::Serialize;
use serde_json::{Value, json};

fn validator(file: &str) -> Validator {
    jsonschema::validator_for(&common::checked_in_schema(file))
        .unwrap_or_else(|err| panic!("{file} is not a usable JSON Schema: {err}"))
}

fn assert_valid(validator: &Validator, file: &str, instance: &Value) {
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|err| format!("{err} (at {})", err.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{file} rejects a valid example:\n{errors:#?}\ninstance: {instance:#}"
    );
}

/// Asserts that `file` accepts `message` as serde serializes it; returns that JSON.
fn assert_valid_message(validator: &Validator, file: &str, message: &impl Serialize) -> Value {
    let json = serde_json::to_value(message).unwrap();
    assert_valid(validator, file, &json);
    json
}

/// Asserts that both the schema and the Rust side (decode + validate) reject `instance`.
fn assert_rejected(
    validator: &Validator,
    file: &str,
    what: &str,
    instance: &Value,
    rust_accepts: fn(&Value) -> bool,
) {
    assert!(
        !validator.is_valid(instance),
        "{file} accepts an example with {what}: {instance:#}"
    );
    assert!(
        !rust_accepts(instance),
        "Rust decoding accepts an example with {what} that {file} rejects: {instance:#}"
    );
}

/// Asserts that both sides reject every case of `broken`, and `good` at the next schema
/// version.
fn assert_all_rejected(
    validator: &Validator,
    file: &str,
    good: &Value,
    broken: &[(&str, Value)],
    rust_accepts: fn(&Value) -> bool,
) {
    let next = good["schema_version"].as_u64().expect("a schema version") + 1;
    let other = (
        "another schema version",
        with(good, "/schema_version", json!(next)),
    );
    for (what, instance) in broken.iter().chain([&other]) {
        assert_rejected(validator, file, what, instance, rust_accepts);
    }
}

/// A copy of `value` with the member at JSON pointer `pointer` replaced by `new`.
fn with(value: &Value, pointer: &str, new: Value) -> Value {
    let mut value = value.clone();
    *value
        .pointer_mut(pointer)
        .unwrap_or_else(|| panic!("example has no {pointer}")) = new;
    value
}

/// A copy of `value` with the key `key` of the object at `pointer` removed.
fn without(value: &Value, pointer: &str, key: &str) -> Value {
    let mut value = value.clone();
    let object = value
        .pointer_mut(pointer)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("example has no object at {pointer:?}"));
    assert!(
        object.remove(key).is_some(),
        "example has no {pointer}/{key}"
    );
    value
}

/// A copy of `value` with an extra member `key` in the object at `pointer`.
fn with_extra(value: &Value, pointer: &str, key: &str) -> Value {
    let mut value = value.clone();
    value
        .pointer_mut(pointer)
        .and_then(Value::as_object_mut)
        .unwrap_or_else(|| panic!("example has no object at {pointer:?}"))
        .insert(key.to_owned(), json!("surprise"));
    value
}

fn frame_accepts(v: &Value) -> bool {
    serde_json::from_value::<FrameHeaders>(v.clone()).is_ok_and(|f| f.validate().is_ok())
}

fn detection_accepts(v: &Value) -> bool {
    DetectionRecord::from_json(v.to_string().as_bytes()).is_ok()
}

fn dead_letter_accepts(v: &Value) -> bool {
    DeadLetter::from_json(v.to_string().as_bytes()).is_ok()
}

fn control_accepts(v: &Value) -> bool {
    ControlMessage::from_json(v.to_string().as_bytes()).is_ok()
}

#[test]
fn every_checked_in_schema_compiles() {
    for (file, _) in all_schemas() {
        let schema = common::checked_in_schema(file);
        assert!(
            jsonschema::meta::is_valid(&schema),
            "{file} is not a valid JSON Schema document"
        );
        validator(file);
    }
}

#[test]
fn frame_headers() {
    const FILE: &str = "frame-headers.schema.json";
    let v = validator(FILE);
    let good = assert_valid_message(&v, FILE, &common::frame_headers());

    let mut no_pts = common::frame_headers();
    no_pts.pts_ns = None;
    assert_valid_message(&v, FILE, &no_pts);

    let broken = [
        ("a missing field", without(&good, "", "camera_id")),
        ("a wrong type", with(&good, "/width", json!("640"))),
        ("an unknown field", with_extra(&good, "", "colour_space")),
        ("a bad enum value", with(&good, "/encoding", json!("png"))),
        ("a zero width", with(&good, "/height", json!(0))),
        (
            "an oversized width",
            with(&good, "/source_width", json!(16385)),
        ),
        ("a bad camera id", with(&good, "/camera_id", json!("-cam"))),
        (
            "a bad traceparent",
            with(&good, "/traceparent", json!("00-abc")),
        ),
    ];
    assert_all_rejected(&v, FILE, &good, &broken, frame_accepts);
}

#[test]
fn detection_record() {
    const FILE: &str = "detection-record.schema.json";
    let v = validator(FILE);
    let record = common::detection_record();
    assert_eq!(record.detections.len(), 2);
    let good = assert_valid_message(&v, FILE, &record);

    let mut skipped = record.clone();
    skipped.status = FrameStatus::SkippedStale;
    skipped.detections.clear();
    skipped.traceparent = None;
    assert_valid_message(&v, FILE, &skipped);

    let broken = [
        ("a missing field", without(&good, "", "epoch")),
        (
            "a missing nested field",
            without(&good, "/model", "version"),
        ),
        ("a wrong type", with(&good, "/seq", json!("48213"))),
        (
            "a wrong nested type",
            with(&good, "/detections/0/class_id", json!(-1)),
        ),
        ("an unknown field", with_extra(&good, "", "gpu")),
        (
            "an unknown detection field",
            with_extra(&good, "/detections/1", "track_id"),
        ),
        (
            "an unknown latency field",
            with_extra(&good, "/latency", "upload_ms"),
        ),
        ("a bad enum value", with(&good, "/status", json!("done"))),
        (
            "a score above 1",
            with(&good, "/detections/0/score", json!(1.5)),
        ),
        (
            "a normalised box above 1",
            with(&good, "/detections/1/bbox_norm/2", json!(1.25)),
        ),
        (
            "a three-number box",
            with(&good, "/detections/0/bbox", json!([1.0, 2.0, 3.0])),
        ),
        (
            "a negative latency",
            with(&good, "/latency/decode_ms", json!(-0.5)),
        ),
        ("a negative partition", with(&good, "/partition", json!(-1))),
        ("a bad camera id", with(&good, "/camera_id", json!("cam 3"))),
    ];
    assert_all_rejected(&v, FILE, &good, &broken, detection_accepts);
}

#[test]
fn dead_letter() {
    const FILE: &str = "dead-letter.schema.json";
    let v = validator(FILE);
    let letter = common::dead_letter();
    let good = assert_valid_message(&v, FILE, &letter);

    let mut anonymous = letter;
    anonymous.camera_id = None;
    anonymous.seq = None;
    assert_valid_message(&v, FILE, &anonymous);

    let broken = [
        ("a missing field", without(&good, "", "reason")),
        ("a wrong type", with(&good, "/offset", json!("1204332"))),
        ("an unknown field", with_extra(&good, "", "payload")),
        (
            "a bad enum value",
            with(&good, "/reason", json!("exploded")),
        ),
        (
            "an overlong detail",
            with(&good, "/detail", json!("x".repeat(1025))),
        ),
    ];
    assert_all_rejected(&v, FILE, &good, &broken, dead_letter_accepts);
}

#[test]
fn control_messages() {
    const FILE: &str = "control-message.schema.json";
    let v = validator(FILE);
    let messages = common::control_messages();
    let kinds: Vec<&str> = messages.iter().map(ControlMessage::kind).collect();
    assert_eq!(
        kinds,
        [
            "camera_assignment",
            "partition_assignment",
            "release",
            "drain"
        ],
        "examples must cover every variant"
    );
    for message in &messages {
        let good = assert_valid_message(&v, FILE, message);
        assert_eq!(good["type"], json!(message.kind()));
        let node_field = if good.get("node_id").is_some() {
            "node_id"
        } else {
            "worker_id"
        };

        let broken = [
            ("a missing tag", without(&good, "", "type")),
            ("a missing field", without(&good, "", "schema_version")),
            (
                "a wrong type",
                with(&good, &format!("/{node_field}"), json!(42)),
            ),
            ("an unknown field", with_extra(&good, "", "priority")),
            ("a bad tag value", with(&good, "/type", json!("reboot"))),
        ];
        assert_all_rejected(&v, FILE, &good, &broken, control_accepts);
    }
    let drain = serde_json::to_value(&messages[3]).unwrap();
    assert_rejected(
        &v,
        FILE,
        "a negative deadline",
        &with(&drain, "/deadline_ms", json!(-5)),
        control_accepts,
    );
    let release = serde_json::to_value(&messages[2]).unwrap();
    assert_rejected(
        &v,
        FILE,
        "a bad released camera id",
        &with(&release, "/cameras", json!(["ok", ".hidden"])),
        control_accepts,
    );
    assert_rejected(
        &v,
        FILE,
        "a negative released partition",
        &with(&release, "/partitions", json!([3, -1])),
        control_accepts,
    );
}
