//! Capture time from the camera: once a camera's RTCP sender reports arrive, frames carry its
//! NTP capture time (`panoptes-capture-clock: camera`) while its clock agrees with the node's;
//! a camera whose clock is 30 s ahead (the simulator run under libfaketime) keeps arrival
//! times, and both offsets show in `panoptes_ingest_camera_clock_offset_seconds`.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use common::{broker_with_topic, camera, start};
use panoptes_schemas::CaptureClock;
use panoptes_testkit::kafka::{FrameRecord, TopicReader, by_camera, now_us};
use panoptes_testkit::{CamSim, wait_until};

const SKEW_S: f64 = 30.0;
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

fn offset_metric(node: &common::Ingest, camera: &str) -> Option<f64> {
    node.metric(&format!(
        "panoptes_ingest_camera_clock_offset_seconds{{camera=\"{camera}\"}}"
    ))
}

/// Reads until `camera` published `n` frames with a camera clock, or `timeout` passes.
fn camera_clock_frames(
    reader: &TopicReader,
    records: &mut Vec<FrameRecord>,
    camera: &str,
    n: usize,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        reader.read_for(Duration::from_millis(500), records)?;
        let count = by_camera(records).get(camera).map_or(0, |frames| {
            frames
                .iter()
                .filter(|r| {
                    r.headers
                        .as_ref()
                        .is_ok_and(|h| h.capture_clock == CaptureClock::Camera)
                })
                .count()
        });
        if count >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{camera}: only {count} frames with the camera clock after {timeout:?}");
        }
    }
}

#[test]
fn frames_carry_the_camera_clock_when_it_agrees_with_ours() -> Result<()> {
    let (broker, topic) = broker_with_topic(2)?;
    let synced = CamSim::start(&["--format-camera", "id=synced,format=h264,fps=10"])?;
    let skew = format!("+{SKEW_S}");
    let skewed = CamSim::start_with_env(
        &["--format-camera", "id=skewed,format=h264,fps=10"],
        &[
            ("LD_PRELOAD", LIBFAKETIME),
            ("FAKETIME", skew.as_str()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    )?;
    let cams = vec![
        camera("synced", synced.url("synced", None), 5, (320, 240), Some(0)),
        camera("skewed", skewed.url("skewed", None), 5, (320, 240), Some(1)),
    ];
    let node = start(&broker.bootstrap, &topic, cams, |_| ())?;
    let reader = TopicReader::new(&broker.bootstrap, &topic)?;
    let mut records = Vec::new();
    camera_clock_frames(&reader, &mut records, "synced", 10, Duration::from_secs(30))
        .map_err(|e| e.context(node.proc.log_text()))?;
    let read_at_us = now_us();
    let skewed_offset = wait_until("skewed offset", Duration::from_secs(20), || {
        offset_metric(&node, "skewed")
    })?;
    let synced_offset = offset_metric(&node, "synced").context("synced offset")?;
    println!("offsets: synced {synced_offset:.3} s, skewed {skewed_offset:.3} s");
    // Camera − arrival: the clocks' offset minus the capture-to-arrival delay (jitter buffer
    // 200 ms, decode): slightly negative for the camera in sync, about +30 s for the other.
    assert!(
        (-2.0..0.05).contains(&synced_offset),
        "synced offset {synced_offset}"
    );
    assert!(
        (SKEW_S - 2.0..SKEW_S + 0.5).contains(&skewed_offset),
        "skewed offset {skewed_offset}"
    );

    let per_cam = by_camera(&records);
    let camera_times: Vec<i64> = per_cam["synced"]
        .iter()
        .filter_map(|r| r.headers.as_ref().ok())
        .filter(|h| h.capture_clock == CaptureClock::Camera)
        .map(|h| h.capture_time_us)
        .collect();
    for t in &camera_times {
        assert!(
            (read_at_us - 15_000_000..=read_at_us).contains(t),
            "camera capture time {t} not in the last 15 s before {read_at_us}"
        );
    }
    // Camera times come from RTP timestamps (a 10 fps source sampled to 5 fps): frame
    // spacings are whole source frame intervals, which arrival times on a busy machine are not.
    for pair in camera_times.windows(2) {
        let delta = pair[1] - pair[0];
        let off_grid = (delta % 100_000).min(100_000 - delta % 100_000);
        assert!(
            delta > 0 && off_grid <= 2_000,
            "camera times not on the 100 ms grid: {camera_times:?}"
        );
    }
    for r in &per_cam["skewed"] {
        let h = r.headers.as_ref().expect("headers parse");
        assert_eq!(
            h.capture_clock,
            CaptureClock::Arrival,
            "a camera 30 s off must not set capture times"
        );
        assert!(h.capture_time_us <= now_us(), "arrival time in the future");
    }
    Ok(())
}
