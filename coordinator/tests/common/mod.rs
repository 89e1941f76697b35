//! Test harness of the operator API: a real `redis-server` and the API router served
//! in-process (its own tokio runtime on a thread) on a free port.

#![allow(dead_code)]

use std::collections::BTreeMap;

use panoptes_coordinator::api::{ApiContext, router};
use panoptes_runtime::redact::Secret;
use panoptes_testkit::RedisServer;
use panoptes_testkit::http::request_json;
use serde_json::{Value, json};

pub const TOKEN: &str = "t0ken-for-tests";
pub const TOPIC: &str = "panoptes.frames";

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
        let redis = RedisServer::start().expect("redis-server");
        let metrics = prometheus::Registry::new();
        let app = router(ApiContext {
            redis_url: redis.url.clone(),
            token: Some(Secret::new(TOKEN)),
            frames_topic: TOPIC.into(),
            frames_partitions,
            regions: vec!["eu".into(), "us".into()],
            metrics: metrics.clone(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let l = tokio::net::TcpListener::from_std(listener).unwrap();
                axum::serve(l, app)
                    .with_graceful_shutdown(async {
                        let _ = rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        Self {
            redis,
            base: format!("http://{addr}"),
            metrics,
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    /// Sends a request with the right token; `(status, json body)`.
    pub fn req(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.req_raw(method, path, body.map(Value::to_string), Some(TOKEN))
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
