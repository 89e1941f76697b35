//! Test harness of the operator API: a real `redis-server` and the API router served
//! in-process by the coordinator's own server (`api::serve`, plain or TLS; its own tokio
//! runtime on a thread) on a free port.

#![allow(dead_code)]

pub mod members;
pub mod models;

use std::collections::BTreeMap;
use std::time::Duration;

use panoptes_coordinator::api::serve::{ConnMetrics, ServeOptions, serve};
use panoptes_coordinator::api::{Access, ApiContext, ApiToken, router};
use panoptes_coordinator::config::Role;
use panoptes_runtime::redact::Secret;
use panoptes_runtime::tls::TlsFiles;
use panoptes_testkit::RedisServer;
use panoptes_testkit::http::request_json;
use serde_json::{Value, json};

/// The operator token (named `default`).
pub const TOKEN: &str = "t0ken-for-tests";
/// A viewer token (named `ci`).
pub const VIEWER_TOKEN: &str = "v1ewer-t0ken-for-tests";
pub const TOPIC: &str = "panoptes.frames";

/// How the test API is served.
#[derive(Clone)]
pub struct ApiOptions {
    pub frames_partitions: i32,
    pub tls: Option<TlsFiles>,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    pub handshake_timeout: Duration,
    /// `None`: serve without authentication.
    pub tokens: Option<Vec<(&'static str, Role, &'static str)>>,
    /// Growing the frames topic (`None`: off).
    pub growth: Option<panoptes_coordinator::growth::FramesGrowth>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        Self {
            frames_partitions: 8,
            tls: None,
            max_body_bytes: 64 * 1024,
            max_connections: 64,
            handshake_timeout: Duration::from_secs(5),
            tokens: Some(vec![
                ("default", Role::Operator, TOKEN),
                ("ci", Role::Viewer, VIEWER_TOKEN),
            ]),
            growth: None,
        }
    }
}

/// Redis + the API on a free port; everything stops when dropped.
pub struct Api {
    pub redis: RedisServer,
    pub base: String,
    pub metrics: prometheus::Registry,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Api {
    /// Partitions `[0, 8)`, regions `eu` and `us`.
    pub fn start() -> Self {
        Self::start_with(8)
    }

    pub fn start_with(frames_partitions: i32) -> Self {
        Self::start_opts(ApiOptions {
            frames_partitions,
            ..ApiOptions::default()
        })
    }

    pub fn start_opts(o: ApiOptions) -> Self {
        let redis = RedisServer::start().expect("redis-server");
        let url = redis.url.clone();
        Self::serve_on(redis, &url, o)
    }

    /// Serves the API for the Redis at `redis_url` (kept alive by `redis`).
    pub fn serve_on(redis: RedisServer, redis_url: &str, o: ApiOptions) -> Self {
        let metrics = prometheus::Registry::new();
        let access = match &o.tokens {
            None => Access::InsecureNoAuth,
            Some(t) => Access::Tokens(
                t.iter()
                    .map(|(name, role, value)| ApiToken::new(*name, *role, &Secret::new(*value)))
                    .collect(),
            ),
        };
        let app = router(ApiContext {
            redis: redis_url.into(),
            camera_keys: Some(
                panoptes_coordinator_client::sealed::Keyring::parse(
                    panoptes_testkit::redis::TEST_CAMERA_KEYS,
                )
                .unwrap(),
            ),
            access,
            frames_topic: TOPIC.into(),
            frames_partitions: o.frames_partitions,
            growth: o.growth.clone().unwrap_or_else(|| {
                panoptes_coordinator::growth::FramesGrowth::off(TOPIC, o.frames_partitions)
            }),
            regions: vec!["eu".into(), "us".into()],
            max_body_bytes: o.max_body_bytes,
            metrics: metrics.clone(),
        });
        let opts = ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            tls: o.tls.clone(),
            max_connections: o.max_connections,
            handshake_timeout: o.handshake_timeout,
        };
        let conn_metrics = ConnMetrics::new(&metrics).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (base_tx, base_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let cancel = tokio_util::sync::CancellationToken::new();
                let server = serve(opts, app, conn_metrics, cancel.clone())
                    .await
                    .unwrap();
                base_tx.send(server.base_url()).unwrap();
                let _ = rx.await;
                cancel.cancel();
                let _ = server.task.await;
            });
        });
        let base = base_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("API started");
        Self {
            redis,
            base,
            metrics,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// Sends a request with the right token; `(status, json body)`.
    pub fn req(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.req_raw(method, path, body.map(Value::to_string), Some(TOKEN))
    }

    /// Sends a request with the viewer token.
    pub fn req_viewer(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.req_raw(method, path, body.map(Value::to_string), Some(VIEWER_TOKEN))
    }

    /// Any body text, any token (`None`: no Authorization header).
    pub fn req_raw(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        token: Option<&str>,
    ) -> (u16, Value) {
        request_json(&self.base, method, path, body, token).expect("request")
    }

    /// The registry exactly as stored: every field of `panoptes:cameras` plus the version.
    pub fn registry_dump(&self) -> (BTreeMap<String, String>, Option<String>) {
        let mut c = self.redis.connection().unwrap();
        let h: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg("panoptes:cameras")
            .query(&mut c)
            .unwrap();
        let v: Option<String> = redis::cmd("GET")
            .arg("panoptes:cameras:version")
            .query(&mut c)
            .unwrap();
        (h, v)
    }

    /// Camera `id`'s URL as stored, its sealed password opened (see [`stored_urls`]).
    pub fn stored_url(&self, id: &str) -> String {
        stored_urls(&self.redis).remove(id).unwrap_or_default()
    }

    pub fn redis_cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut c = self.redis.connection().unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c).unwrap()
    }

    pub fn metrics_text(&self) -> String {
        use prometheus::Encoder;
        let mut buf = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&self.metrics.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A camera body.
pub fn cam(id: &str, region: &str) -> Value {
    serde_json::json!({
        "id": id,
        "url": format!("rtsp://viewer:hunter2@10.0.0.1:554/{id}"),
        "region": region,
    })
}

/// Writes a member record with its lease, as a member agent would.
pub fn put_member(api: &Api, rec: &panoptes_coordinator_client::MemberRecord) {
    let mut c = api.redis.connection().unwrap();
    let key = panoptes_coordinator_client::keys::member(rec.kind, &rec.id);
    let mut cmd = redis::cmd("HSET");
    cmd.arg(&key);
    for (k, v) in rec.to_fields() {
        cmd.arg(k).arg(v);
    }
    cmd.query::<()>(&mut c).unwrap();
    redis::cmd("SADD")
        .arg(panoptes_coordinator_client::keys::members(rec.kind))
        .arg(&rec.id)
        .query::<()>(&mut c)
        .unwrap();
}

/// Shared by the API test files.
pub fn assert_no_secret(v: &Value) {
    let s = v.to_string();
    assert!(!s.contains("hunter2"), "credentials leaked: {s}");
}

/// Shared by the API test files.
pub fn apply(api: &Api, cameras: Value, prune: bool, if_version: Option<u64>) -> (u16, Value) {
    let mut body = json!({ "cameras": cameras, "prune": prune });
    if let Some(v) = if_version {
        body["if_version"] = json!(v);
    }
    api.req("POST", "/v1/apply", Some(&body))
}

/// The `key` member of each object in the JSON array `v`.
pub fn members(v: &Value, key: &str) -> Vec<Value> {
    let objects = v.as_array().unwrap();
    objects.iter().map(|o| o[key].clone()).collect()
}

/// Shared by the API test files.
pub fn ids(v: &Value) -> Vec<&str> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect()
}

/// Camera id → URL with its password, as stored: the record's bare URL with its sealed
/// password opened with the test keyring.
pub fn stored_urls(redis: &RedisServer) -> std::collections::BTreeMap<String, String> {
    use panoptes_coordinator_client::sealed::{Keyring, join_password};
    let keys = Keyring::parse(panoptes_testkit::redis::TEST_CAMERA_KEYS).unwrap();
    let mut c = redis.connection().unwrap();
    let raw: std::collections::BTreeMap<String, String> = redis::cmd("HGETALL")
        .arg("panoptes:cameras")
        .query(&mut c)
        .unwrap();
    raw.into_iter()
        .map(|(id, json)| {
            assert!(
                !json.contains("hunter2"),
                "a password in clear in Redis: {json}"
            );
            let rec: panoptes_coordinator_client::CameraRecord =
                serde_json::from_str(&json).unwrap();
            let url = match &rec.password {
                Some(sealed) => {
                    let pw = keys.open(&id, sealed).unwrap();
                    join_password(&rec.url, pw.expose()).unwrap()
                }
                None => rec.url.clone(),
            };
            (id, url)
        })
        .collect()
}

/// Runs the `panoptes` CLI with `args` and `env` only (none of the caller's `PANOPTES_*`
/// credentials or repository) → (exit code, stdout, stderr).
pub fn cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_panoptes"));
    for var in [
        "PANOPTES_API_TOKEN",
        "PANOPTES_TOKEN",
        "PANOPTES_API_TOKEN_FILE",
        "PANOPTES_API_CA_FILE",
        "PANOPTES_MODEL_REPOSITORY",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run panoptes");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
