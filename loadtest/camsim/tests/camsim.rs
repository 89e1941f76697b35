//! End-to-end tests of the `panoptes-camsim` binary: real RTSP clients (gstreamer-rs),
//! raw RTSP DESCRIBE for status codes, the HTTP control API for faults.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Camsim, Client, Event, describe};
use panoptes_scene::{frame_index_at, unwrap_frame_index};

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn now_index(fps: u32) -> u64 {
    let ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    frame_index_at(ns, fps)
}

/// Checks size, rate and barcode indexes of frames collected over `window`.
fn check_stream(frames: &[Event], width: u32, height: u32, fps: u32, window: Duration) {
    let mut indexes = Vec::new();
    for ev in frames {
        let Event::Frame {
            width: w,
            height: h,
            index,
            ..
        } = ev
        else {
            unreachable!()
        };
        assert_eq!((*w, *h), (width, height), "frame size");
        indexes.push(index.expect("barcode readable in every decoded frame"));
    }
    // Frames after the first one span `window`.
    let expected = f64::from(fps) * window.as_secs_f64();
    let got = (frames.len() - 1) as f64;
    assert!(
        got >= expected * 0.7 && got <= expected * 1.3 + 2.0,
        "rate: {got} frames in {window:?}, expected ~{expected}"
    );
    for pair in indexes.windows(2) {
        assert!(pair[1] > pair[0], "indexes not increasing: {indexes:?}");
    }
    // Indexes are those of the instant the frame arrived (allowing for pipeline latency).
    let Some(Event::Frame {
        index: Some(last),
        at,
        ..
    }) = frames.last()
    else {
        unreachable!()
    };
    let now = now_index(fps);
    let last = unwrap_frame_index(*last, now);
    let age = (at.elapsed().as_secs_f64() * f64::from(fps)) as u64;
    let lag = (now - age) as i64 - last as i64;
    assert!(
        (-1..=i64::from(fps)).contains(&lag),
        "frame index {last} lags the clock by {lag} frames"
    );
}

#[test]
fn streams_h264_and_h265_with_readable_frame_indexes() {
    let sim = Camsim::start(&[
        "id=cam0,width=640,height=360,fps=10,codec=h264",
        "id=cam1,width=320,height=240,fps=5,codec=h265",
        "id=mic,codec=audio",
    ]);
    let window = SECS(3);
    let c0 = Client::open(&sim.url("cam0"), None);
    let c1 = Client::open(&sim.url("cam1"), None);
    let f0 = c0.frames_for(SECS(10), window);
    // cam1 frames queued meanwhile: drop them and measure a fresh window.
    c1.wait_frame(SECS(10));
    c1.drain();
    let f1 = c1.frames_for(SECS(3), window);
    check_stream(&f0, 640, 360, 10, window);
    check_stream(&f1, 320, 240, 5, window);

    let cam0 = sim.camera("cam0");
    assert_eq!(cam0["state"], "live");
    assert_eq!(cam0["clients"], 1);
    assert_eq!(cam0["codec"], "h264");
    assert!(cam0["frames_sent"].as_u64().unwrap_or(0) >= 20, "{cam0}");
    let cam1 = sim.camera("cam1");
    assert_eq!(
        (cam1["codec"].as_str(), cam1["fps"].as_u64()),
        (Some("h265"), Some(5))
    );

    // The audio camera offers no video at all.
    let (code, sdp) = describe(&sim.url("mic"), None);
    assert_eq!(code, 200, "{sdp}");
    assert!(sdp.contains("m=audio") && !sdp.contains("m=video"), "{sdp}");
}

#[test]
fn basic_auth_protects_only_its_camera() {
    let sim = Camsim::start(&[
        "id=open,width=320,height=180",
        "id=secure,width=320,height=180,user=alice,pass=s3cret",
    ]);
    let secure = sim.url("secure");
    let (code, resp) = describe(&secure, None);
    assert_eq!(code, 401, "{resp}");
    assert!(resp.contains("WWW-Authenticate: Basic"), "{resp}");
    assert_eq!(describe(&secure, Some(("alice", "wrong"))).0, 401);
    assert_eq!(describe(&secure, Some(("bob", "s3cret"))).0, 401);
    assert_eq!(describe(&secure, Some(("alice", "s3cret"))).0, 200);
    assert_eq!(describe(&sim.url("open"), None).0, 200);
    assert_eq!(describe(&sim.url("open"), Some(("alice", "s3cret"))).0, 200);

    // Real clients: right password plays, wrong one fails with Unauthorized.
    let ok = Client::open(&secure, Some(("alice", "s3cret")));
    ok.wait_frame(SECS(10));
    let bad = Client::open(&secure, Some(("alice", "nope")));
    match bad.wait_end(SECS(10)) {
        Some(Event::Error(msg)) => assert!(msg.contains("Unauthorized"), "{msg}"),
        other => panic!("wrong password should fail, got {other:?}"),
    }
    let anon = Client::open(&sim.url("open"), None);
    anon.wait_frame(SECS(10));
}

#[test]
fn faults_stall_drop_stop_resume() {
    let sim = Camsim::start(&["id=cam0,width=320,height=180,fps=10"]);
    let url = sim.url("cam0");

    // Unknown camera and action.
    assert_eq!(sim.post("/cameras/nope/stall").0, 404);
    assert_eq!(sim.post("/cameras/cam0/explode").0, 404);

    // Stall: no frames while stalled, frames again after resume.
    let client = Client::open(&url, None);
    client.wait_frame(SECS(10));
    let (code, body) = sim.post("/cameras/cam0/stall");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"stalled\""), "{body}");
    std::thread::sleep(Duration::from_millis(500));
    client.drain();
    assert!(
        client.next(Duration::from_millis(1500)).is_none(),
        "frames arrived while stalled"
    );
    assert_eq!(
        sim.camera("cam0")["clients"],
        1,
        "stalled session stays connected"
    );
    assert_eq!(sim.post("/cameras/cam0/resume").0, 200);
    client.wait_frame(SECS(4));
    assert_eq!(sim.camera("cam0")["state"], "live");

    // Drop: the session ends, the mount stays: reconnecting works at once.
    let (code, body) = sim.post("/cameras/cam0/drop");
    assert_eq!(code, 200, "{body}");
    assert!(
        client.wait_end(SECS(5)).is_some(),
        "client session should end after drop"
    );
    drop(client);
    let again = Client::open(&url, None);
    again.wait_frame(SECS(10));

    // Stop: sessions end and new connections fail (404) until resume.
    let (code, body) = sim.post("/cameras/cam0/stop");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"stopped\""), "{body}");
    assert!(
        again.wait_end(SECS(5)).is_some(),
        "session should end on stop"
    );
    drop(again);
    assert_eq!(describe(&url, None).0, 404);
    let refused = Client::open(&url, None);
    assert!(
        matches!(refused.wait_end(SECS(5)), Some(Event::Error(_))),
        "connect to a stopped camera must fail"
    );
    drop(refused);
    assert_eq!(sim.post("/cameras/cam0/resume").0, 200);
    let back = Client::open(&url, None);
    back.wait_frame(SECS(10));
    assert_eq!(sim.camera("cam0")["state"], "live");
}
