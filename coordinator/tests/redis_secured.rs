//! A small deployment over Redis with TLS and ACL users, as production runs it: a real
//! `panoptes-coordinator` process (its leader loop and operator API authenticated as the
//! coordinator's user) and the real member agents of an ingest node and two workers (each
//! its own user). The leader grants, the members follow, a drain hands a partition over
//! (the release travels through the member's own key), camera passwords are sealed in
//! Redis, only a keyring holder opens them, and a key rotation re-seals the registry.
//! Needs `redis-server` built with TLS.

use std::time::Duration;

use anyhow::{Result, ensure};
use panoptes_coordinator::config::CoordinatorConfig;
use panoptes_coordinator_client::acl::Role;
use panoptes_coordinator_client::sealed::{KEYS_ENV, Keyring, SealError, key_id};
use panoptes_coordinator_client::{CameraRecord, MemberAgent, MemberConfig, MemberKind, keys};
use panoptes_testkit::redis::TEST_CAMERA_KEYS;
use panoptes_testkit::{Coordinator, RedisServer, unique_name, wait_until};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const T: Duration = Duration::from_secs(15);
const NEW_KEY: &str = "test2:ISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0A=";

fn member(kind: MemberKind, id: &str) -> (String, Role) {
    (
        id.to_string(),
        Role::Member {
            kind,
            id: Some(id.into()),
        },
    )
}

fn join(
    redis: &RedisServer,
    kind: MemberKind,
    id: &str,
    topic: &str,
) -> Result<(MemberAgent, CancellationToken)> {
    let cfg = MemberConfig::new(kind, id, redis.client_config(id))
        .placed("local", "default", 100.0)
        .serving(String::new(), topic)
        .timing(Duration::from_secs(1), Duration::from_millis(100));
    let cancel = CancellationToken::new();
    let (agent, _thread) = MemberAgent::start(cfg, cancel.clone())?;
    Ok((agent, cancel))
}

fn stored_camera(redis: &RedisServer, id: &str) -> Result<CameraRecord> {
    let mut c = redis.connection()?;
    let json: String = redis::cmd("HGET")
        .arg(keys::CAMERAS)
        .arg(id)
        .query(&mut c)?;
    Ok(serde_json::from_str(&json)?)
}

#[test]
fn a_deployment_runs_over_tls_and_acl_users_with_sealed_camera_passwords() -> Result<()> {
    let users = [
        ("coordinator".to_string(), Role::Coordinator),
        member(MemberKind::Ingest, "ingest-1"),
        member(MemberKind::Worker, "worker-1"),
        member(MemberKind::Worker, "worker-2"),
    ];
    let users: Vec<(&str, Role)> = users.iter().map(|(n, r)| (n.as_str(), r.clone())).collect();
    let redis = RedisServer::start_secured(&users, false)?;
    let topic = unique_name("frames");
    let mut cfg: CoordinatorConfig =
        panoptes_testkit::coordinator::config("c1", &redis.url, "127.0.0.1:9", &topic, 4);
    cfg.redis = redis.client_config("coordinator");
    let coord = Coordinator::start(&cfg)?;
    coord.wait_leader(T)?;

    // The operator API writes through the coordinator's user; the password is sealed.
    let url = "rtsp://viewer:hunter2@127.0.0.1:1/cam-1";
    coord.add_camera(&json!({"id": "cam-1", "url": url, "region": "local", "partition": 2}))?;
    let stored = stored_camera(&redis, "cam-1")?;
    ensure!(
        stored.url == "rtsp://viewer@127.0.0.1:1/cam-1",
        "{stored:?}"
    );
    let sealed = stored.password.clone().expect("password sealed");
    assert_eq!(key_id(&sealed), Some("test1"));
    let raw: String = redis::cmd("HGET")
        .arg(keys::CAMERAS)
        .arg("cam-1")
        .query(&mut redis.connection()?)?;
    ensure!(
        !raw.contains("hunter2"),
        "password in clear in Redis: {raw}"
    );
    let (_, listed) = coord.api("GET", "/v1/cameras/cam-1", None)?;
    assert_eq!(
        listed["url"], "rtsp://viewer:***@127.0.0.1:1/cam-1",
        "{listed}"
    );

    // Members, each as its own user, get their grants from the real leader.
    let (ingest, _ic) = join(&redis, MemberKind::Ingest, "ingest-1", &topic)?;
    let (w1, w1c) = join(&redis, MemberKind::Worker, "worker-1", &topic)?;
    let cam = wait_until("the camera is granted to ingest-1", T, || {
        let d = ingest.desired();
        d.grants
            .contains_key("cam-1")
            .then(|| d.cameras.get("cam-1").cloned())?
    })?;
    let first = wait_until("partition local:2 is granted to worker-1", T, || {
        w1.desired().grants.get("local:2").map(|g| g.epoch())
    })?;
    // Only a keyring holder opens the password; workers never read the registry.
    let keys1 = Keyring::parse(TEST_CAMERA_KEYS)?;
    assert_eq!(cam.opened(Some(&keys1))?.url, url);
    assert_eq!(cam.opened(None), Err(SealError::NoKeyring));
    ensure!(w1.desired().cameras.is_empty());

    // A drain: the leader retargets, worker-1 releases into its own key, the leader reads
    // the release and grants the partition to worker-2 at a higher epoch.
    let (w2, _w2c) = join(&redis, MemberKind::Worker, "worker-2", &topic)?;
    // The operator asks through the API (the drain flag is written as the coordinator).
    let (code, body) = coord.api("POST", "/v1/nodes/worker/worker-1/drain", None)?;
    assert_eq!(code, 200, "{body}");
    let moving = wait_until("the leader asks worker-1 to hand over", T, || {
        w1.desired()
            .grants
            .get("local:2")
            .filter(|g| g.moving())
            .cloned()
    })?;
    assert_eq!(moving.epoch(), first);
    ensure!(w1.release("local:2", first, None)?, "release refused");
    let second = wait_until("worker-2 gets the partition", T, || {
        w2.desired().grants.get("local:2").map(|g| g.epoch())
    })?;
    ensure!(second > first, "epoch {second} after {first}");
    w1c.cancel();
    // Every API view reads through the coordinator's user; the audit trail is written.
    for path in [
        "/v1/status",
        "/v1/assignments",
        "/v1/nodes",
        "/v1/cameras",
        "/v1/audit",
    ] {
        let (code, body) = coord.api("GET", path, None)?;
        assert_eq!(code, 200, "{path}: {body}");
    }
    assert_eq!(
        coord.metric("panoptes_coordinator_audit_write_failures_total"),
        Some(0.0)
    );

    // Key rotation: the coordinator restarts with a new primary (the old key kept for
    // opening) and re-seals the registry; a node holding only the old key can no longer open
    // it, one holding both can; the ingest node still sees the camera.
    drop(coord);
    let rotated = format!("{NEW_KEY}\n{TEST_CAMERA_KEYS}");
    let mut cfg2 = cfg.clone();
    cfg2.id = "c2".into();
    let coord2 = Coordinator::start_env(&cfg2, &[(KEYS_ENV, rotated.as_str())])?;
    let resealed = wait_until("the registry is re-sealed under test2", T, || {
        let r = stored_camera(&redis, "cam-1").ok()?;
        (r.password.as_deref().and_then(key_id) == Some("test2")).then_some(r)
    })?;
    let both = Keyring::parse(&rotated)?;
    assert_eq!(resealed.opened(Some(&both))?.url, url);
    assert_eq!(
        resealed.opened(Some(&keys1)),
        Err(SealError::UnknownKey("test2".into()))
    );
    let only_new = Keyring::parse(NEW_KEY)?;
    assert_eq!(resealed.opened(Some(&only_new))?.url, url);
    coord2.wait_leader(T)?;
    // An update that sends the password back redacted keeps the sealed one.
    let (code, _) = coord2.api(
        "PUT",
        "/v1/cameras/cam-1",
        Some(&json!({"id": "cam-1", "url": "rtsp://viewer:***@127.0.0.1:1/cam-1", "region": "local", "fps": 7})),
    )?;
    assert_eq!(code, 200);
    let kept = stored_camera(&redis, "cam-1")?;
    assert_eq!(
        (kept.fps, kept.opened(Some(&only_new))?.url.as_str()),
        (7, url)
    );
    Ok(())
}
