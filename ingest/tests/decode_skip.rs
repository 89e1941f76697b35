//! Decode only what we keep (`panoptes_ingest::decode_skip`), on a real ingest node and real
//! streams: 30 fps cameras sampled at 5 fps.
//!
//! - An IBBP H.264 camera: its B-frames (two of every three frames) never reach the decoder,
//!   and the published rate stays at 5 fps with continuous sequence numbers and no decode
//!   error.
//! - An IPPP H.264 camera (every frame a reference): nothing is skipped.
//! - An MJPEG camera (every frame a keyframe; a format camera, not the scene feeder): only
//!   about one frame per sampling interval is decoded.
//! - With `decode_skip = false` the same IBBP camera decodes everything.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use common::{broker_with_topic, camera, camera_seqs, start};
use panoptes_testkit::{CamSim, Node, wait_until};

/// Sampling rate of every camera.
const FPS: u32 = 5;
/// Source rate of every camera.
const SOURCE_FPS: f64 = 30.0;
/// Measured window.
const WINDOW: Duration = Duration::from_secs(10);

const CAMERAS: &[&str] = &["ibbp", "ippp", "mjpeg"];

/// The IBBP camera: two non-reference B-frames after each reference frame.
const IBBP: &str = "id=ibbp,width=320,height=180,fps=30,bframes=2";

fn counter(node: &Node, name: &str, camera: &str) -> f64 {
    node.metric(&format!("{name}{{camera=\"{camera}\"}}"))
        .unwrap_or(0.0)
}

/// (frames published, access units skipped) per camera over [`WINDOW`], after every camera
/// streamed for a few seconds.
fn measure(node: &Node, ids: &[&str]) -> Result<Vec<(f64, f64)>> {
    wait_until("every camera streaming", Duration::from_secs(40), || {
        ids.iter()
            .all(|id| counter(node, "panoptes_ingest_frames_total", id) >= 10.0)
            .then_some(())
    })
    .map_err(|e| e.context(node.proc.log_text()))?;
    let read = |id: &str| {
        (
            counter(node, "panoptes_ingest_frames_total", id),
            counter(node, "panoptes_ingest_decode_skipped_total", id),
        )
    };
    let before: Vec<(f64, f64)> = ids.iter().map(|id| read(id)).collect();
    let t0 = Instant::now();
    std::thread::sleep(WINDOW);
    let secs = t0.elapsed().as_secs_f64();
    Ok(ids
        .iter()
        .zip(before)
        .map(|(id, (f0, s0))| {
            let (f1, s1) = read(id);
            ((f1 - f0) / secs, (s1 - s0) / secs)
        })
        .collect())
}

#[test]
fn frames_the_sampler_drops_are_not_decoded_and_the_rate_holds() -> Result<()> {
    let (broker, topic) = broker_with_topic(3)?;
    let sim = CamSim::start(&[
        "--camera",
        IBBP,
        "--camera",
        "id=ippp,width=320,height=180,fps=30",
        "--format-camera",
        "id=mjpeg,format=mjpeg,width=320,height=240,fps=30",
    ])?;
    let cams = CAMERAS
        .iter()
        .enumerate()
        .map(|(p, id)| camera(id, sim.url(id, None), FPS, (320, 240), Some(p as i32)))
        .collect();
    let node = start(&broker.bootstrap, &topic, cams, |_| ())?;
    let rates = measure(&node, CAMERAS)?;
    for (id, (fps, skipped)) in CAMERAS.iter().zip(&rates) {
        println!("{id}: {fps:.2} frames/s published, {skipped:.1} access units/s skipped");
    }
    for (id, (fps, _)) in CAMERAS.iter().zip(&rates) {
        let want = f64::from(FPS);
        ensure!(
            (fps - want).abs() <= want * 0.1,
            "{id}: sampled {fps:.2} fps, not within 10 % of {want}"
        );
        ensure!(
            counter(&node, "panoptes_ingest_decode_errors_total", id) == 0.0,
            "{id}: decode errors"
        );
    }
    let [(_, ibbp), (_, ippp), (_, mjpeg)] = rates[..] else {
        unreachable!()
    };
    // Two of every three frames are B-frames: all but a few early ones are skipped.
    ensure!(
        ibbp >= SOURCE_FPS * 0.6,
        "IBBP: only {ibbp:.1}/s skipped of {SOURCE_FPS}"
    );
    ensure!(
        ippp == 0.0,
        "IPPP: {ippp:.1}/s skipped, every frame is a reference"
    );
    // One in six MJPEG frames is decoded.
    ensure!(
        mjpeg >= SOURCE_FPS * 0.75,
        "MJPEG: only {mjpeg:.1}/s skipped of {SOURCE_FPS}"
    );
    for id in CAMERAS {
        let seqs = camera_seqs(&broker.bootstrap, &topic, id, Duration::from_secs(3))?;
        ensure!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "{id}: sequence numbers not continuous"
        );
    }
    Ok(())
}

#[test]
fn with_decode_skip_off_every_frame_is_decoded() -> Result<()> {
    let (broker, topic) = broker_with_topic(1)?;
    let sim = CamSim::start(&["--camera", IBBP])?;
    let cams = vec![camera("ibbp", sim.url("ibbp", None), FPS, (320, 240), None)];
    let node = start(&broker.bootstrap, &topic, cams, |c| {
        c.camera_defaults.decode_skip = false;
    })?;
    let rates = measure(&node, &["ibbp"])?;
    let (fps, skipped) = rates[0];
    println!("ibbp, decode_skip off: {fps:.2} frames/s, {skipped:.1}/s skipped");
    ensure!(skipped == 0.0, "skipped with decode_skip off");
    ensure!(
        (fps - f64::from(FPS)).abs() <= f64::from(FPS) * 0.1,
        "rate {fps:.2}"
    );
    Ok(())
}
