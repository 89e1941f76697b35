//! The real `panoptes-coordinator` binary, started from its typed config: it refuses to
//! serve the operator API without a token (unless insecure on loopback), serves HTTPS with
//! tokens from a file and from the environment, and the real `panoptes` CLI drives it with
//! the test CA, a token from the environment and a camera password from a file or stdin.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use panoptes_coordinator::config::{CoordinatorConfig, Role, TokenConfig};
use panoptes_testkit::coordinator::{Coordinator, config};
use panoptes_testkit::http::request_json;
use panoptes_testkit::tls::TestPki;
use panoptes_testkit::{RedisServer, unique_name};

fn base_config(id: &str, redis: &RedisServer) -> CoordinatorConfig {
    let mut c = config(id, &redis.url, "127.0.0.1:9", &unique_name("frames"), 4);
    c.api.token = None;
    c
}

#[test]
fn refuses_to_start_without_a_token_unless_insecure_on_loopback() {
    let redis = RedisServer::start().unwrap();
    let timeout = Duration::from_secs(20);

    let mut c = base_config("no-token", &redis);
    c.http.listen = "0.0.0.0:0".parse().unwrap();
    let (code, err) = Coordinator::expect_refusal(&c, timeout).unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("the operator API has no token") && err.contains("insecure_no_auth"),
        "{err}"
    );

    c.api.insecure_no_auth = true;
    let (code, err) = Coordinator::expect_refusal(&c, timeout).unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("only allowed on a loopback address"), "{err}");

    // An empty token file is no token at all.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("token");
    std::fs::write(&empty, "\n").unwrap();
    let mut c = base_config("empty-token", &redis);
    c.api.token_file = Some(empty);
    let (code, err) = Coordinator::expect_refusal(&c, timeout).unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("api.token_file") && err.contains("is empty"),
        "{err}"
    );

    // Insecure on 127.0.0.1: it serves, and anyone is the operator `anonymous`.
    let mut c = base_config("insecure", &redis);
    c.api.insecure_no_auth = true;
    let coord = Coordinator::start(&c).unwrap();
    let camera = serde_json::json!({"id": "cam", "url": "rtsp://10.0.0.1/x"});
    let (code, v) = request_json(
        &coord.http,
        "POST",
        "/v1/cameras",
        Some(camera.to_string()),
        None,
    )
    .unwrap();
    assert_eq!(code, 201, "{v}");
    let (code, v) = request_json(&coord.http, "GET", "/v1/audit", None, None).unwrap();
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["entries"][0]["who"], "anonymous");
    assert!(coord.child.log_text().contains("WITHOUT authentication"));
}

/// Runs the `panoptes` CLI; `stdin` is written to its standard input.
fn cli(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_panoptes"))
        .args(args)
        .env_remove("PANOPTES_API_TOKEN")
        .env_remove("PANOPTES_TOKEN")
        .env_remove("PANOPTES_API_CA_FILE")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run panoptes");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn serves_https_with_roles_to_the_cli() {
    let pki = TestPki::generate().unwrap();
    let redis = RedisServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ops_file = dir.path().join("ops-token");
    std::fs::write(&ops_file, "ops-s3cret-token\n").unwrap();
    let pw_file = dir.path().join("camera-password");
    std::fs::write(&pw_file, "hunter2 with spaces&@:\n").unwrap();

    let mut c = base_config("tls", &redis);
    c.api.tls = pki.server();
    c.api.tokens = vec![
        TokenConfig {
            name: "ops".into(),
            role: Role::Operator,
            token_file: Some(ops_file),
            token_env: None,
        },
        TokenConfig {
            name: "ci".into(),
            role: Role::Viewer,
            token_file: None,
            token_env: Some("PANOPTES_TEST_CI_TOKEN".into()),
        },
    ];
    let coord =
        Coordinator::start_env(&c, &[("PANOPTES_TEST_CI_TOKEN", "ci-s3cret-token")]).unwrap();
    assert!(coord.http.starts_with("https://"), "{}", coord.http);
    let ca = pki.ca();
    let ca = ca.to_str().unwrap();
    let url = coord.http.as_str();
    let ops = [
        ("PANOPTES_API_TOKEN", "ops-s3cret-token"),
        ("PANOPTES_URL", url),
    ];
    let ci = [
        ("PANOPTES_API_TOKEN", "ci-s3cret-token"),
        ("PANOPTES_URL", url),
        ("PANOPTES_API_CA_FILE", ca),
    ];

    // The operator adds a camera with its password from a file, another from stdin.
    let pw = pw_file.to_str().unwrap();
    let (code, out, err) = cli(
        &[
            "--ca-file",
            ca,
            "cameras",
            "add",
            "lobby",
            "rtsp://viewer@10.0.0.1/lobby",
            "--password-file",
            pw,
        ],
        &ops,
        "",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("added lobby"), "{out}");
    let (code, out, err) = cli(
        &[
            "--ca-file",
            ca,
            "cameras",
            "add",
            "yard",
            "rtsp://admin@10.0.0.2/yard",
            "--password-stdin",
        ],
        &ops,
        "from-stdin-pw\n",
    );
    assert_eq!(code, 0, "{out}{err}");
    let stored = common::stored_urls(&redis);
    assert_eq!(
        stored["lobby"],
        "rtsp://viewer:hunter2%20with%20spaces&%40%3A@10.0.0.1/lobby"
    );
    assert_eq!(stored["yard"], "rtsp://admin:from-stdin-pw@10.0.0.2/yard");
    // A password in the URL together with a password file is refused before sending.
    let (code, _, err) = cli(
        &[
            "--ca-file",
            ca,
            "cameras",
            "add",
            "x",
            "rtsp://u:pw@h/x",
            "--password-file",
            pw,
        ],
        &ops,
        "",
    );
    assert_ne!(code, 0);
    assert!(err.contains("already holds a password"), "{err}");

    // The viewer lists (redacted) and reads the audit trail, but cannot remove.
    let (code, out, err) = cli(&["cameras", "list"], &ci, "");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("rtsp://viewer:***@10.0.0.1/lobby") && !out.contains("hunter2"),
        "{out}"
    );
    let (code, _, err) = cli(&["cameras", "rm", "lobby"], &ci, "");
    assert_ne!(code, 0);
    assert!(
        err.contains("role viewer") && err.contains("HTTP 403"),
        "{err}"
    );
    let (code, out, err) = cli(&["audit", "--limit", "5"], &ci, "");
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("OPERATION"),
        "{out}"
    );
    let row = |i: usize| lines[i].split_whitespace().skip(1).collect::<Vec<_>>();
    assert_eq!(
        row(1),
        [
            "ci",
            "viewer",
            "DELETE",
            "/v1/cameras/{id}",
            "/v1/cameras/lobby",
            "-",
            "denied"
        ]
    );
    assert_eq!(
        row(2),
        ["ops", "operator", "camera.create", "yard", "1->2", "ok"]
    );
    assert_eq!(
        row(3),
        ["ops", "operator", "camera.create", "lobby", "0->1", "ok"]
    );
    assert!(
        !out.contains("hunter2") && !out.contains("from-stdin-pw"),
        "{out}"
    );

    // TLS: no CA, a wrong CA, plain http: all refused with a clear error; no token: 401.
    let (code, _, err) = cli(&["cameras", "list"], &ops, "");
    assert_ne!(code, 0);
    assert!(err.contains("needs --ca-file"), "{err}");
    let other = pki.other_ca();
    let (code, _, err) = cli(
        &["--ca-file", other.to_str().unwrap(), "cameras", "list"],
        &ops,
        "",
    );
    assert_ne!(code, 0);
    assert!(err.contains("cannot reach the coordinator"), "{err}");
    let plain = url.replace("https://", "http://");
    let (code, _, _) = cli(&["--url", &plain, "cameras", "list"], &ops, "");
    assert_ne!(code, 0);
    let (code, _, err) = cli(
        &["cameras", "list"],
        &[("PANOPTES_URL", url), ("PANOPTES_API_CA_FILE", ca)],
        "",
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("missing bearer token") && err.contains("HTTP 401"),
        "{err}"
    );
}
