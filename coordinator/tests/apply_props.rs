//! Property-based tests of what the coordinator reads from operators: its configuration
//! file, `cameras.yaml` files (`panoptes apply -f`) and `POST /v1/apply` bodies.
//!
//! - Any configuration file derived from the defaults with hostile values loads and
//!   validates to a config or a clear error, never a panic.
//! - Any YAML document parses as a `cameras.yaml` file or fails clearly; every camera in it
//!   validates to a record or a clear error that never quotes the camera's password.
//! - Any apply body (realistic cameras with fields replaced by arbitrary JSON, arbitrary JSON,
//!   arbitrary text, and documents that went through the YAML path as the CLI sends them),
//!   posted to the real API over a real `redis-server`, is answered 200 or 4xx with an error
//!   message, never 5xx or a dropped connection; a refused apply leaves the registry
//!   byte-identical and no answer shows a password.

mod common;

use common::{Api, assert_no_secret};
use panoptes_coordinator::cli::CamerasFile;
use panoptes_coordinator::config::CoordinatorConfig;
use panoptes_coordinator::registry::{CameraSpec, Limits, validate};
use panoptes_runtime::config::from_toml_str;
use panoptes_testkit::props::config_documents;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};

/// The password of every realistic camera (`common::cam`).
const PASSWORD: &str = "hunter2";

/// Any JSON value, nested a little.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        prop_oneof![Just(-1i64), Just(0), Just(1), Just(i64::from(i32::MAX) + 1)]
            .prop_map(Value::from),
        ".{0,16}".prop_map(Value::from),
        prop_oneof![
            Just("rtsp://viewer:***@10.0.0.1:554/a"),
            Just("http://u:hunter2@h/x"),
            Just("rtsp://"),
            Just("rtsp://:@/"),
            Just("-leading"),
            Just(".hidden"),
            Just("eu"),
            Just("us"),
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: [&str; 8] = [
    "id",
    "url",
    "region",
    "group",
    "fps",
    "width",
    "height",
    "partition",
];

/// A realistic camera (ids from a small pool, so lists repeat ids and applies update) with
/// up to two fields replaced by arbitrary values or removed, maybe an unknown field.
fn camera() -> impl Strategy<Value = Value> {
    let edit = (0..FIELDS.len(), prop::option::weighted(0.8, json_value()));
    (
        prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")],
        prop_oneof![Just("eu"), Just("us")],
        prop::collection::vec(edit, 0..3),
        prop::bool::weighted(0.05),
    )
        .prop_map(|(id, region, edits, unknown)| {
            let mut c = common::cam(id, region);
            for (field, value) in edits {
                match value {
                    Some(v) => c[FIELDS[field]] = v,
                    None => {
                        c.as_object_mut().unwrap().remove(FIELDS[field]);
                    }
                }
            }
            if unknown {
                c["colour"] = json!("red");
            }
            c
        })
}

/// An apply body: structured, arbitrary JSON, or arbitrary text.
fn apply_body() -> impl Strategy<Value = String> {
    let structured = (
        prop::collection::vec(camera(), 0..5),
        prop_oneof![Just(json!(false)), Just(json!(true)), json_value()],
        prop::option::weighted(0.2, json_value()),
    )
        .prop_map(|(cameras, prune, if_version)| {
            let mut body = json!({ "cameras": cameras, "prune": prune });
            if let Some(v) = if_version {
                body["if_version"] = v;
            }
            body.to_string()
        });
    prop_oneof![
        8 => structured,
        1 => json_value().prop_map(|v| v.to_string()),
        1 => ".{0,80}",
    ]
}

/// A `cameras.yaml` text: realistic cameras rendered as YAML, maybe truncated, or arbitrary
/// text.
fn cameras_yaml() -> impl Strategy<Value = String> {
    let rendered = (
        prop::collection::vec(camera(), 0..4),
        any::<usize>(),
        0u8..5,
    )
        .prop_map(|(cameras, cut, mode)| {
            let mut text = serde_yaml::to_string(&json!({ "cameras": cameras })).unwrap();
            if mode == 0 {
                panoptes_testkit::props::truncate_anywhere(&mut text, cut);
            }
            text
        });
    prop_oneof![
        6 => rendered,
        1 => ".{0,120}",
        1 => "(cameras:|  - |id: |url: |&a |\\*a |\\[|\\]|\\{|\\}|: |\n| ){0,30}",
    ]
}

fn limits() -> Limits {
    Limits {
        frames_partitions: 8,
        regions: vec!["eu".into(), "us".into()],
        // No keyring: a URL with a password is refused (clearly), like a coordinator
        // without camera keys does.
        camera_keys: None,
    }
}

/// Parses a `cameras.yaml` text as the CLI does; validates every camera in it.
fn check_yaml(text: &str) -> Result<Vec<Value>, String> {
    let file: CamerasFile = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    for c in &file.cameras {
        match serde_json::from_value::<CameraSpec>(c.clone()) {
            Ok(spec) => {
                if let Err(e) = validate(&spec, None, &limits()) {
                    let text = e.to_string();
                    assert!(!text.is_empty());
                    assert!(!text.contains(PASSWORD), "{text}");
                }
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    Ok(file.cameras)
}

proptest! {
    #[test]
    fn config_files_load_or_fail_clearly(
        doc in config_documents(serde_json::to_value(CoordinatorConfig::default()).unwrap())
    ) {
        match from_toml_str::<CoordinatorConfig>(&doc) {
            Ok(c) => {
                if let Err(e) = c.validate() {
                    prop_assert!(!e.to_string().is_empty());
                }
            }
            Err(e) => prop_assert!(e.to_string().len() > "invalid configuration: ".len()),
        }
    }

    #[test]
    fn cameras_files_parse_or_fail_clearly(text in cameras_yaml()) {
        if let Err(e) = check_yaml(&text) {
            prop_assert!(!e.is_empty());
        }
    }
}

/// A YAML alias bomb ("billion laughs") is refused quickly, not expanded.
#[test]
fn yaml_alias_bomb_is_refused() {
    let mut doc = String::from("a0: &a0 [\"rtsp://h/x\"]\n");
    for i in 1..12 {
        let p = i - 1;
        doc.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    doc.push_str("cameras: *a11\n");
    let started = std::time::Instant::now();
    let err = check_yaml(&doc).unwrap_err();
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "{err}"
    );
}

/// Apply bodies against the real API and Redis (one server for all cases, so the registry
/// the properties run against changes as applies succeed).
#[test]
fn apply_bodies_are_answered_clearly() {
    let api = Api::start();
    let mut runner = TestRunner::new(Config::default());
    let strategy = (apply_body(), cameras_yaml(), any::<bool>());
    let answers = std::cell::RefCell::new(std::collections::BTreeMap::<u16, u32>::new());
    let result = runner.run(&strategy, |(body, yaml, via_yaml)| {
        // The CLI's path: YAML file -> JSON body.
        let body = match (via_yaml, check_yaml(&yaml)) {
            (true, Ok(cameras)) => json!({ "cameras": cameras, "prune": false }).to_string(),
            _ => body,
        };
        let before = api.registry_dump();
        let (code, v) = api.req_raw("POST", "/v1/apply", Some(body.clone()), Some(common::TOKEN));
        assert_no_secret(&v);
        *answers.borrow_mut().entry(code).or_default() += 1;
        prop_assert!(
            code == 200 || (400..500).contains(&code),
            "{} for {}: {}",
            code,
            body,
            v
        );
        if code != 200 {
            let msg = v["error"].as_str().unwrap_or_default();
            prop_assert!(!msg.is_empty(), "{} without an error message: {}", code, v);
            prop_assert_eq!(api.registry_dump(), before, "a refused apply wrote");
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // Both sides of the property were exercised: applies that went through and refusals.
    let answers = answers.into_inner();
    println!("answers by status: {answers:?}");
    assert!(answers.get(&200).is_some_and(|n| *n >= 5), "{answers:?}");
    assert!(
        answers.iter().any(|(c, n)| *c >= 400 && *n >= 5),
        "{answers:?}"
    );
    // The API still answers after everything it was sent.
    let (code, _) = api.req("GET", "/v1/cameras", None);
    assert_eq!(code, 200);
}
