//! Coordinator mode end to end: two real `panoptes-ingest` processes registered in a real
//! Redis, a real broker and camera simulator; the test plays the leader with the protocol
//! crate's Lua scripts. Cameras are granted, moved between nodes with their sequence handed
//! over (no gap, no duplicate), taken over after a `kill -9`, and drained on SIGTERM.
//! Credentials never show in logs, metrics, `/cameras` or the member records.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, ensure};
use common::leader::Leader;
use common::{broker_with_topic, camera_seqs, start_coordinated};
use panoptes_coordinator_client::CameraRecord;
use panoptes_coordinator_client::records::default_group;
use panoptes_ingest::config::{CameraConfig, IngestConfig};
use panoptes_testkit::kafka::{FrameRecord, TopicReader, by_camera};
use panoptes_testkit::{CamSim, DevBroker, RedisServer, metric_value, wait_until};

const SECRET: &str = "hunter2secret";
const REGION: &str = "local";
/// Quick polling, a 4 s drain and quick reconnects.
fn node_settings(c: &mut IngestConfig) {
    c.coordinator.poll_interval = Duration::from_millis(200);
    c.coordinator.drain_timeout = Duration::from_secs(4);
    let d = &mut c.camera_defaults;
    d.backoff_initial = Duration::from_millis(200);
    d.backoff_max = Duration::from_secs(1);
    d.connect_timeout = Duration::from_secs(5);
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Reads the frames topic for the whole test (the dev broker keeps only recent records).
struct Frames {
    reader: TopicReader,
    records: Vec<FrameRecord>,
}

impl Frames {
    fn pump(&mut self, d: Duration) -> Result<()> {
        self.reader.read_for(d, &mut self.records)
    }

    /// Reads until a frame of `camera` with `seq >= from` arrives; returns its header time.
    fn first_from(&mut self, camera: &str, from: u64, timeout: Duration) -> Result<i64> {
        let deadline = Instant::now() + timeout;
        loop {
            let hit = self
                .records
                .iter()
                .filter_map(|r| r.headers.as_ref().ok())
                .find(|h| h.camera_id == camera && h.seq >= from);
            if let Some(h) = hit {
                return Ok(h.capture_time_us);
            }
            ensure!(
                Instant::now() < deadline,
                "no frame of {camera} with seq >= {from} within {timeout:?}"
            );
            self.pump(Duration::from_millis(100))?;
        }
    }

    fn max_seq(&self, camera: &str) -> Option<u64> {
        self.records
            .iter()
            .filter_map(|r| r.headers.as_ref().ok())
            .filter(|h| h.camera_id == camera)
            .map(|h| h.seq)
            .max()
    }

    /// (seq, partition) of `camera`'s frames, in topic order.
    fn seqs(&self, camera: &str) -> Vec<(u64, i32)> {
        by_camera(&self.records)
            .get(camera)
            .map(|v| {
                v.iter()
                    .map(|r| (r.headers.as_ref().unwrap().seq, r.partition))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A registry record as a coordinator stores it (a password in the URL sealed with the
/// test keyring, which testkit gives ingest nodes).
fn record(id: &str, url: String, partition: i32) -> CameraRecord {
    let keys = panoptes_coordinator_client::sealed::Keyring::parse(
        panoptes_testkit::redis::TEST_CAMERA_KEYS,
    )
    .expect("test keyring");
    CameraRecord {
        id: id.into(),
        url,
        password: None,
        region: REGION.into(),
        group: default_group(),
        partition,
        fps: 5,
        width: 640,
        height: 360,
        priority: 5,
        min_fps: 1,
        labels: Default::default(),
    }
    .sealed(Some(&keys))
    .expect("sealed")
}

fn assert_continuous(camera: &str, seqs: &[(u64, i32)], partition: i32) {
    assert!(!seqs.is_empty(), "{camera}: no frames");
    assert!(
        seqs.iter().all(|(_, p)| *p == partition),
        "{camera}: frames outside partition {partition}"
    );
    let s: Vec<u64> = seqs.iter().map(|(s, _)| *s).collect();
    let bad: Vec<&[u64]> = s.windows(2).filter(|w| w[1] != w[0] + 1).collect();
    assert!(
        bad.is_empty(),
        "{camera}: gaps or duplicates at {bad:?} (first {}, last {})",
        s[0],
        s[s.len() - 1]
    );
    assert_eq!(s[0], 0, "{camera}: does not start at 0");
}

fn no_secret(what: &str, text: &str) {
    assert!(
        !text.contains(SECRET),
        "the camera password leaked into {what}"
    );
}

#[test]
fn cameras_are_granted_moved_taken_over_and_drained() -> Result<()> {
    let redis = RedisServer::start()?;
    let (broker, topic) = broker_with_topic(4)?;
    let sim = CamSim::with_cameras(&[
        "id=c0,fps=10",
        &format!("id=c1,fps=10,user=viewer,pass={SECRET}"),
    ])?;
    let mut leader = Leader::new(&redis.url)?;
    let mut frames = Frames {
        reader: TopicReader::new(&broker.bootstrap, &topic)?,
        records: Vec::new(),
    };

    let a = start_coordinated(
        &broker.bootstrap,
        &topic,
        "ingest-a",
        &redis.url,
        node_settings,
    )?;
    let mut b = start_coordinated(
        &broker.bootstrap,
        &topic,
        "ingest-b",
        &redis.url,
        node_settings,
    )?;
    wait_until("both nodes registered", Duration::from_secs(20), || {
        let (ma, mb) = (
            leader.member("ingest-a").ok()??,
            leader.member("ingest-b").ok()??,
        );
        (ma.state == "active" && mb.state == "active").then_some(())
    })?;
    let ma = leader.member("ingest-a")?.unwrap();
    assert_eq!((ma.region.as_str(), ma.group.as_str()), (REGION, "default"));
    assert!((ma.capacity - 40.0).abs() < 1e-9);
    assert_eq!(ma.http, a.http);

    // 1. Both cameras to A, with explicit partitions.
    leader.register(&record("c0", sim.url("c0", None), 1))?;
    leader.register(&record("c1", sim.url("c1", Some(("viewer", SECRET))), 2))?;
    leader.grant("c0", "ingest-a", REGION, 0)?;
    let e1 = leader.grant("c1", "ingest-a", REGION, 0)?;
    a.wait_streaming("c0", Duration::from_secs(20))?;
    a.wait_streaming("c1", Duration::from_secs(20))?;
    frames.first_from("c1", 3, Duration::from_secs(10))?;
    let report = wait_until("A reports both cameras", Duration::from_secs(10), || {
        let m = leader.member("ingest-a").ok()??;
        (m.report["cameras"]["c1"]["state"] == "streaming"
            && m.report["cameras"]["c0"]["fps"].as_f64()? > 2.0
            && m.broker_ok)
            .then_some(m)
    })?;
    assert!((report.load - 10.0).abs() < 1e-6, "load = {}", report.load);
    assert!(report.report["cameras"]["c1"]["next_seq"].as_u64().unwrap() > 0);
    let listed = serde_json::to_string(&a.cameras())?;
    assert!(listed.contains("viewer:***@"), "{listed}");
    no_secret("A's /cameras", &listed);

    // 2. Move c1 to B: A hands it over with its next sequence number.
    let (released, handover) = leader.hand_over("c1", "ingest-a", e1, "ingest-b")?;
    let released_seq = released.released_seq.expect("released_seq set");
    assert_eq!(a.camera("c1")["error"], "no such camera on this node");
    assert_eq!(
        metric_value(
            &a.metrics(),
            "panoptes_ingest_handovers_total{result=\"ok\"}"
        ),
        Some(1.0)
    );
    assert!(
        !a.metrics().contains("camera=\"c1\""),
        "A kept c1's metric series after the handover"
    );
    let grant_us = now_us();
    leader.grant("c1", "ingest-b", REGION, released_seq)?;
    let first_b = frames.first_from("c1", released_seq, Duration::from_secs(20))?;
    let move_gap = Duration::from_micros((first_b - grant_us).max(0) as u64);
    b.wait_streaming("c1", Duration::from_secs(10))?;

    // 3. kill -9 A: after its lease expires, c0 goes to B, from the last seq on Kafka + 1.
    frames.pump(Duration::from_secs(2))?;
    let e0 = leader.assignment("c0")?.epoch;
    a.proc.signal("KILL")?;
    let t_kill = Instant::now();
    wait_until("A's lease expires", Duration::from_secs(5), || {
        leader.member("ingest-a").ok()?.is_none().then_some(())
    })?;
    let lease_expiry = t_kill.elapsed();
    frames.pump(Duration::from_millis(300))?;
    let next = frames.max_seq("c0").unwrap() + 1;
    let grant_us = now_us();
    let e0b = leader.grant("c0", "ingest-b", REGION, next)?;
    assert!(e0b > e0);
    let first_b0 = frames.first_from("c0", next, Duration::from_secs(20))?;
    let takeover = Duration::from_micros((first_b0 - grant_us).max(0) as u64);
    frames.pump(Duration::from_secs(2))?;

    // Credentials: nowhere but the registry.
    no_secret("A's log", &a.proc.log_text());
    no_secret("B's log", &b.proc.log_text());
    no_secret("B's metrics", &b.metrics());
    no_secret("B's /cameras", &serde_json::to_string(&b.cameras())?);
    no_secret("Redis (outside the camera registry)", &leader.dump()?);
    for r in &frames.records {
        for (k, v) in &r.raw_headers {
            no_secret(&format!("frame header {k}"), &String::from_utf8_lossy(v));
        }
    }

    // 4. SIGTERM B: it drains. The leader moves c1 away (handed over), c0 is left until the
    // drain timeout; B then stops, releases c0 with its next sequence and leaves.
    let ec1 = leader.assignment("c1")?.epoch;
    b.proc.signal("TERM")?;
    wait_until("B draining", Duration::from_secs(5), || {
        (leader.member("ingest-b").ok()??.state == "draining").then_some(())
    })?;
    assert!(leader.retarget("c1", "ingest-b", ec1, "ingest-a")?);
    let t_term = Instant::now();
    wait_until("B exits", Duration::from_secs(20), || {
        (!b.proc.is_running()).then_some(())
    })?;
    let drain_time = t_term.elapsed();
    ensure!(
        leader.member("ingest-b")?.is_none(),
        "B's member record survived its exit"
    );
    frames.pump(Duration::from_secs(2))?;
    let c1 = leader.assignment("c1")?;
    assert_eq!(c1.released, Some(ec1));
    assert_eq!(c1.released_seq, Some(frames.max_seq("c1").unwrap() + 1));
    let c0 = leader.assignment("c0")?;
    assert_eq!(c0.released, Some(e0b), "c0 not released at shutdown");
    assert_eq!(c0.released_seq, Some(frames.max_seq("c0").unwrap() + 1));
    let b_log = b.proc.log_text();
    assert!(b_log.contains("camera handed over") && b_log.contains("camera released at shutdown"));
    no_secret("B's log", &b_log);

    // Downstream: each camera in its own partition, every number once, none missing.
    let s0 = frames.seqs("c0");
    let s1 = frames.seqs("c1");
    assert_continuous("c0", &s0, 1);
    assert_continuous("c1", &s1, 2);
    eprintln!(
        "handover (retarget → released) {handover:?}; move (grant → first frame from B) {move_gap:?}; \
         kill -9: lease expired after {lease_expiry:?}, takeover (grant → first frame) {takeover:?}; \
         drain {drain_time:?}; frames c0 {} (0..{}), c1 {} (handed over at {released_seq})",
        s0.len(),
        s0.last().unwrap().0,
        s1.len(),
    );
    Ok(())
}

/// Redis, a broker with a 2-partition frames topic, camera `c0` (10 fps) simulated, and the
/// leader.
fn one_camera() -> Result<(RedisServer, DevBroker, String, CamSim, Leader)> {
    let redis = RedisServer::start()?;
    let (broker, topic) = broker_with_topic(2)?;
    let sim = CamSim::with_cameras(&["id=c0,fps=10"])?;
    let leader = Leader::new(&redis.url)?;
    Ok((redis, broker, topic, sim, leader))
}

#[test]
fn revoked_cameras_stop_lost_leases_count_and_a_lost_redis_fails_closed() -> Result<()> {
    let (redis, broker, topic, sim, mut leader) = one_camera()?;
    let a = start_coordinated(
        &broker.bootstrap,
        &topic,
        "ingest-r",
        &redis.url,
        node_settings,
    )?;
    leader.wait_registered("ingest-r")?;
    leader.register(&record("c0", sim.url("c0", None), 0))?;
    leader.grant("c0", "ingest-r", REGION, 0)?;
    a.wait_streaming("c0", Duration::from_secs(20))?;

    // Taken away without a handover (as after a lease expiry): stopped at once.
    let t = Instant::now();
    leader.grant("c0", "", REGION, 0)?;
    wait_until("c0 stopped", Duration::from_secs(5), || {
        (a.camera("c0")["error"] == "no such camera on this node").then_some(())
    })?;
    let revoke = t.elapsed();
    wait_until("c0's series removed", Duration::from_secs(3), || {
        (!a.metrics().contains("camera=\"c0\"")).then_some(())
    })?;

    // Granted again: it continues above every number it used.
    // (This grant names another region's Kafka: warned about, published here all the same.)
    let used = a_next_seq_floor(&broker.bootstrap, &topic)?;
    leader.grant("c0", "ingest-r", "elsewhere", 0)?;
    a.wait_streaming("c0", Duration::from_secs(20))?;
    assert!(
        a.proc
            .log_text()
            .contains("grant routes the camera to another region"),
        "no warning about the foreign cluster"
    );
    let restarted_at = a.camera("c0")["next_seq"].as_u64().unwrap_or(0);
    assert!(
        restarted_at >= used,
        "restarted at {restarted_at}, below {used}"
    );

    // Paused past its lease (SIGSTOP): on waking it re-registers and counts the lost lease;
    // nobody took its camera meanwhile, so it keeps it.
    assert_eq!(
        metric_value(&a.metrics(), "panoptes_ingest_lease_lost_total"),
        Some(0.0)
    );
    a.proc.signal("STOP")?;
    std::thread::sleep(Duration::from_millis(1500));
    let expired = leader.member("ingest-r")?.is_none();
    a.proc.signal("CONT")?;
    assert!(expired, "the paused node's lease did not expire");
    wait_until("lost lease counted", Duration::from_secs(5), || {
        (metric_value(&a.metrics(), "panoptes_ingest_lease_lost_total")? == 1.0).then_some(())
    })?;
    let frames_then = a.camera("c0")["frames"].as_u64().unwrap_or(0);
    wait_until("c0 still streaming", Duration::from_secs(10), || {
        (a.camera("c0")["frames"].as_u64()? > frames_then + 3).then_some(())
    })?;

    // Redis gone: after the lease TTL the node stops its cameras and reports not ready.
    let t = Instant::now();
    drop(leader);
    drop(redis);
    wait_until(
        "cameras stopped without Redis",
        Duration::from_secs(10),
        || a.cameras().as_array()?.is_empty().then_some(()),
    )?;
    let fenced = t.elapsed();
    let (status, body) = panoptes_testkit::get_text(&format!("{}/readyz", a.http)).unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("coordinator"), "{body}");
    // Not on a blip (¾ of the 1 s lease), and before the lease could be given away and the
    // camera started elsewhere (its TTL plus a poll).
    assert!(
        fenced >= Duration::from_millis(700) && fenced <= Duration::from_millis(1300),
        "cameras stopped {fenced:?} after Redis died"
    );

    // Downstream: one partition, every number once.
    let s = camera_seqs(&broker.bootstrap, &topic, "c0", Duration::from_secs(2))?;
    let mut sorted = s.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), s.len(), "duplicate sequence numbers: {s:?}");
    assert!(s.windows(2).all(|w| w[1] > w[0]), "out of order: {s:?}");
    eprintln!(
        "revoked camera stopped after {revoke:?}; cameras stopped {fenced:?} after Redis died"
    );
    Ok(())
}

/// One past the highest sequence number of `c0` on the topic.
fn a_next_seq_floor(bootstrap: &str, topic: &str) -> Result<u64> {
    let reader = TopicReader::new(bootstrap, topic)?;
    let mut records = Vec::new();
    reader.read_for(Duration::from_secs(1), &mut records)?;
    Ok(records
        .iter()
        .filter_map(|r| r.headers.as_ref().ok())
        .map(|h| h.seq + 1)
        .max()
        .unwrap_or(0))
}

#[test]
fn coordinator_mode_refuses_cameras_in_the_file() -> Result<()> {
    let mut config = IngestConfig::default();
    config.coordinator.enabled = true;
    config.cameras = vec![CameraConfig {
        id: "c0".into(),
        url: "rtsp://127.0.0.1:1/c0".into(),
        ..CameraConfig::default()
    }];
    let log = panoptes_testkit::node::expect_refusal("ingest", "panoptes-ingest", &config)?;
    assert!(
        log.contains("in coordinator mode the coordinator assigns every camera"),
        "{log}"
    );
    Ok(())
}

#[test]
fn a_handover_with_the_broker_down_is_bounded() -> Result<()> {
    let (redis, broker, topic, sim, mut leader) = one_camera()?;
    let a = start_coordinated(&broker.bootstrap, &topic, "ingest-u", &redis.url, |c| {
        c.coordinator.handover_flush_timeout = Duration::from_secs(1);
        node_settings(c);
    })?;
    leader.wait_registered("ingest-u")?;
    leader.register(&record("c0", sim.url("c0", None), 0))?;
    let e = leader.grant("c0", "ingest-u", REGION, 0)?;
    a.wait_streaming("c0", Duration::from_secs(20))?;

    broker.all_down()?;
    std::thread::sleep(Duration::from_millis(800));
    let (r, took) = leader.hand_over("c0", "ingest-u", e, "ingest-x")?;
    broker.all_up()?;
    assert!(took < Duration::from_secs(3), "handover took {took:?}");
    assert!(r.released_seq.unwrap_or(0) > 0);
    assert_eq!(
        metric_value(
            &a.metrics(),
            "panoptes_ingest_handovers_total{result=\"undelivered\"}"
        ),
        Some(1.0)
    );
    eprintln!("handover with the broker down released after {took:?}");
    Ok(())
}
