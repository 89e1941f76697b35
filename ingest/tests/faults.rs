//! Camera and broker faults: every failure is reported, counted and recovered from, and no
//! camera's failure disturbs the others. Credentials never leak.

mod common;

use std::time::{Duration, Instant};

use anyhow::Result;
use common::{Ingest, broker_with_topic, camera, camera_seqs, start};
use panoptes_ingest::config::IngestConfig;
use panoptes_testkit::kafka::{TopicReader, by_camera};
use panoptes_testkit::{CamSim, metric_value, wait_until};

/// Reconnect quickly, give up on a silent camera after 2 s.
fn fast_reconnect(c: &mut IngestConfig) {
    let d = &mut c.camera_defaults;
    d.backoff_initial = Duration::from_millis(200);
    d.backoff_max = Duration::from_secs(2);
    d.no_data_timeout = Duration::from_secs(2);
    d.connect_timeout = Duration::from_secs(5);
}

/// Backoff bound (2 s) plus an RTSP handshake and first keyframe allowance.
const RECOVERY_BOUND: Duration = Duration::from_secs(5);

fn frames_of(ingest: &Ingest, id: &str) -> u64 {
    ingest.camera(id)["frames"].as_u64().unwrap_or(0)
}

/// Time from `resume` until new frames flow again.
fn time_to_recover(ingest: &Ingest, id: &str) -> Result<Duration> {
    let before = frames_of(ingest, id);
    let t0 = Instant::now();
    wait_until(
        &format!("{id} frames again"),
        Duration::from_secs(20),
        || (frames_of(ingest, id) > before + 2).then_some(()),
    )?;
    Ok(t0.elapsed())
}

#[test]
fn stopped_and_stalled_cameras_come_back_within_the_backoff_bound() -> Result<()> {
    let (broker, topic) = broker_with_topic(4)?;
    let sim = CamSim::with_cameras(&["id=cam0,fps=10", "id=cam1,fps=10"])?;
    let cams = vec![
        camera("cam0", sim.url("cam0", None), 10, (640, 360), Some(0)),
        camera("cam1", sim.url("cam1", None), 10, (640, 360), Some(1)),
    ];
    let ingest = start(&broker.bootstrap, &topic, cams, fast_reconnect)?;
    ingest.wait_streaming("cam0", Duration::from_secs(20))?;
    ingest.wait_streaming("cam1", Duration::from_secs(20))?;

    // Stop: the session ends and reconnects are refused until resume.
    sim.fault("cam0", "stop")?;
    wait_until("cam0 leaves streaming", Duration::from_secs(10), || {
        (ingest.camera("cam0")["state"] != "streaming").then_some(())
    })?;
    std::thread::sleep(Duration::from_secs(4));
    assert_ne!(ingest.camera("cam0")["state"], "streaming");
    let cam1_during = frames_of(&ingest, "cam1");
    sim.fault("cam0", "resume")?;
    let stop_recovery = time_to_recover(&ingest, "cam0")?;
    assert!(
        stop_recovery <= RECOVERY_BOUND,
        "stop→resume recovery took {stop_recovery:?}"
    );

    // Stall: connected but silent; the no-data watchdog must notice and reconnect.
    sim.fault("cam0", "stall")?;
    wait_until("no_data detected", Duration::from_secs(10), || {
        (ingest.camera("cam0")["last_error_kind"] == "no_data").then_some(())
    })?;
    sim.fault("cam0", "resume")?;
    let stall_recovery = time_to_recover(&ingest, "cam0")?;
    assert!(
        stall_recovery <= RECOVERY_BOUND,
        "stall→resume recovery took {stall_recovery:?}"
    );
    eprintln!("recovery after stop: {stop_recovery:?}, after stall: {stall_recovery:?}");

    // The other camera never stopped.
    assert!(
        frames_of(&ingest, "cam1") > cam1_during + 20,
        "cam1 stalled while cam0 failed"
    );
    let metrics = ingest.metrics();
    assert!(
        metric_value(
            &metrics,
            "panoptes_ingest_reconnects_total{camera=\"cam0\"}"
        )
        .unwrap_or(0.0)
            >= 2.0
    );
    assert_eq!(
        metric_value(
            &metrics,
            "panoptes_ingest_reconnects_total{camera=\"cam1\"}"
        ),
        Some(0.0)
    );

    // Across the reconnects, cam0's sequence stays gapless and ordered.
    let seqs = camera_seqs(&broker.bootstrap, &topic, "cam0", Duration::from_secs(3))?;
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "cam0 sequence has gaps: {seqs:?}"
    );
    Ok(())
}

#[test]
fn broken_cameras_report_clear_states_while_others_flow_and_no_password_leaks() -> Result<()> {
    const RIGHT: &str = "Rt-s3cret-4471";
    const WRONG: &str = "Wr-s3cret-9913";
    let (broker, topic) = broker_with_topic(4)?;
    let sim = CamSim::with_cameras(&[
        "id=open,fps=5",
        &format!("id=locked,fps=5,user=alice,pass={RIGHT}"),
        &format!("id=locked2,fps=5,user=alice,pass={RIGHT}"),
        "id=radio,codec=audio",
    ])?;
    let cams = vec![
        camera("open", sim.url("open", None), 5, (320, 180), None),
        camera(
            "authok",
            sim.url("locked", Some(("alice", RIGHT))),
            5,
            (320, 180),
            None,
        ),
        camera(
            "authbad",
            sim.url("locked2", Some(("alice", WRONG))),
            5,
            (320, 180),
            None,
        ),
        camera(
            "nothere",
            sim.url("no-such-camera", None),
            5,
            (320, 180),
            None,
        ),
        camera(
            "refused",
            "rtsp://127.0.0.1:1/cam".into(),
            5,
            (320, 180),
            None,
        ),
        camera("audio", sim.url("radio", None), 5, (320, 180), None),
    ];
    let ingest = start(&broker.bootstrap, &topic, cams, fast_reconnect)?;
    ingest.wait_streaming("open", Duration::from_secs(20))?;
    ingest.wait_streaming("authok", Duration::from_secs(20))?;
    let expected = [
        ("authbad", "auth_failed"),
        ("nothere", "not_found"),
        ("refused", "unreachable"),
        ("audio", "unsupported"),
    ];
    for (id, kind) in expected {
        wait_until(
            &format!("{id} reports {kind}"),
            Duration::from_secs(20),
            || {
                let c = ingest.camera(id);
                (c["last_error_kind"] == kind && c["state"] != "streaming").then_some(())
            },
        )
        .map_err(|e| anyhow::anyhow!("{e}: status {}", ingest.camera(id)))?;
    }
    // The healthy cameras kept flowing meanwhile.
    let before = (frames_of(&ingest, "open"), frames_of(&ingest, "authok"));
    std::thread::sleep(Duration::from_secs(3));
    assert!(frames_of(&ingest, "open") >= before.0 + 10);
    assert!(frames_of(&ingest, "authok") >= before.1 + 10);

    let metrics = ingest.metrics();
    for (id, kind) in expected {
        let series =
            format!("panoptes_ingest_camera_errors_total{{camera=\"{id}\",kind=\"{kind}\"}}");
        assert!(
            metric_value(&metrics, &series).unwrap_or(0.0) >= 1.0,
            "{series} missing:\n{metrics}"
        );
        assert_eq!(
            metric_value(
                &metrics,
                &format!("panoptes_ingest_camera_up{{camera=\"{id}\"}}")
            ),
            Some(0.0)
        );
    }
    assert_eq!(
        metric_value(&metrics, "panoptes_ingest_camera_up{camera=\"open\"}"),
        Some(1.0)
    );

    // No password anywhere: API, metrics, logs, Kafka headers.
    let reader = TopicReader::new(&broker.bootstrap, &topic)?;
    let mut records = Vec::new();
    reader.read_for(Duration::from_secs(2), &mut records)?;
    assert!(by_camera(&records).contains_key("authok"));
    let api = ingest.cameras().to_string();
    assert!(api.contains("alice:***@"), "API shows redacted URLs: {api}");
    let logs = ingest.proc.log_text();
    assert!(logs.contains("authbad"), "logs were captured");
    let headers: String = records
        .iter()
        .flat_map(|r| {
            r.raw_headers
                .iter()
                .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
        })
        .collect();
    for secret in [RIGHT, WRONG] {
        for (place, text) in [
            ("API", &api),
            ("metrics", &metrics),
            ("logs", &logs),
            ("headers", &headers),
        ] {
            assert!(!text.contains(secret), "password found in {place}");
        }
    }
    Ok(())
}

#[test]
fn broker_outage_loses_only_what_overflowed_the_bounded_queue_and_memory_stays_flat() -> Result<()>
{
    let (broker, topic) = broker_with_topic(2)?;
    let sim = CamSim::with_cameras(&["id=cam0,fps=10"])?;
    let cams = vec![camera(
        "cam0",
        sim.url("cam0", None),
        10,
        (640, 360),
        Some(0),
    )];
    // A 40-frame producer queue: a 10 s outage at 10 fps must overflow it.
    const QUEUE: u64 = 40;
    let mut ingest = start(&broker.bootstrap, &topic, cams, |c| {
        c.kafka.queue_max_messages = QUEUE as u32;
        fast_reconnect(c);
    })?;
    ingest.wait_streaming("cam0", Duration::from_secs(20))?;
    std::thread::sleep(Duration::from_secs(3));
    let rss_before = ingest.proc.rss_kib().unwrap_or(0);

    broker.all_down()?;
    let mut rss_max = rss_before;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        rss_max = rss_max.max(ingest.proc.rss_kib().unwrap_or(0));
        std::thread::sleep(Duration::from_millis(250));
    }
    let during = ingest.metrics();
    broker.all_up()?;
    // Frames keep flowing after the broker is back, and the backlog drains.
    wait_until("producer queue drained", Duration::from_secs(30), || {
        let m = ingest.metrics();
        (metric_value(&m, "panoptes_ingest_producer_queue_messages") == Some(0.0)
            || metric_value(&m, "panoptes_ingest_producer_queue_messages").unwrap_or(99.0) < 3.0)
            .then_some(())
    })?;
    std::thread::sleep(Duration::from_secs(2));
    let status = ingest.camera("cam0");
    assert!(
        ingest.proc.terminate(Duration::from_secs(15))?,
        "ingest did not exit cleanly"
    );
    let next_seq = status["next_seq"].as_u64().unwrap();
    let dropped = status["dropped"].as_u64().unwrap();

    let seqs = camera_seqs(&broker.bootstrap, &topic, "cam0", Duration::from_secs(5))?;
    assert!(
        seqs.windows(2).all(|w| w[1] > w[0]),
        "reordered or duplicated frames"
    );
    // Frames published after the status snapshot are not part of the accounting.
    let missing = next_seq - seqs.iter().filter(|s| **s < next_seq).count() as u64;
    let queue_full = metric_value(
        &during,
        "panoptes_ingest_frames_dropped_total{camera=\"cam0\",reason=\"producer_queue_full\"}",
    )
    .unwrap_or(0.0) as u64;
    eprintln!(
        "published {next_seq} frames, delivered {}, missing {missing}, dropped {dropped} (queue full during outage: {queue_full}); RSS {rss_before} KiB → max {rss_max} KiB",
        seqs.len()
    );
    assert!(
        queue_full > 0,
        "a 10 s outage should have overflowed a {QUEUE}-frame queue"
    );
    assert_eq!(missing, dropped, "every missing frame is a counted drop");
    // What was lost is what did not fit: about 100 outage frames minus the queue's 40.
    assert!(
        dropped <= 100 + 20 - QUEUE,
        "lost {dropped} frames, more than the outage minus the queue"
    );
    assert!(
        rss_max.saturating_sub(rss_before) < 40 * 1024,
        "RSS grew from {rss_before} to {rss_max} KiB"
    );
    Ok(())
}
