//! The operator API's camera registry (CRUD, apply, conflicts, bad input) and its failure
//! modes, against a real `redis-server`. Cluster views, drain and the CLI: `api_cluster.rs`.

mod common;

use common::{Api, TOKEN, TOPIC, apply, assert_no_secret, cam, ids, members};
use serde_json::{Value, json};

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
    assert!(!stored["dock-3"].contains("hunter2"), "sealed at rest");
    assert_eq!(
        api.stored_url("dock-3"),
        "rtsp://viewer:hunter2@10.0.0.1:554/dock-3"
    );
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
    assert_eq!(members(&v["cameras"], "id"), ["dock-3", "gate"]);

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
    let stored = api.stored_url("gate");
    assert!(stored.contains("viewer:hunter2@"), "{stored}");

    // A new password replaces it.
    let mut upd = cam("gate", "us");
    upd["url"] = json!("rtsps://viewer:n3w-secret@10.0.0.9/gate");
    let (code, v) = api.req("PUT", "/v1/cameras/gate", Some(&upd));
    assert_eq!(code, 200, "{v}");
    assert!(!v.to_string().contains("n3w-secret"));
    assert!(api.stored_url("gate").contains("n3w-secret"));

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
    // Camera `other` with `field` changed, as a `PUT /v1/cameras/other` body.
    let other_with = |field: &str, value: Value| {
        let mut c = with(&|c| c["id"] = json!("other"));
        c[field] = value;
        c.to_string()
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
            Some(other_with("partition", json!(3))),
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
            Some(other_with("url", json!("rtsp://viewer:***@10.9.9.9/other"))),
            Some(TOKEN),
            422,
        ),
        (
            "put: fps out of range",
            "PUT",
            "/v1/cameras/other",
            Some(other_with("fps", json!(1000))),
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
    assert_eq!(members(&list["cameras"], "id"), ["a", "b", "d"]);
    assert_eq!(members(&list["cameras"], "partition"), [0, 1, 3]);

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

/// Redis unreachable: 503 with a clear message, and the API keeps answering.
#[test]
fn redis_down_is_a_503() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = panoptes_coordinator::api::router(panoptes_coordinator::api::ApiContext {
        redis: format!("redis://127.0.0.1:{port}/0").as_str().into(),
        camera_keys: None,
        access: panoptes_coordinator::api::Access::InsecureNoAuth,
        frames_topic: TOPIC.into(),
        frames_partitions: 4,
        growth: panoptes_coordinator::growth::FramesGrowth::off(TOPIC, 4),
        regions: vec!["eu".into()],
        max_body_bytes: 1 << 20,
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
