//! The model repository and blue-green rollouts end to end: a real `redis-server`, the real
//! `panoptes-coordinator` process (typed config with a `[models]` section) and the real
//! `panoptes` CLI: push, list, show, the promotion gate (not validated, below threshold,
//! accepted), the rollout record and its notification, rollback, a tampered model refused,
//! hostile input.

mod common;

use std::path::Path;
use std::time::Duration;

use common::cli;
use common::models::{result, start_with, write_version};
use panoptes_coordinator::api::models::GateOverride;
use panoptes_coordinator_client::models::ModelRepository;
use panoptes_coordinator_client::{MemberAgent, MemberConfig, MemberKind, keys};
use panoptes_schemas::model::{ModelManifest, ModelRollout};
use panoptes_testkit::coordinator::{Coordinator, TEST_TOKEN};
use panoptes_testkit::wait_until;
use serde_json::{Value, json};

fn start(repository: Option<&Path>) -> (panoptes_testkit::RedisServer, Coordinator) {
    start_with(repository, |models| {
        models.groups.insert(
            "edge".into(),
            GateOverride {
                min_precision: Some(0.9),
                ..GateOverride::default()
            },
        );
    })
}

#[test]
fn push_gate_promote_rollback_and_integrity() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("repo");
    std::fs::create_dir(&root).unwrap();
    let repo_env = [("PANOPTES_MODEL_REPOSITORY", root.to_str().unwrap())];

    // Push two versions with the CLI; list and show them.
    for (v, bytes) in [("1.0", b"model one".as_slice()), ("2.0", b"model two")] {
        let (model, man) = write_version(work.path(), v, bytes);
        let (code, out, err) = cli(&["models", "push", &model, "--manifest", &man], &repo_env);
        assert_eq!(code, 0, "{out}{err}");
        assert!(out.contains(&format!("pushed det@{v}")), "{out}");
    }
    // Same version, other bytes: refused.
    let (model, man) = write_version(work.path(), "2.0", b"other bytes");
    let (code, _, err) = cli(&["models", "push", &model, "--manifest", &man], &repo_env);
    assert_eq!(code, 1);
    assert!(err.contains("refusing to overwrite"), "{err}");
    let (code, out, err) = cli(&["models", "list"], &repo_env);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("MODEL") && out.contains("1.0") && out.contains("2.0"),
        "{out}"
    );
    let (code, out, err) = cli(&["models", "show", "det", "2.0"], &repo_env);
    assert_eq!(code, 0, "{err}");
    let shown: ModelManifest = serde_json::from_str(&out).unwrap();
    assert_eq!(shown.sha256.as_deref().map(str::len), Some(64));

    let (redis, coord) = start(Some(&root));
    coord
        .add_camera(&json!({"id": "lobby", "url": "rtsp://10.0.0.2/lobby"}))
        .unwrap();
    let api_env = [("PANOPTES_API_TOKEN", TEST_TOKEN)];
    let run = |args: &[&str]| cli(&[&["--url", coord.http.as_str()], args].concat(), &api_env);
    let promote = |group: &str, version: &str| {
        coord
            .api(
                "POST",
                &format!("/v1/rollouts/{group}/promote"),
                Some(&json!({"model": "det", "version": version})),
            )
            .unwrap()
    };

    // Not validated: refused, saying on which device class.
    let (code, v) = promote("default", "1.0");
    assert_eq!(code, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("not validated on device class cpu"),
        "{v}"
    );
    let (code, v) = coord.api("GET", "/v1/models", None).unwrap();
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["models"][0]["versions"][0]["version"], "1.0");

    // Validated but too slow: refused with measured vs allowed.
    let repo = ModelRepository::open(&root).unwrap();
    repo.record_validation("det", "1.0", result(0.8, 150.0))
        .unwrap();
    let (code, v) = promote("default", "1.0");
    assert_eq!(code, 409, "{v}");
    let msg = v["error"].as_str().unwrap();
    assert!(
        msg.contains("latency p99 150.0 ms") && msg.contains("100.0 ms"),
        "{msg}"
    );

    // Fast enough: promoted, generation 1, published on the group's channel.
    repo.record_validation("det", "1.0", result(0.8, 40.0))
        .unwrap();
    repo.record_validation("det", "2.0", result(0.8, 40.0))
        .unwrap();
    let mut sub = redis.connection().unwrap();
    sub.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut pubsub = sub.as_pubsub();
    pubsub.subscribe(keys::rollout_notify("default")).unwrap();
    let (code, out, err) = run(&["models", "promote", "default", "det", "1.0"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("now runs det@1.0") && out.contains("generation 1"),
        "{out}"
    );
    let published: String = pubsub.get_message().unwrap().get_payload().unwrap();
    let r1 = ModelRollout::from_json(published.as_bytes()).unwrap();
    assert_eq!(
        (r1.active.as_str(), r1.generation, r1.previous.clone()),
        ("1.0", 1, None)
    );

    // The group "edge" asks for precision 0.9: 0.8 is refused there.
    let (code, v) = promote("edge", "2.0");
    assert_eq!(code, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("precision 0.800 is below the required 0.900"),
        "{v}"
    );

    // Version 2 on default: generation 2, previous 1.0; status shows it.
    let (code, v) = promote("default", "2.0");
    assert_eq!(code, 200, "{v}");
    let stored: String = redis::cmd("GET")
        .arg(keys::rollout("default"))
        .query(&mut redis.connection().unwrap())
        .unwrap();
    let r2 = ModelRollout::from_json(stored.as_bytes()).unwrap();
    assert_eq!(
        (r2.active.as_str(), r2.previous.as_deref(), r2.generation),
        ("2.0", Some("1.0"), 2)
    );
    let (code, out, err) = run(&["models", "status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("default") && l.contains("2.0")),
        "{out}"
    );
    let (code, v) = coord.api("GET", "/v1/rollouts/default", None).unwrap();
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["rollout"]["generation"], 2);

    // Rollback: back to 1.0, generation 3; again: to 2.0.
    let (code, out, err) = run(&["models", "rollback", "default"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("now runs det@1.0") && out.contains("generation 3"),
        "{out}"
    );

    // A real worker member reports what it runs; the group's rollout view shows it.
    let cancel = tokio_util::sync::CancellationToken::new();
    let member = MemberConfig::new(MemberKind::Worker, "w-1", redis.url.as_str());
    let (agent, thread) = MemberAgent::start(member, cancel.clone()).unwrap();
    agent.set_model("det@1.0");
    let workers = wait_until("w-1 to report its model", Duration::from_secs(10), || {
        let (code, v) = coord.api("GET", "/v1/rollouts/default", None).ok()?;
        (code == 200 && v["workers"][0]["model"] == "det@1.0").then_some(v["workers"].clone())
    })
    .unwrap();
    assert_eq!(workers[0]["id"], "w-1");
    let (code, out, err) = run(&["models", "status", "default"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("w-1") && l.contains("det@1.0")),
        "{out}"
    );
    cancel.cancel();
    thread.join().unwrap();

    // A tampered model.pt is refused at promote with an integrity error.
    let pt = root.join("det/2.0/model.pt");
    let mut bytes = std::fs::read(&pt).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&pt, bytes).unwrap();
    let (code, v) = promote("default", "2.0");
    assert_eq!(code, 409, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("integrity check failed"),
        "{v}"
    );
    let promotions = |result: &str| {
        coord
            .metric(&format!(
                "panoptes_coordinator_model_promotions_total{{result=\"{result}\"}}"
            ))
            .unwrap_or(0.0)
    };
    assert_eq!(promotions("integrity"), 1.0);
    assert_eq!(promotions("ok"), 2.0);
    assert_eq!(promotions("not_validated"), 1.0);
    assert_eq!(promotions("below_threshold"), 2.0);

    // Hostile input: clear 4xx.
    let (code, v) = coord
        .api(
            "POST",
            "/v1/rollouts/default/promote",
            Some(&json!({"model": "../x", "version": "1.0"})),
        )
        .unwrap();
    assert_eq!(code, 422, "{v}");
    let (code, v) = promote("nowhere", "1.0");
    assert_eq!(code, 404, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("unknown worker group"),
        "{v}"
    );
    let (code, v) = promote("default", "9.9");
    assert_eq!(code, 404, "{v}");
    let (code, v) = coord
        .api(
            "POST",
            "/v1/rollouts/default/promote",
            Some(&json!({"model": "det", "version": "1.0", "extra": 1})),
        )
        .unwrap();
    assert_eq!(code, 400, "{v}");
    let (code, v) = coord
        .api("POST", "/v1/rollouts/edge/rollback", None)
        .unwrap();
    assert_eq!(code, 404, "{v}");
    let (code, _) = coord.api("GET", "/v1/models/det/..", None).unwrap();
    assert!((400..500).contains(&code));
    let (code, out, err) = cli(&["models", "show", "..", "1"], &repo_env);
    assert_eq!(code, 1, "{out}");
    assert!(err.contains("bad model name"), "{err}");
}

#[test]
fn missing_repository_is_a_clear_error() {
    let work = tempfile::tempdir().unwrap();
    let missing = work.path().join("not-there");
    let (_redis, coord) = start(Some(&missing));
    let (code, v) = coord.api("GET", "/v1/models", None).unwrap();
    assert_eq!(code, 503, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("does not exist"),
        "{v}"
    );
    let (code, v) = coord
        .api(
            "POST",
            "/v1/rollouts/edge/promote",
            Some(&json!({"model": "det", "version": "1"})),
        )
        .unwrap();
    assert_eq!(code, 503, "{v}");
    let (code, _, err) = cli(
        &["models", "list", "--repository", missing.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1);
    assert!(err.contains("does not exist"), "{err}");
    let (code, v) = coord.api("GET", "/v1/rollouts", None).unwrap();
    assert_eq!(
        (code, v["rollouts"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    let _: Value = v;
}
