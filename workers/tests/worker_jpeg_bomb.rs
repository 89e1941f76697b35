//! JPEG bombs against a real `panoptes-worker`: ~10 KB frames whose JPEG frame header claims
//! 16000×16000, produced straight into the frames topic, once with an honest 640×360
//! envelope (the header disagrees: `bad_dimensions`) and once with an envelope that claims
//! 16000×16000 too (over `[decode] max_frame_pixels`: `too_large`). Before the fix each such
//! frame made a decode thread zero-fill 768 MB. Checked: the worker's resident memory and
//! its peak stay within 100 MB of what they were before the bombs, every bomb is
//! dead-lettered with the precise reason and detail and counted, and honest frames sent
//! after the bombs still get detections.

mod common;

use std::time::Duration;

use anyhow::{Context, Result};
use common::node::{Rig, finish_when_settled};
use panoptes_schemas::{DeadLetter, FrameHeaders};
use panoptes_testkit::kafka::{FrameProducer, TopicReader, frame_headers, test_jpeg};
use panoptes_testkit::sys::{process_peak_rss_kib, process_rss_kib, reset_peak_rss};
use panoptes_testkit::{metric_value, wait_until};

/// Bombs of each kind.
const BOMBS: u64 = 8;
/// Honest frames before and after the bombs.
const GOOD: u64 = 5;
/// Allowed growth of resident memory (and of its peak) over the bombs.
const BOUND_KIB: u64 = 100 * 1024;

/// `jpeg` with its baseline frame header (SOF0) rewritten to claim `w × h`.
fn claim(mut jpeg: Vec<u8>, w: u16, h: u16) -> Vec<u8> {
    let sof = jpeg
        .windows(2)
        .position(|m| m == [0xFF, 0xC0])
        .expect("a baseline frame header");
    jpeg[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    jpeg[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    jpeg
}

fn envelope(seq: u64, size: (u32, u32)) -> FrameHeaders {
    frame_headers("cam0", seq, size, Duration::ZERO)
}

#[test]
fn jpeg_bombs_are_refused_before_allocating() -> Result<()> {
    let rig = Rig::new(1)?;
    let Rig { broker, t, .. } = &rig;
    let checker = rig.checker(Vec::new())?;
    let worker = rig.worker(|c| c.decode_threads = 2)?;
    let pid = worker.proc.pid();
    let v = |s: &str| metric_value(&worker.metrics(), s).unwrap_or(0.0);
    let ok = "panoptes_worker_records_total{status=\"ok\"}";
    let producer = FrameProducer::new(&broker.bootstrap, &[])?;
    let good = test_jpeg(640, 360);
    let bomb = claim(good.clone(), 16_000, 16_000);
    println!(
        "honest frame {} bytes, bomb {} bytes",
        good.len(),
        bomb.len()
    );
    assert!(bomb.len() < 16 * 1024, "a small bomb");

    // Warm up: the model has run, buffers are sized for 640x360.
    let mut seq = 0;
    for _ in 0..GOOD {
        producer.send(&t.frames, 0, &envelope(seq, (640, 360)), &good)?;
        seq += 1;
    }
    producer.flush()?;
    wait_until("warm-up detections", Duration::from_secs(30), || {
        (v(ok) >= GOOD as f64).then_some(())
    })?;
    let rss_before = process_rss_kib(pid).context("worker RSS")?;
    let peak_reset = reset_peak_rss(pid);
    let peak_before = process_peak_rss_kib(pid).context("worker peak RSS")?;

    for _ in 0..BOMBS {
        producer.send(&t.frames, 0, &envelope(seq, (640, 360)), &bomb)?;
        producer.send(&t.frames, 0, &envelope(seq + 1, (16_000, 16_000)), &bomb)?;
        seq += 2;
    }
    for _ in 0..GOOD {
        producer.send(&t.frames, 0, &envelope(seq, (640, 360)), &good)?;
        seq += 1;
    }
    producer.flush()?;
    let dead = |r: &str| {
        v(&format!(
            "panoptes_worker_dead_letters_total{{reason=\"{r}\"}}"
        ))
    };
    wait_until(
        "bombs dead-lettered, later frames inferred",
        Duration::from_secs(30),
        || {
            let done = dead("bad_dimensions") + dead("too_large") >= 2.0 * BOMBS as f64;
            (done && v(ok) >= 2.0 * GOOD as f64).then_some(())
        },
    )?;
    let rss_after = process_rss_kib(pid).context("worker RSS")?;
    let peak_after = process_peak_rss_kib(pid).context("worker peak RSS")?;
    println!(
        "worker RSS before {rss_before} KiB, after {rss_after} KiB; peak before {peak_before} \
         KiB, after {peak_after} KiB (peak reset before the bombs: {peak_reset})"
    );
    assert!(
        rss_after < rss_before + BOUND_KIB,
        "RSS grew from {rss_before} to {rss_after} KiB"
    );
    // Without a reset the peak includes start-up (model load); its growth still bounds the
    // bombs' transient allocations.
    let peak_base = if peak_reset { rss_before } else { peak_before };
    assert!(
        peak_after < peak_base + BOUND_KIB,
        "peak RSS grew from {peak_base} to {peak_after} KiB"
    );

    // Counted, by reason and by the check that refused them before decoding.
    assert_eq!(dead("bad_dimensions"), BOMBS as f64);
    assert_eq!(dead("too_large"), BOMBS as f64);
    assert_eq!(dead("undecodable"), 0.0);
    let refused = |c: &str| {
        v(&format!(
            "panoptes_worker_frames_refused_total{{check=\"{c}\"}}"
        ))
    };
    assert_eq!(refused("header_mismatch"), BOMBS as f64);
    assert_eq!(refused("max_pixels"), BOMBS as f64);
    assert_eq!(v(ok), 2.0 * GOOD as f64);

    // Dead letters name the precise reason and what the frame claimed.
    let mut raw = Vec::new();
    let reader = TopicReader::new(&broker.bootstrap, &t.dlq)?;
    wait_until("dead letters readable", Duration::from_secs(15), || {
        reader.read_for(Duration::from_millis(300), &mut raw).ok()?;
        (raw.len() as u64 >= 2 * BOMBS).then_some(())
    })?;
    let letters: Vec<DeadLetter> = raw
        .iter()
        .map(|r| DeadLetter::from_json(&r.payload))
        .collect::<Result<_, _>>()?;
    assert_eq!(letters.len() as u64, 2 * BOMBS);
    for l in &letters {
        let (reason, detail) = (l.reason.as_str(), l.detail.as_str());
        match l.seq.map(|s| (s - GOOD) % 2) {
            Some(0) => assert_eq!(
                (reason, detail),
                (
                    "bad_dimensions",
                    "JPEG header claims 16000x16000, envelope says 640x360"
                )
            ),
            Some(_) => {
                assert_eq!(reason, "too_large", "{l:?}");
                assert!(
                    detail.contains("16000x16000 = 256000000 pixels, over decode.max_frame_pixels"),
                    "{detail}"
                );
            }
            None => panic!("dead letter without seq: {l:?}"),
        }
    }

    // Nothing lost: every frame is a detection or a dead letter.
    let report = finish_when_settled(checker, Duration::from_secs(30))?;
    println!("{}", report.to_markdown());
    let cam0 = &report.cameras["cam0"];
    assert_eq!(cam0.lost, 0, "{cam0:?}");
    assert_eq!(cam0.detections_accepted, 2 * GOOD, "{cam0:?}");
    assert_eq!(cam0.dead_lettered.get("bad_dimensions"), Some(&BOMBS));
    assert_eq!(cam0.dead_lettered.get("too_large"), Some(&BOMBS));
    Ok(())
}
