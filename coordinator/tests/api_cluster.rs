//! The operator API's cluster views (nodes, assignments, status, drain) and the `panoptes`
//! CLI (against the in-process API and the real `panoptes-coordinator` binary), with a real
//! `redis-server`.

mod common;

use common::{Api, TOKEN, TOPIC, apply, assert_no_secret, cam, cli, ids, put_member};
use panoptes_coordinator_client::{MemberKind, MemberRecord};
use serde_json::{Value, json};

fn member(kind: MemberKind, id: &str, group: &str, report: Value) -> MemberRecord {
    MemberRecord {
        id: id.into(),
        kind,
        region: "eu".into(),
        group: group.into(),
        capacity: 40.0,
        node_class: panoptes_coordinator_client::records::default_node_class(kind).into(),
        load: 10.0,
        http: "http://127.0.0.1:1".into(),
        state: "active".into(),
        broker_ok: true,
        session: "s".into(),
        report,
        updated_ms: 1,
    }
}

/// Writes what a leader and members would: members, assignments, leader info, groups.
fn seed_cluster(api: &Api) {
    put_member(
        api,
        &member(
            MemberKind::Ingest,
            "ing-1",
            "default",
            json!({"cameras": {"a": {"fps": 4.8, "state": "streaming"}}}),
        ),
    );
    put_member(
        api,
        &member(
            MemberKind::Worker,
            "w-1",
            "default",
            json!({"items": {"eu:0": {"lag": 7}}}),
        ),
    );
    put_member(
        api,
        &member(MemberKind::Worker, "w-2", "default", json!({})),
    );
    // A member whose lease expired: still in the set, no hash.
    api.redis_cmd::<()>(&["SADD", "panoptes:members:worker", "w-dead"]);
    api.redis_cmd::<()>(&["SADD", "panoptes:owned:worker:w-1", "eu:0"]);
    api.redis_cmd::<()>(&["SADD", "panoptes:owned:ingest:ing-1", "a"]);
    api.redis_cmd::<()>(&[
        "HSET",
        "panoptes:camassign:a",
        "owner",
        "ing-1",
        "epoch",
        "3",
        "cluster",
        "eu",
        "start_seq",
        "100",
    ]);
    api.redis_cmd::<()>(&[
        "HSET",
        &format!("panoptes:assign:eu:{TOPIC}:0"),
        "owner",
        "w-1",
        "epoch",
        "5",
    ]);
    api.redis_cmd::<()>(&[
        "HSET",
        &format!("panoptes:assign:us:{TOPIC}:0"),
        "owner",
        "",
        "epoch",
        "6",
        "target",
        "w-2",
    ]);
    api.redis_cmd::<()>(&[
        "HSET",
        "panoptes:leader:info",
        "id",
        "coord-1",
        "token",
        "9",
        "http",
        "http://127.0.0.1:7300",
        "since_ms",
        "1",
        "tick_ms",
        "2",
    ]);
    api.redis_cmd::<()>(&["SET", "panoptes:leader", "coord-1"]);
    api.redis_cmd::<()>(&[
        "HSET",
        "panoptes:groups",
        "default",
        r#"{"desired_replicas": 3, "load": 20.0, "capacity": 80.0}"#,
    ]);
}

#[test]
fn nodes_assignments_status_and_drain() {
    let api = Api::start();
    assert_eq!(
        apply(&api, json!([cam("a", "eu"), cam("b", "us")]), true, None).0,
        200
    );
    seed_cluster(&api);

    let (code, v) = api.req("GET", "/v1/nodes", None);
    assert_eq!(code, 200, "{v}");
    let nodes = v["nodes"].as_array().unwrap();
    let find = |id: &str| {
        nodes
            .iter()
            .find(|n| n["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing: {v}"))
    };
    assert_eq!(
        (
            find("ing-1")["kind"].as_str(),
            find("ing-1")["owned"].as_u64()
        ),
        (Some("ingest"), Some(1))
    );
    assert_eq!(
        (
            find("w-1")["alive"].as_bool(),
            find("w-1")["owned"].as_u64()
        ),
        (Some(true), Some(1))
    );
    assert_eq!(find("w-dead")["alive"], false);

    let (code, v) = api.req("GET", "/v1/assignments", None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["cameras"][0]["camera"], "a");
    assert_eq!(v["cameras"][0]["owner"], "ing-1");
    assert_eq!(v["cameras"][0]["epoch"], 3);
    assert_eq!(v["cameras"][0]["cluster"], "eu");
    assert_eq!(v["partitions"].as_array().unwrap().len(), 2);
    assert_eq!(
        (
            v["partitions"][0]["cluster"].as_str(),
            v["partitions"][0]["owner"].as_str()
        ),
        (Some("eu"), Some("w-1"))
    );
    assert_eq!(v["partitions"][1]["target"], "w-2");
    assert_eq!(v["partitions"][0]["released"], Value::Null);

    // Releases live in the owner's own hash; an entry for the record's epoch shows, one
    // left from an older grant does not.
    api.redis_cmd::<()>(&["HSET", "panoptes:released:worker:w-1", "eu:0", "5"]);
    api.redis_cmd::<()>(&["HSET", "panoptes:released:ingest:ing-1", "a", "2:99"]);
    let (_, v) = api.req("GET", "/v1/assignments", None);
    assert_eq!(v["partitions"][0]["released"], 5, "{v}");
    assert_eq!(v["cameras"][0]["released"], Value::Null, "{v}");
    api.redis_cmd::<()>(&["DEL", "panoptes:released:worker:w-1"]);

    // Drain: unknown member 404, known one flagged and shown, then cleared.
    assert_eq!(api.req("POST", "/v1/nodes/worker/ghost/drain", None).0, 404);
    assert_eq!(api.req("POST", "/v1/nodes/robot/w-1/drain", None).0, 404);
    let (code, v) = api.req("POST", "/v1/nodes/worker/w-1/drain", None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(
        api.redis_cmd::<Option<String>>(&["GET", "panoptes:drain:worker:w-1"])
            .as_deref(),
        Some("1")
    );
    let (_, v) = api.req("GET", "/v1/nodes", None);
    assert!(
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["id"] == "w-1" && n["drain"] == true)
    );

    let (code, v) = api.req("GET", "/v1/status", None);
    assert_eq!(code, 200, "{v}");
    assert_no_secret(&v);
    assert_eq!(v["leader"]["id"], "coord-1");
    assert_eq!(v["leader"]["holds_lease"], true);
    assert_eq!(v["registry_version"], 1);
    let g = &v["groups"][0];
    assert_eq!(
        (
            g["group"].as_str(),
            g["workers"].as_u64(),
            g["desired_replicas"].as_u64()
        ),
        (Some("default"), Some(2), Some(3))
    );
    assert_eq!(g["capacity"], 80.0);
    let a = &v["cameras"][0];
    assert_eq!(
        (a["id"].as_str(), a["owner"].as_str(), a["epoch"].as_u64()),
        (Some("a"), Some("ing-1"), Some(3))
    );
    assert_eq!(
        (
            a["fps"].as_f64(),
            a["state"].as_str(),
            a["cluster"].as_str()
        ),
        (Some(4.8), Some("streaming"), Some("eu"))
    );
    assert_eq!(v["cameras"][1]["owner"], "");
    let p = &v["partitions"][0];
    assert_eq!(
        (
            p["cluster"].as_str(),
            p["partition"].as_i64(),
            p["owner"].as_str(),
            p["epoch"].as_u64(),
            p["lag"].as_i64()
        ),
        (Some("eu"), Some(0), Some("w-1"), Some(5), Some(7))
    );
    assert_eq!(ids(&p["cameras"]), ["a"]);

    let (code, _) = api.req("DELETE", "/v1/nodes/worker/w-1/drain", None);
    assert_eq!(code, 200);
    assert_eq!(
        api.redis_cmd::<Option<String>>(&["GET", "panoptes:drain:worker:w-1"]),
        None
    );
}

fn panoptes(api: &Api, args: &[&str]) -> (i32, String, String) {
    let env = [
        ("PANOPTES_URL", api.base.as_str()),
        ("PANOPTES_API_TOKEN", TOKEN),
    ];
    cli(args, &env)
}

/// A temporary `cameras.yaml` holding `yaml`, in a folder that goes when the handle drops.
fn cameras_file(yaml: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cameras.yaml");
    std::fs::write(&file, yaml).unwrap();
    (dir, file)
}

#[test]
fn cli_apply_cameras_list_status_and_errors() {
    let api = Api::start();
    let (_dir, file) = cameras_file(
        "cameras:\n  - id: a\n    url: rtsp://viewer:hunter2@10.0.0.1:554/a\n    region: eu\n    fps: 10\n  - id: b\n    url: rtsp://10.0.0.2/b\n    region: us\n    group: gpu\n    partition: 5\n",
    );
    let f = file.to_str().unwrap();
    let (code, out, err) = panoptes(&api, &["apply", "-f", f]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("added: a, b"), "{out}");
    assert!(out.contains("registry version 1"), "{out}");
    let (code, out, _) = panoptes(&api, &["apply", "-f", f, "--if-version", "1"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("0 added, 0 updated, 0 removed, 2 unchanged; registry version 1"),
        "{out}"
    );

    let (code, out, _) = panoptes(&api, &["cameras", "list"]);
    assert_eq!(code, 0);
    assert!(!out.contains("hunter2"), "{out}");
    assert!(out.contains("rtsp://viewer:***@10.0.0.1:554/a"), "{out}");
    let b_line = out.lines().find(|l| l.starts_with("b ")).expect(&out);
    assert!(b_line.contains("gpu") && b_line.contains(" 5 "), "{b_line}");

    // update keeps the password it never saw.
    let (code, out, err) = panoptes(&api, &["cameras", "update", "a", "--fps", "12"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(api.stored_url("a").contains("hunter2"));
    let (code, out, _) = panoptes(&api, &["cameras", "get", "a"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("\"fps\": 12") && !out.contains("hunter2"),
        "{out}"
    );

    seed_cluster(&api);
    let (code, out, err) = panoptes(&api, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("leader: coord-1"), "{out}");
    assert!(out.contains("ing-1") && out.contains("w-1"), "{out}");
    let group_line = out.lines().find(|l| l.starts_with("default ")).expect(&out);
    assert!(
        group_line.split_whitespace().nth(2) == Some("3"),
        "desired replicas: {group_line}"
    );
    let cam_line = out.lines().find(|l| l.starts_with("a ")).expect(&out);
    assert!(
        cam_line.contains("ing-1") && cam_line.contains("4.8/12"),
        "{cam_line}"
    );
    let part_line = out.lines().find(|l| l.starts_with("eu:0 ")).expect(&out);
    assert!(
        part_line.contains("w-1") && part_line.contains(" 7 "),
        "{part_line}"
    );
    let (code, out, _) = panoptes(&api, &["status", "--json"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["leader"]["id"], "coord-1");

    let (code, out, _) = panoptes(&api, &["nodes"]);
    assert_eq!(code, 0);
    assert!(out.contains("w-dead"), "{out}");
    assert_eq!(panoptes(&api, &["drain", "worker", "w-1"]).0, 0);
    assert_eq!(
        api.redis_cmd::<Option<String>>(&["GET", "panoptes:drain:worker:w-1"])
            .as_deref(),
        Some("1")
    );
    assert_eq!(panoptes(&api, &["undrain", "worker", "w-1"]).0, 0);

    // Errors: non-zero exit with the server's message; nothing changed.
    let before = api.registry_dump();
    let failures: [(&[&str], &[&str]); 4] = [
        (
            &["apply", "-f", f, "--if-version", "0"],
            &["registry version is 2", "409"],
        ),
        (&["cameras", "rm", "ghost"], &["unknown camera", "404"]),
        (
            // A token on the command line is refused before anything is sent.
            &["--token", "wrong", "cameras", "list"],
            &["--token was removed", "PANOPTES_API_TOKEN"],
        ),
        (&["drain", "worker", "ghost"], &["404"]),
    ];
    for (args, wanted) in failures {
        let (code, _, err) = panoptes(&api, args);
        assert_ne!(code, 0, "{args:?}");
        assert!(wanted.iter().all(|w| err.contains(w)), "{args:?}: {err}");
    }
    let (code, _, err) = cli(
        &["cameras", "list"],
        &[
            ("PANOPTES_URL", api.base.as_str()),
            ("PANOPTES_API_TOKEN", "wrong"),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("invalid bearer token") && err.contains("401"),
        "{err}"
    );
    // The old variable still works, with a warning.
    let (code, out, err) = cli(
        &["cameras", "list"],
        &[
            ("PANOPTES_URL", api.base.as_str()),
            ("PANOPTES_TOKEN", TOKEN),
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("PANOPTES_TOKEN is deprecated"), "{err}");
    assert_eq!(api.registry_dump(), before);

    // Prune through the CLI, then rm.
    std::fs::write(&file, "cameras:\n  - id: a\n    url: rtsp://viewer:hunter2@10.0.0.1:554/a\n    region: eu\n    fps: 12\n").unwrap();
    let (code, out, err) = panoptes(&api, &["apply", "-f", f, "--no-prune"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 removed"), "{out}");
    let (code, out, _) = panoptes(&api, &["apply", "-f", f]);
    assert_eq!(code, 0);
    assert!(out.contains("removed: b"), "{out}");
    let (code, _, _) = panoptes(&api, &["cameras", "rm", "a"]);
    assert_eq!(code, 0);
    assert!(api.registry_dump().0.is_empty());
}

/// The real `panoptes-coordinator` binary serves the API (with its health and metrics
/// routes) and the CLI drives it: apply, list, status.
#[test]
fn real_coordinator_serves_the_api_to_the_cli() {
    use panoptes_testkit::coordinator::{Coordinator, TEST_TOKEN, config};
    let redis = panoptes_testkit::RedisServer::start().unwrap();
    let coord =
        Coordinator::start(&config("coord-e2e", &redis.url, "127.0.0.1:9", TOPIC, 4)).unwrap();
    coord
        .wait_leader(std::time::Duration::from_secs(10))
        .unwrap();
    let (_dir, file) = cameras_file(
        "cameras:\n  - id: lobby\n    url: rtsp://viewer:hunter2@10.0.0.1/lobby\n  - id: yard\n    url: rtsp://10.0.0.2/yard\n    region: local\n    fps: 2\n",
    );
    let run = |args: &[&str]| {
        let flags = ["--url", coord.http.as_str()];
        cli(
            &[&flags[..], args].concat(),
            &[("PANOPTES_API_TOKEN", TEST_TOKEN)],
        )
    };
    let (code, out, err) = run(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("added: lobby, yard"), "{out}");
    let (code, out, err) = run(&["cameras", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("rtsp://viewer:***@10.0.0.1/lobby") && !out.contains("hunter2"),
        "{out}"
    );
    let (code, out, err) = run(&["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("leader: coord-e2e"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("lobby ") && l.contains("local")),
        "{out}"
    );
    // Wrong token: refused with the server's message.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_panoptes"))
        .args(["--url", &coord.http, "status"])
        .env("PANOPTES_API_TOKEN", "nope")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid bearer token"));
    assert!(
        coord
            .metric(r#"panoptes_coordinator_api_requests_total{code="200",method="POST",route="/v1/apply"}"#)
            .is_some_and(|v| v >= 1.0)
    );
}
