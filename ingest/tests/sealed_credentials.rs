//! An ingest node in coordinator mode over Redis with TLS and its own ACL user, pulling a
//! camera that needs a password: the registry holds the password sealed; sealed under a key
//! the node does not hold, the camera is not started (a clear error, counted, the node keeps
//! running); sealed under the node's key, it is opened and the camera streams. The password
//! never shows in the node's logs or metrics. Needs `redis-server` with TLS, GStreamer.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::{broker_with_topic, start_coordinated};
use panoptes_coordinator_client::acl::Role;
use panoptes_coordinator_client::sealed::Keyring;
use panoptes_coordinator_client::{CameraRecord, MemberKind, RedisLink, keys, scripts};
use panoptes_testkit::redis::TEST_CAMERA_KEYS;
use panoptes_testkit::{CamSim, RedisServer, metric_value, wait_until};

const SECRET: &str = "s3aled-hunter2";
const OTHER_KEYS: &str = "gone:ISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0A=";

fn register(c: &mut redis::Connection, url: &str, keys_text: &str) -> Result<()> {
    let rec = CameraRecord {
        id: "c1".into(),
        url: url.into(),
        password: None,
        region: "local".into(),
        group: "default".into(),
        partition: 0,
        fps: 5,
        width: 640,
        height: 360,
        priority: 5,
        min_fps: 1,
        labels: Default::default(),
    }
    .sealed(Some(&Keyring::parse(keys_text)?))?;
    redis::cmd("HSET")
        .arg(keys::CAMERAS)
        .arg("c1")
        .arg(serde_json::to_string(&rec)?)
        .query::<()>(c)?;
    Ok(())
}

#[test]
fn sealed_passwords_open_only_with_the_nodes_key() -> Result<()> {
    let redis = RedisServer::start_secured(
        &[
            ("coordinator", Role::Coordinator),
            (
                "ingest-1",
                Role::Member {
                    kind: MemberKind::Ingest,
                    id: Some("ingest-1".into()),
                },
            ),
        ],
        false,
    )?;
    let (broker, topic) = broker_with_topic(1)?;
    let sim = CamSim::with_cameras(&[&format!("id=c1,fps=10,user=viewer,pass={SECRET}")])?;
    let node_redis = redis.client_config("ingest-1");
    let node = start_coordinated(&broker.bootstrap, &topic, "ingest-1", &redis.url, |c| {
        c.coordinator.redis = node_redis;
        c.coordinator.poll_interval = Duration::from_millis(200);
    })?;
    let mut lead =
        RedisLink::open(&redis.client_config("coordinator"))?.connect(Duration::from_secs(2))?;
    let token = scripts::leader_acquire(&mut lead, "test-leader", 60_000, "")?.expect("elected");
    let grant = |c: &mut redis::Connection| {
        scripts::grant(
            c,
            token,
            MemberKind::Ingest,
            &keys::camera_assign("c1"),
            &keys::camera_epoch("c1"),
            "c1",
            "ingest-1",
            &[("cluster", "local".into()), ("start_seq", "0".into())],
        )
    };
    let url = sim.url("c1", Some(("viewer", SECRET)));
    wait_until("ingest-1 registers", Duration::from_secs(20), || {
        let n: i64 = redis::cmd("EXISTS")
            .arg(keys::member(MemberKind::Ingest, "ingest-1"))
            .query(&mut lead)
            .ok()?;
        (n == 1).then_some(())
    })?;

    // Sealed under a key the node does not hold: not started, counted, node alive.
    register(&mut lead, &url, OTHER_KEYS)?;
    grant(&mut lead)?;
    let series = "panoptes_ingest_camera_credential_errors_total{reason=\"unknown_key\"}";
    wait_until(
        "the credential error is counted",
        Duration::from_secs(10),
        || (metric_value(&node.metrics(), series)? >= 1.0).then_some(()),
    )?;
    ensure!(
        node.camera("c1")["error"] == "no such camera on this node",
        "{}",
        node.camera("c1")
    );
    ensure!(node.proc.log_text().contains("unknown key id \"gone\""));

    // Sealed under the node's key (a coordinator holding it re-wrote the record) and granted
    // again: opened, authenticated to the camera, streaming.
    register(&mut lead, &url, TEST_CAMERA_KEYS)?;
    grant(&mut lead)?;
    node.wait_streaming("c1", Duration::from_secs(20))?;
    let text = format!(
        "{}{}{}",
        node.proc.log_text(),
        node.metrics(),
        node.camera("c1")
    );
    ensure!(
        !text.contains(SECRET),
        "the password leaked into logs, metrics or /cameras"
    );
    Ok(())
}
