//! The operator API and the `panoptes` CLI against a real `redis-server`.

mod common;

use common::{Api, TOKEN, TOPIC, cam, put_member};
use panoptes_coordinator_client::{MemberKind, MemberRecord};
use serde_json::{Value, json};

fn assert_no_secret(v: &Value) {
    let s = v.to_string();
    assert!(!s.contains("hunter2"), "credentials leaked: {s}");
}

#[test]
fn cameras_crud_round_trip_never_returns_credentials() {
    let api = Api::start();
    let (code, v) = api.req("POST", "/v1/cameras", Some(&cam("dock-3", "eu")));
    assert_eq!(code, 201, "{v}");
    assert_no_secret(&v);
    assert_eq!(v["camera"]["url"], "rtsp://viewer:***@10.0.0.1:554/dock-3");
    assert_eq!(v["camera"]["partition"], 0);
    assert_eq!(v["camera"]["fps"], 5);
    assert_eq!(v["camera"]["width"], 640);
    assert_eq!(v["camera"]["height"], 360);
    assert_eq!(v["camera"]["group"], "default");
    assert_eq!(v["version"], 1);

    // The stored record keeps the password (ingest nodes need it).
    let (stored, version) = api.registry_dump();
    assert!(stored["dock-3"].contains("hunter2"));
    assert_eq!(version.as_deref(), Some("1"));

    let mut second = cam("gate", "us");
    second["fps"] = json!(12);
    second["group"] = json!("gpu");
    let (code, v) = api.req("POST", "/v1/cameras", Some(&second));
    assert_eq!(code, 201, "{v}");
    assert_eq!(v["camera"]["partition"], 1);

    let (code, v) = api.req("GET", "/v1/cameras", None);
    assert_eq!(code, 200);
    assert_no_secret(&v);
    assert_eq!(v["version"], 2);
    let ids: Vec<&str> = v["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["dock-3", "gate"]);

    let (code, v) = api.req("GET", "/v1/cameras/gate", None);
    assert_eq!(code, 200);
    assert_no_secret(&v);
    assert_eq!(
        (v["fps"].as_u64(), v["group"].as_str()),
        (Some(12), Some("gpu"))
    );

    // PUT with the redacted URL read back keeps the password; other fields change, the
    // partition stays.
    let mut upd = v.clone();
    upd["fps"] = json!(20);
    let (code, v) = api.req("PUT", "/v1/cameras/gate", Some(&upd));
    assert_eq!(code, 200, "{v}");
    assert_no_secret(&v);
    assert_eq!(
        (
            v["camera"]["fps"].as_u64(),
            v["camera"]["partition"].as_i64()
        ),
        (Some(20), Some(1))
    );
    let (stored, _) = api.registry_dump();
    assert!(
        stored["gate"].contains("viewer:hunter2@"),
        "{}",
        stored["gate"]
    );

    // A new password replaces it.
    let mut upd = cam("gate", "us");
    upd["url"] = json!("rtsps://viewer:n3w-secret@10.0.0.9/gate");
    let (code, v) = api.req("PUT", "/v1/cameras/gate", Some(&upd));
    assert_eq!(code, 200, "{v}");
    assert!(!v.to_string().contains("n3w-secret"));
    assert!(api.registry_dump().0["gate"].contains("n3w-secret"));

    let (code, v) = api.req("DELETE", "/v1/cameras/dock-3", None);
    assert_eq!((code, v["deleted"].as_str()), (200, Some("dock-3")));
    let (code, _) = api.req("GET", "/v1/cameras/dock-3", None);
    assert_eq!(code, 404);
    let (stored, version) = api.registry_dump();
    assert_eq!(stored.keys().collect::<Vec<_>>(), ["gate"]);
    assert_eq!(version.as_deref(), Some("5"));

    let m = api.metrics_text();
    assert!(
        m.contains(r#"panoptes_coordinator_api_requests_total{code="201",method="POST",route="/v1/cameras"} 2"#),
        "{m}"
    );
}

/// What, method, path, body, token, expected status.
type Case<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<String>,
    Option<&'a str>,
    u16,
);

#[test]
fn bad_input_gets_the_right_status_and_changes_nothing() {
    let api = Api::start();
    let mut held = cam("held", "eu");
    held["partition"] = json!(3);
    assert_eq!(api.req("POST", "/v1/cameras", Some(&held)).0, 201);
    assert_eq!(
        api.req("POST", "/v1/cameras", Some(&cam("other", "eu"))).0,
        201
    );
    let before = api.registry_dump();

    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = cam("new-cam", "eu");
        f(&mut c);
        c
    };
    let cases: Vec<Case> = vec![
        ("missing token", "GET", "/v1/cameras", None, None, 401),
        ("wrong token", "GET", "/v1/cameras", None, Some("nope"), 401),
        (
            "wrong token on write",
            "POST",
            "/v1/cameras",
            Some(cam("x", "eu").to_string()),
            Some("t0ken-for-testz"),
            401,
        ),
        (
            "wrong token on delete",
            "DELETE",
            "/v1/cameras/held",
            None,
            Some(""),
            401,
        ),
        (
            "unknown camera get",
            "GET",
            "/v1/cameras/ghost",
            None,
            Some(TOKEN),
            404,
        ),
        (
            "unknown camera put",
            "PUT",
            "/v1/cameras/ghost",
            Some(cam("ghost", "eu").to_string()),
            Some(TOKEN),
            404,
        ),
        (
            "unknown camera delete",
            "DELETE",
            "/v1/cameras/ghost",
            None,
            Some(TOKEN),
            404,
        ),
        (
            "not json",
            "POST",
            "/v1/cameras",
            Some("{not json".into()),
            Some(TOKEN),
            400,
        ),
        (
            "unknown field",
            "POST",
            "/v1/cameras",
            Some(with(&|c| c["fsp"] = json!(3)).to_string()),
            Some(TOKEN),
            400,
        ),
        (
            "malformed url",
            "POST",
            "/v1/cameras",
            Some(with(&|c| c["url"] = json!("rtsp//viewer:hunter2@")).to_string()),
            Some(TOKEN),
            422,
        ),
        (
            "http url",
            "POST",
            "/v1/cameras",
            Some(with(&|c| c["url"] = json!("http://viewer:hunter2@h/x")).to_string()),
            Some(TOKEN),
            422,
        ),
        (
            "unknown region",
            "POST",
            "/v1/cameras",
            Some(cam("new-cam", "mars").to_string()),
            Some(TOKEN),
            422,
        ),
        (
            "fps 0",
            "POST",
            "/v1/cameras",
            Some(with(&|c| c["fps"] = json!(0)).to_string()),
            Some(TOKEN),
            422,
        ),
        (
            "fps 61",
            "POST",
            "/v1/cameras",
            Some(with(&|c| c["fps"] = json!(61)).to_string()),
            Some(TOKEN),
            422,
        ),
        (
            "huge width",
            "POST",
            "/v1/cameras",
            Some(with(&|c| c["width"] = json!(100_000)).to_string()),
            Some(TOKEN),
            422,
        ),
        (
            "bad id",
            "POST",
            "/v1/cameras",
            Some(cam("../etc", "eu").to_string()),
            Some(TOKEN),
            422,
        ),
        (
            "partition out of range",
            "POST",
            "/v1/cameras",
            Some(with(&|c| c["partition"] = json!(8)).to_string()),
            Some(TOKEN),
            422,
        ),
        (
            "partition taken",
            "POST",
            "/v1/cameras",
            Some(with(&|c| c["partition"] = json!(3)).to_string()),
            Some(TOKEN),
            409,
        ),
        (
            "id taken",
            "POST",
            "/v1/cameras",
            Some(cam("held", "us").to_string()),
            Some(TOKEN),
            409,
        ),
        (
            "put: partition taken",
            "PUT",
            "/v1/cameras/other",
            Some(
                with(&|c| {
                    c["id"] = json!("other");
                    c["partition"] = json!(3)
                })
                .to_string(),
            ),
            Some(TOKEN),
            409,
        ),
        (
            "put: id mismatch",
            "PUT",
            "/v1/cameras/other",
            Some(cam("held", "eu").to_string()),
            Some(TOKEN),
            422,
        ),
        (
            "put: redacted password elsewhere",
            "PUT",
            "/v1/cameras/other",
            Some(
                with(&|c| {
                    c["id"] = json!("other");
                    c["url"] = json!("rtsp://viewer:***@10.9.9.9/other")
                })
                .to_string(),
            ),
            Some(TOKEN),
            422,
        ),
        (
            "put: fps out of range",
            "PUT",
            "/v1/cameras/other",
            Some(
                with(&|c| {
                    c["id"] = json!("other");
                    c["fps"] = json!(1000)
                })
                .to_string(),
            ),
            Some(TOKEN),
            422,
        ),
    ];
    for (what, method, path, body, token, want) in cases {
        let (code, v) = api.req_raw(method, path, body, token);
        assert_eq!(code, want, "{what}: {v}");
        let msg = v["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error message: {v}"));
        assert!(!msg.is_empty(), "{what}");
        assert!(!msg.contains("hunter2"), "{what}: {msg}");
        assert_eq!(api.registry_dump(), before, "{what} changed the registry");
    }
    let (code, v) = api.req("GET", "/v1/nope", None);
    assert_eq!(
        (code, v["error"].as_str()),
        (404, Some("no such API route"))
    );
    let (code, _) = api.req("PATCH", "/v1/cameras", None);
    assert_eq!(code, 405);
    let (_, v) = api.req_raw("GET", "/v1/cameras", None, None);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer"),
        "{v}"
    );
    // Every route needs the token.
    for (m, p) in [
        ("GET", "/v1/nodes"),
        ("GET", "/v1/status"),
        ("GET", "/v1/assignments"),
        ("POST", "/v1/apply"),
        ("POST", "/v1/nodes/worker/w1/drain"),
    ] {
        assert_eq!(api.req_raw(m, p, None, None).0, 401, "{m} {p}");
    }
}

fn apply(api: &Api, cameras: Value, prune: bool, if_version: Option<u64>) -> (u16, Value) {
    let mut body = json!({ "cameras": cameras, "prune": prune });
    if let Some(v) = if_version {
        body["if_version"] = json!(v);
    }
    api.req("POST", "/v1/apply", Some(&body))
}

fn ids(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

#[test]
fn apply_adds_updates_prunes_and_is_idempotent() {
    let api = Api::start();
    let file = json!([cam("a", "eu"), cam("b", "eu"), cam("c", "us")]);
    let (code, v) = apply(&api, file.clone(), true, Some(0));
    assert_eq!(code, 200, "{v}");
    assert_eq!(ids(&v["added"]), ["a", "b", "c"]);
    assert_eq!(v["version"], 1);

    // Same file again: nothing changes, not even the version.
    let before = api.registry_dump();
    let (code, v) = apply(&api, file, true, None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(ids(&v["unchanged"]), ["a", "b", "c"]);
    assert!(
        v["added"].as_array().unwrap().is_empty() && v["removed"].as_array().unwrap().is_empty()
    );
    assert_eq!(v["version"], 1);
    assert_eq!(api.registry_dump(), before);

    // Update b, drop c, add d: d gets the smallest partition not held (c's 2 is not reused
    // in the same apply).
    let mut b = cam("b", "eu");
    b["fps"] = json!(15);
    let (code, v) = apply(
        &api,
        json!([cam("a", "eu"), b, cam("d", "us")]),
        true,
        Some(1),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(ids(&v["added"]), ["d"]);
    assert_eq!(ids(&v["updated"]), ["b"]);
    assert_eq!(ids(&v["removed"]), ["c"]);
    assert_eq!(ids(&v["unchanged"]), ["a"]);
    assert_eq!(v["version"], 2);
    let (_, list) = api.req("GET", "/v1/cameras", None);
    assert_no_secret(&list);
    let parts: Vec<(String, i64)> = list["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["partition"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(parts, [("a".into(), 0), ("b".into(), 1), ("d".into(), 3)]);

    // Without prune, cameras missing from the file stay.
    let (code, v) = apply(&api, json!([cam("e", "eu")]), false, None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(ids(&v["added"]), ["e"]);
    assert!(v["removed"].as_array().unwrap().is_empty());
    assert_eq!(api.registry_dump().0.len(), 4);

    // An empty file with prune empties the registry.
    let (code, v) = apply(&api, json!([]), true, None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(ids(&v["removed"]), ["a", "b", "d", "e"]);
    assert!(api.registry_dump().0.is_empty());
}

#[test]
fn conflicting_apply_is_rejected_and_changes_nothing() {
    let api = Api::start_with(4);
    let mut held = cam("held", "eu");
    held["partition"] = json!(2);
    let (code, _) = apply(&api, json!([held.clone(), cam("x", "eu")]), true, None);
    assert_eq!(code, 200);
    let before = api.registry_dump();

    let mut p1a = cam("n1", "eu");
    p1a["partition"] = json!(1);
    let mut p1b = cam("n2", "eu");
    p1b["partition"] = json!(1);
    let mut on_held = cam("n3", "eu");
    on_held["partition"] = json!(2);
    let mut bad_fps = cam("n4", "eu");
    bad_fps["fps"] = json!(100);
    let cases: Vec<(&str, Value, bool, Option<u64>, u16)> = vec![
        (
            "duplicate ids",
            json!([cam("n1", "eu"), cam("n1", "us")]),
            true,
            None,
            422,
        ),
        (
            "partition clash in the file",
            json!([held.clone(), p1a.clone(), p1b]),
            true,
            None,
            409,
        ),
        (
            "partition held by a camera not in the file",
            json!([cam("x", "eu"), on_held.clone()]),
            true,
            None,
            409,
        ),
        ("... also without prune", json!([on_held]), false, None, 409),
        (
            "stale if_version",
            json!([held.clone(), cam("x", "eu"), cam("n5", "eu")]),
            true,
            Some(0),
            409,
        ),
        (
            "unknown region",
            json!([held.clone(), cam("n6", "mars")]),
            true,
            None,
            422,
        ),
        (
            "fps out of range",
            json!([held.clone(), bad_fps]),
            true,
            None,
            422,
        ),
        (
            "no free partition",
            json!([
                held.clone(),
                cam("x", "eu"),
                cam("n7", "eu"),
                cam("n8", "eu"),
                cam("n9", "eu")
            ]),
            true,
            None,
            409,
        ),
    ];
    for (what, cams, prune, ifv, want) in cases {
        let (code, v) = apply(&api, cams, prune, ifv);
        assert_eq!(code, want, "{what}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}: {v}"
        );
        assert_eq!(api.registry_dump(), before, "{what} changed the registry");
    }
    let (code, v) = api.req_raw(
        "POST",
        "/v1/apply",
        Some("{\"cameras\": 3}".into()),
        Some(TOKEN),
    );
    assert_eq!(code, 400, "{v}");
    assert_eq!(api.registry_dump(), before);

    // With the right version it goes through.
    let (code, v) = apply(&api, json!([held, cam("x", "eu"), p1a]), true, Some(1));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["version"], 2);
}

#[test]
fn concurrent_creates_never_share_a_partition() {
    let api = Api::start_with(16);
    std::thread::scope(|s| {
        for i in 0..12 {
            let base = api.base.clone();
            s.spawn(move || {
                let resp = reqwest::blocking::Client::new()
                    .post(format!("{base}/v1/cameras"))
                    .bearer_auth(TOKEN)
                    .json(&cam(&format!("c{i}"), "eu"))
                    .send()
                    .unwrap();
                assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text());
            });
        }
    });
    let (_, list) = api.req("GET", "/v1/cameras", None);
    let mut parts: Vec<i64> = list["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["partition"].as_i64().unwrap())
        .collect();
    parts.sort_unstable();
    assert_eq!(parts, (0..12).collect::<Vec<_>>());
    assert_eq!(list["version"], 12);
}

fn member(kind: MemberKind, id: &str, group: &str, report: Value) -> MemberRecord {
    MemberRecord {
        id: id.into(),
        kind,
        region: "eu".into(),
        group: group.into(),
        capacity: 40.0,
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
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_panoptes"))
        .args(args)
        .env("PANOPTES_URL", &api.base)
        .env("PANOPTES_TOKEN", TOKEN)
        .output()
        .expect("run panoptes");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_apply_cameras_list_status_and_errors() {
    let api = Api::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cameras.yaml");
    std::fs::write(
        &file,
        "cameras:\n  - id: a\n    url: rtsp://viewer:hunter2@10.0.0.1:554/a\n    region: eu\n    fps: 10\n  - id: b\n    url: rtsp://10.0.0.2/b\n    region: us\n    group: gpu\n    partition: 5\n",
    )
    .unwrap();
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
    assert!(api.registry_dump().0["a"].contains("hunter2"));
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
    let (code, _, err) = panoptes(&api, &["apply", "-f", f, "--if-version", "0"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("registry version is 2") && err.contains("409"),
        "{err}"
    );
    let (code, _, err) = panoptes(&api, &["cameras", "rm", "ghost"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("unknown camera") && err.contains("404"),
        "{err}"
    );
    let (code, _, err) = panoptes(&api, &["--token", "wrong", "cameras", "list"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("invalid bearer token") && err.contains("401"),
        "{err}"
    );
    let (code, _, err) = panoptes(&api, &["drain", "worker", "ghost"]);
    assert_ne!(code, 0);
    assert!(err.contains("404"), "{err}");
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
    use panoptes_testkit::coordinator::{Coordinator, CoordinatorSpec, TEST_TOKEN};
    let redis = panoptes_testkit::RedisServer::start().unwrap();
    let coord = Coordinator::start(&CoordinatorSpec::new(
        "coord-e2e",
        &redis.url,
        "127.0.0.1:9",
        TOPIC,
        4,
    ))
    .unwrap();
    coord
        .wait_leader(std::time::Duration::from_secs(10))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cameras.yaml");
    std::fs::write(
        &file,
        "cameras:\n  - id: lobby\n    url: rtsp://viewer:hunter2@10.0.0.1/lobby\n  - id: yard\n    url: rtsp://10.0.0.2/yard\n    region: local\n    fps: 2\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_panoptes"))
            .args(["--url", &coord.http, "--token", TEST_TOKEN])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = run(&["apply", "-f", file.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("added: lobby, yard"), "{out}");
    let (code, out, err) = run(&["cameras", "list"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("rtsp://viewer:***@10.0.0.1/lobby") && !out.contains("hunter2"),
        "{out}"
    );
    let (code, out, err) = run(&["status"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("leader: coord-e2e"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("lobby ") && l.contains("local")),
        "{out}"
    );
    // Wrong token: refused with the server's message.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_panoptes"))
        .args(["--url", &coord.http, "--token", "nope", "status"])
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

/// Redis unreachable: 503 with a clear message, and the API keeps answering.
#[test]
fn redis_down_is_a_503() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = panoptes_coordinator::api::router(panoptes_coordinator::api::ApiContext {
        redis_url: format!("redis://127.0.0.1:{port}/0"),
        token: None,
        frames_topic: TOPIC.into(),
        frames_partitions: 4,
        regions: vec!["eu".into()],
        metrics: prometheus::Registry::new(),
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (code, body) = rt.block_on(async move {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, app).await });
        let resp = reqwest::Client::new()
            .post(format!("http://{addr}/v1/cameras"))
            .json(&cam("a", "eu"))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    });
    assert_eq!(code, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("redis unavailable"),
        "{body}"
    );
}

/// A record the API cannot parse (written by hand, or by an older version) does not lock
/// the registry: it is listed as unreadable and can be replaced or deleted.
#[test]
fn unreadable_records_can_be_replaced_or_deleted() {
    let api = Api::start();
    assert_eq!(
        api.req("POST", "/v1/cameras", Some(&cam("good", "eu"))).0,
        201
    );
    api.redis_cmd::<()>(&[
        "HSET",
        "panoptes:cameras",
        "junk",
        "{\"url\": \"rtsp://u:hunter2@h/x\"",
    ]);
    api.redis_cmd::<()>(&["HSET", "panoptes:cameras", "junk2", "nope"]);
    let (code, v) = api.req("GET", "/v1/cameras", None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(ids(&v["unreadable"]), ["junk", "junk2"]);
    assert_eq!(v["cameras"].as_array().unwrap().len(), 1);
    let (code, v) = api.req("GET", "/v1/cameras/junk", None);
    assert_eq!(code, 500, "{v}");
    assert_no_secret(&v);
    assert_eq!(
        api.req("POST", "/v1/cameras", Some(&cam("junk", "eu"))).0,
        409
    );
    let (code, v) = api.req("PUT", "/v1/cameras/junk", Some(&cam("junk", "eu")));
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["camera"]["partition"], 1);
    let (code, _) = api.req("DELETE", "/v1/cameras/junk2", None);
    assert_eq!(code, 200);
    let (_, v) = api.req("GET", "/v1/cameras", None);
    assert!(v.get("unreadable").is_none(), "{v}");
    assert_eq!(v["cameras"].as_array().unwrap().len(), 2);
    // And apply prunes them like any other camera.
    api.redis_cmd::<()>(&["HSET", "panoptes:cameras", "junk3", "[]"]);
    let (code, v) = apply(&api, json!([cam("good", "eu")]), true, None);
    assert_eq!(code, 200, "{v}");
    assert_eq!(ids(&v["removed"]), ["junk", "junk3"]);
}
