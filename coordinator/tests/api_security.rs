//! The operator API's defences, against a real `redis-server` and real TLS handshakes
//! (rustls on both sides, a throw-away PKI): HTTPS trusted only through its CA, mutual TLS,
//! bounded connections and handshake time, tokens with roles (401 / 403), the audit trail,
//! hostile input, and request metrics whose label series no client can multiply.
//! The real `panoptes-coordinator` binary (fail closed, TLS with roles, the CLI) is in
//! `api_secure_node.rs`.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Api, ApiOptions, TOKEN, VIEWER_TOKEN, assert_no_secret, cam};
use panoptes_coordinator::cli::Client;
use panoptes_runtime::redact::Secret;
use panoptes_runtime::tls::TlsFiles;
use panoptes_testkit::http::request;
use panoptes_testkit::tls::TestPki;
use panoptes_testkit::wait_until;
use reqwest::Method;
use serde_json::{Value, json};

fn client(api: &Api, tls: &TlsFiles, token: &str) -> Client {
    Client::new(&api.base, Some(Secret::new(token)), tls).expect("client")
}

fn metric(api: &Api, series: &str) -> f64 {
    panoptes_testkit::http::metric_value(&api.metrics_text(), series).unwrap_or(0.0)
}

#[test]
fn https_is_trusted_through_its_ca_only() {
    let pki = TestPki::generate().unwrap();
    let api = Api::start_opts(ApiOptions {
        tls: Some(pki.server()),
        ..ApiOptions::default()
    });
    assert!(api.base.starts_with("https://127.0.0.1:"), "{}", api.base);

    // The CLI's client trusting the test CA reads and writes over TLS.
    let good = client(&api, &pki.client(), TOKEN);
    let v = good
        .call(Method::POST, "/v1/cameras", Some(&cam("dock", "eu")))
        .unwrap();
    assert_eq!(v["version"], 1);
    let v = good.call(Method::GET, "/v1/cameras", None).unwrap();
    assert_eq!(v["cameras"][0]["id"], "dock");
    assert_no_secret(&v);

    // A client trusting another CA refuses the server; so does one without any CA.
    let wrong = client(&api, &pki.client_wrong_ca(), TOKEN);
    let err = wrong.call(Method::GET, "/v1/cameras", None).unwrap_err();
    assert!(
        matches!(err, panoptes_coordinator::cli::CliError::Other(_)),
        "{err}"
    );
    assert!(
        Client::new(&api.base, None, &TlsFiles::default())
            .err()
            .unwrap()
            .to_string()
            .contains("--ca-file")
    );
    // Plain HTTP on the TLS port gets nothing.
    let plain = api.base.replace("https://", "http://");
    assert!(request(&plain, "GET", "/v1/cameras", None, Some(TOKEN)).is_err());
    wait_until("handshake failures counted", Duration::from_secs(5), || {
        (metric(
            &api,
            r#"panoptes_coordinator_api_tls_handshake_failures_total{reason="error"}"#,
        ) >= 2.0)
            .then_some(())
    })
    .unwrap();
    // Nothing was changed by the refused clients.
    assert_eq!(api.registry_dump().1.as_deref(), Some("1"));
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate() {
    let pki = TestPki::generate().unwrap();
    let api = Api::start_opts(ApiOptions {
        tls: Some(pki.server_mutual()),
        ..ApiOptions::default()
    });
    let with_cert = client(&api, &pki.client_mutual(), VIEWER_TOKEN);
    let v = with_cert.call(Method::GET, "/v1/cameras", None).unwrap();
    assert_eq!(v["version"], 0);

    let before = metric(
        &api,
        r#"panoptes_coordinator_api_tls_handshake_failures_total{reason="error"}"#,
    );
    let without = client(&api, &pki.client(), VIEWER_TOKEN);
    let err = without.call(Method::GET, "/v1/cameras", None).unwrap_err();
    assert!(
        matches!(err, panoptes_coordinator::cli::CliError::Other(_)),
        "no certificate must fail at the TLS layer, not get an answer: {err}"
    );
    wait_until(
        "the refused handshake counted",
        Duration::from_secs(5),
        || {
            (metric(
                &api,
                r#"panoptes_coordinator_api_tls_handshake_failures_total{reason="error"}"#,
            ) > before)
                .then_some(())
        },
    )
    .unwrap();
}

/// A client that opens a connection and never speaks TLS does not hold up anyone else, and
/// is dropped after the handshake timeout.
#[test]
fn a_silent_client_neither_stalls_accept_nor_stays() {
    let pki = TestPki::generate().unwrap();
    let api = Api::start_opts(ApiOptions {
        tls: Some(pki.server()),
        handshake_timeout: Duration::from_millis(1500),
        ..ApiOptions::default()
    });
    let addr = api.base.trim_start_matches("https://").to_string();
    let mut silent = TcpStream::connect(&addr).unwrap();
    let t0 = Instant::now();
    let good = client(&api, &pki.client(), TOKEN);
    good.call(Method::GET, "/v1/cameras", None).unwrap();
    // Served long before the silent connection's handshake time is up (1.5 s): accept did
    // not wait for it.
    assert!(
        t0.elapsed() < Duration::from_millis(1000),
        "a request waited {:?} behind a silent connection",
        t0.elapsed()
    );
    // The server closes the silent connection once its handshake time is up.
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 16];
    match silent.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the server should close a silent connection, got {other:?}"),
    }
    let closed_after = t0.elapsed();
    assert!(
        (Duration::from_millis(1400)..Duration::from_secs(4)).contains(&closed_after),
        "closed after {closed_after:?}, handshake timeout 1.5 s"
    );
    wait_until(
        "the handshake timeout counted",
        Duration::from_secs(5),
        || {
            (metric(
                &api,
                r#"panoptes_coordinator_api_tls_handshake_failures_total{reason="timeout"}"#,
            ) == 1.0)
                .then_some(())
        },
    )
    .unwrap();
}

#[test]
fn connections_over_the_bound_are_closed_and_counted() {
    let api = Api::start_opts(ApiOptions {
        max_connections: 3,
        ..ApiOptions::default()
    });
    let addr = api.base.trim_start_matches("http://").to_string();
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    wait_until("3 connections open", Duration::from_secs(5), || {
        (metric(&api, "panoptes_coordinator_api_connections_open") == 3.0).then_some(())
    })
    .unwrap();
    assert!(request(&api.base, "GET", "/v1/cameras", None, Some(TOKEN)).is_err());
    assert!(metric(&api, "panoptes_coordinator_api_connections_rejected_total") >= 1.0);
    drop(held);
    let (code, _) = wait_until("a free slot", Duration::from_secs(5), || {
        request(&api.base, "GET", "/v1/cameras", None, Some(TOKEN)).ok()
    })
    .unwrap();
    assert_eq!(code, 200);
}

#[test]
fn viewers_read_operators_write_strangers_get_nothing() {
    let api = Api::start();
    // No token, unknown token: 401 on reads and writes alike, counted.
    for (m, p) in [
        ("GET", "/v1/cameras"),
        ("POST", "/v1/cameras"),
        ("GET", "/v1/audit"),
    ] {
        assert_eq!(api.req_raw(m, p, None, None).0, 401, "{m} {p}");
        assert_eq!(api.req_raw(m, p, None, Some("guess")).0, 401, "{m} {p}");
    }
    assert_eq!(
        metric(
            &api,
            r#"panoptes_coordinator_api_auth_failures_total{reason="missing"}"#
        ),
        3.0
    );
    assert_eq!(
        metric(
            &api,
            r#"panoptes_coordinator_api_auth_failures_total{reason="invalid"}"#
        ),
        3.0
    );

    // The viewer reads everything, writes nothing.
    for p in [
        "/v1/cameras",
        "/v1/nodes",
        "/v1/status",
        "/v1/assignments",
        "/v1/audit",
    ] {
        assert_eq!(api.req_viewer("GET", p, None).0, 200, "{p}");
    }
    let before = api.registry_dump();
    let writes: [(&str, &str, Option<Value>); 5] = [
        ("POST", "/v1/cameras", Some(cam("a", "eu"))),
        ("PUT", "/v1/cameras/a", Some(cam("a", "eu"))),
        ("DELETE", "/v1/cameras/a", None),
        (
            "POST",
            "/v1/apply",
            Some(json!({"cameras": [], "prune": true})),
        ),
        ("POST", "/v1/nodes/worker/w-1/drain", None),
    ];
    for (m, p, body) in &writes {
        let (code, v) = api.req_viewer(m, p, body.as_ref());
        assert_eq!(code, 403, "{m} {p}: {v}");
        assert!(v["error"].as_str().unwrap().contains("role viewer"), "{v}");
    }
    assert_eq!(api.registry_dump(), before);
    assert_eq!(
        metric(
            &api,
            r#"panoptes_coordinator_api_auth_failures_total{reason="forbidden"}"#
        ),
        5.0
    );

    // The operator writes.
    let (code, v) = api.req("POST", "/v1/cameras", Some(&cam("a", "eu")));
    assert_eq!(code, 201, "{v}");

    // Denied writes are in the audit trail, with the viewer's name.
    let (_, v) = api.req_viewer("GET", "/v1/audit?limit=10", None);
    let entries = v["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 6, "{v}");
    assert_eq!(entries[0]["who"], "default");
    assert_eq!(entries[0]["op"], "camera.create");
    let denied: Vec<&Value> = entries
        .iter()
        .filter(|e| e["outcome"] == "denied")
        .collect();
    assert_eq!(denied.len(), 5);
    assert!(
        denied
            .iter()
            .all(|e| e["who"] == "ci" && e["role"] == "viewer")
    );
    assert!(
        denied
            .iter()
            .any(|e| e["op"] == "DELETE /v1/cameras/{id}" && e["target"] == "/v1/cameras/a")
    );
}

#[test]
fn audit_trail_says_who_what_and_versions_and_never_a_password() {
    let api = Api::start();
    let (code, _) = api.req("POST", "/v1/cameras", Some(&cam("gate", "eu")));
    assert_eq!(code, 201);
    let mut upd = cam("gate", "eu");
    upd["url"] = json!("rtsps://viewer:n3w-hunter2@10.0.0.9/gate");
    upd["fps"] = json!(9);
    assert_eq!(api.req("PUT", "/v1/cameras/gate", Some(&upd)).0, 200);
    // The same update again changes nothing: the version does not move.
    assert_eq!(api.req("PUT", "/v1/cameras/gate", Some(&upd)).0, 200);
    let (code, _) = common::apply(&api, json!([upd.clone(), cam("yard", "us")]), false, None);
    assert_eq!(code, 200);
    assert_eq!(api.req("DELETE", "/v1/cameras/yard", None).0, 200);
    common::put_member(&api, &member("w-1"));
    assert_eq!(api.req("POST", "/v1/nodes/worker/w-1/drain", None).0, 200);
    // Failed writes are not changes.
    assert_eq!(api.req("DELETE", "/v1/cameras/ghost", None).0, 404);

    let (code, v) = api.req_viewer("GET", "/v1/audit", None);
    assert_eq!(code, 200, "{v}");
    assert_no_secret(&v);
    let e = v["entries"].as_array().unwrap();
    let summary: Vec<(&str, &str, Option<u64>, Option<u64>)> = e
        .iter()
        .map(|e| {
            (
                e["op"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
                e["version_before"].as_u64(),
                e["version_after"].as_u64(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("node.drain", "worker/w-1", None, None),
            ("camera.delete", "yard", Some(3), Some(4)),
            ("apply", "registry", Some(2), Some(3)),
            ("camera.update", "gate", Some(2), Some(2)),
            ("camera.update", "gate", Some(1), Some(2)),
            ("camera.create", "gate", Some(0), Some(1)),
        ]
    );
    assert!(
        e.iter()
            .all(|e| e["who"] == "default" && e["role"] == "operator")
    );
    assert!(
        e.iter()
            .all(|e| e["outcome"] == "ok" && e["time_ms"].as_u64() > Some(0))
    );
    assert_eq!(
        e[4]["details"]["camera"]["url"],
        "rtsps://viewer:***@10.0.0.9/gate"
    );
    assert_eq!(e[4]["details"]["camera"]["fps"], 9);
    assert_eq!(e[2]["details"]["added"], json!(["yard"]));
    assert_eq!(e[2]["details"]["unchanged"], 1);
    assert_eq!(e[2]["details"]["prune"], false);

    // limit: newest first, bounded, validated.
    let (_, v) = api.req("GET", "/v1/audit?limit=2", None);
    assert_eq!(v["entries"].as_array().unwrap().len(), 2);
    assert_eq!(v["entries"][0]["op"], "node.drain");
    for bad in ["limit=0", "limit=1001", "limit=abc", "lmit=3"] {
        let (code, v) = api.req("GET", &format!("/v1/audit?{bad}"), None);
        assert_eq!(code, 400, "{bad}: {v}");
        assert!(v["error"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }

    // The stream itself holds no password either, and is capped.
    let raw: Vec<(String, Vec<(String, String)>)> =
        api.redis_cmd(&["XRANGE", "panoptes:audit", "-", "+"]);
    assert_eq!(raw.len(), 6);
    let text = format!("{raw:?}");
    assert!(!text.contains("hunter2"), "{text}");
}

fn member(id: &str) -> panoptes_coordinator_client::MemberRecord {
    panoptes_coordinator_client::MemberRecord {
        id: id.into(),
        kind: panoptes_coordinator_client::MemberKind::Worker,
        region: "eu".into(),
        group: "default".into(),
        capacity: 1.0,
        node_class: "cpu".into(),
        load: 0.0,
        http: String::new(),
        state: "active".into(),
        broker_ok: true,
        session: "s".into(),
        report: Value::Null,
        updated_ms: 1,
    }
}

#[test]
fn hostile_input_gets_clear_4xx_answers() {
    let api = Api::start();
    let big = format!(
        "{{\"id\": \"x\", \"url\": \"rtsp://h/{}\"}}",
        "a".repeat(100 * 1024)
    );
    let (code, v) = api.req_raw("POST", "/v1/cameras", Some(big.clone()), Some(TOKEN));
    assert_eq!(code, 413, "{v}");
    assert!(v["error"].as_str().unwrap().contains("too large"), "{v}");
    // Unauthenticated, the body is never read: 401.
    assert_eq!(api.req_raw("POST", "/v1/cameras", Some(big), None).0, 401);
    let (code, v) = api.req_raw(
        "POST",
        "/v1/apply",
        Some("{\"cameras\": [".into()),
        Some(TOKEN),
    );
    assert_eq!(code, 400, "{v}");
    let (code, v) = api.req_raw("BREW", "/v1/cameras", None, Some(TOKEN));
    assert_eq!(code, 405, "{v}");
    assert_eq!(v["error"], "method not allowed on this route");
    let (code, v) = api.req_raw("PATCH", "/v1/status", None, Some(TOKEN));
    assert_eq!(code, 405, "{v}");
    assert!(api.registry_dump().0.is_empty());
    for series in [
        r#"panoptes_coordinator_api_requests_total{code="413",method="POST",route="/v1/cameras"}"#,
        r#"panoptes_coordinator_api_requests_total{code="400",method="POST",route="/v1/apply"}"#,
        r#"panoptes_coordinator_api_requests_total{code="405",method="other",route="/v1/cameras"}"#,
        r#"panoptes_coordinator_api_requests_total{code="405",method="PATCH",route="/v1/status"}"#,
    ] {
        assert_eq!(metric(&api, series), 1.0, "{series}");
    }
}

/// The request metric's series after hostile requests: every label value from a fixed set.
fn request_series(api: &Api) -> Vec<(String, f64)> {
    api.metrics_text()
        .lines()
        .filter(|l| l.starts_with("panoptes_coordinator_api_requests_total{"))
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

/// 50 unauthenticated requests with invented methods on random paths, twice: the request
/// metric gets exactly two series (catch-all and camera routes, method `other`, code 401)
/// and no label value from the requests.
#[test]
fn invented_methods_and_paths_never_add_label_series() {
    let api = Api::start();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(std::process::id());
    let mut word = |len: usize| {
        (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b'A' + (seed % 26) as u8)
            })
            .collect::<String>()
    };
    let mut invented = Vec::new();
    for round in 0..2 {
        for i in 0..50 {
            let method = format!("X{}", word(6));
            let path = match i % 3 {
                0 => format!("/v1/{}/{}", word(8).to_lowercase(), word(4)),
                1 => format!("/v1/cameras/{}", word(10).to_lowercase()),
                _ => format!("/{}", word(12).to_lowercase()),
            };
            let (code, _) = request(&api.base, &method, &path, None, None).unwrap();
            assert!(code == 401 || code == 404, "{method} {path}: {code}");
            invented.push(method);
            invented.push(path);
        }
        let series = request_series(&api);
        let names: Vec<&str> = series.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                r#"panoptes_coordinator_api_requests_total{code="401",method="other",route="/v1/cameras/{id}"}"#,
                r#"panoptes_coordinator_api_requests_total{code="401",method="other",route="/v1/{*rest}"}"#,
            ],
            "round {round}"
        );
        // 17 + 17 of every 50 are under /v1; the others are outside the API.
        let total: f64 = series.iter().map(|(_, v)| v).sum();
        assert_eq!(total, 34.0 * f64::from(round + 1));
    }
    let text = api.metrics_text();
    for s in &invented {
        assert!(!text.contains(s.as_str()), "{s} became a label value");
    }
}
