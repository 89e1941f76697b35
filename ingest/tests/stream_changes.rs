//! Streams that change under the node (issue 14, item 2), served by a format camera (a plain
//! gst-rtsp-server launch line with explicit caps, not the scene feeder) that is reconfigured
//! while one real ingest node pulls it:
//!
//! 1. H.264 640×360 at 10 fps → 320×240 at 15 fps: the size and rate change in the running
//!    RTSP session (the encoder restarts with new parameter sets); the node renegotiates
//!    without reconnecting.
//! 2. → H.265 480×270: a codec change ends the camera's sessions (its SDP changes); the node
//!    reconnects and streams the new codec.
//! 3. → H.264 1280×720: and back.
//!
//! Through all of it the camera keeps one continuous sequence, and each frame's output size
//! follows the rules for the source it came from (fitted into the box, never upscaled).

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{broker_with_topic, camera, start};
use panoptes_ingest::pipeline::fit_within;
use panoptes_testkit::kafka::{FrameRecord, TopicReader};
use panoptes_testkit::{CamSim, Node};
use serde_json::json;

const BOX: (u32, u32) = (640, 360);
const ID: &str = "shifty";

/// Reads until `n` frames of source size `source` arrived after the ones already in
/// `records`; returns how long that took.
fn frames_of_size(
    reader: &TopicReader,
    records: &mut Vec<FrameRecord>,
    source: (u32, u32),
    n: usize,
    node: &Node,
) -> Result<Duration> {
    let start = Instant::now();
    let from = records.len();
    loop {
        reader.read_for(Duration::from_millis(300), records)?;
        let seen = records[from..]
            .iter()
            .filter_map(|r| r.headers.as_ref().ok())
            .filter(|h| (h.source_width, h.source_height) == source)
            .count();
        if seen >= n {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(40) {
            bail!(
                "no {n} frames of {source:?} within 40 s; camera: {:#}\nlog tail: {}",
                node.camera(ID),
                tail(&node.proc.log_text())
            );
        }
    }
}

fn tail(log: &str) -> String {
    let chars: Vec<char> = log.chars().collect();
    chars[chars.len().saturating_sub(4000)..].iter().collect()
}

fn reconnects(node: &Node) -> f64 {
    node.metric(&format!(
        "panoptes_ingest_reconnects_total{{camera=\"{ID}\"}}"
    ))
    .unwrap_or(0.0)
}

#[test]
fn size_rate_and_codec_changes_keep_the_camera_streaming_in_sequence() -> Result<()> {
    let (broker, topic) = broker_with_topic(1)?;
    let sim = CamSim::start(&[
        "--format-camera",
        &format!("id={ID},format=h264,width=640,height=360,fps=10"),
    ])?;
    let node = start(
        &broker.bootstrap,
        &topic,
        vec![camera(ID, sim.url(ID, None), 5, BOX, None)],
        |c| {
            c.camera_defaults.backoff_initial = Duration::from_millis(200);
            c.camera_defaults.backoff_max = Duration::from_secs(1);
        },
    )?;
    let reader = TopicReader::new(&broker.bootstrap, &topic)?;
    let mut records = Vec::new();
    frames_of_size(&reader, &mut records, (640, 360), 5, &node)?;
    let steady_reconnects = reconnects(&node);

    let steps = [
        (
            json!({"width": 320, "height": 240, "fps": 15}),
            (320, 240),
            false,
        ),
        (
            json!({"format": "h265", "width": 480, "height": 270}),
            (480, 270),
            true,
        ),
        (
            json!({"format": "h264", "width": 1280, "height": 720}),
            (1280, 720),
            true,
        ),
    ];
    let mut expected_reconnects = steady_reconnects;
    for (change, source, new_codec) in steps {
        sim.change_format(ID, &change)?;
        let took = frames_of_size(&reader, &mut records, source, 5, &node)
            .with_context(|| format!("after {change}"))?;
        println!(
            "{change}: frames of {source:?} after {:.1} s",
            took.as_secs_f64()
        );
        let now = reconnects(&node);
        if new_codec {
            ensure!(
                now > expected_reconnects,
                "{change}: the node did not reconnect"
            );
        } else {
            ensure!(
                now == expected_reconnects,
                "{change}: the node reconnected ({now}) instead of renegotiating"
            );
        }
        expected_reconnects = now;
    }

    let headers: Vec<_> = records
        .iter()
        .filter_map(|r| r.headers.as_ref().ok())
        .collect();
    ensure!(headers.len() == records.len(), "unparseable headers");
    for h in &headers {
        let want = fit_within(h.source_width, h.source_height, BOX.0, BOX.1);
        ensure!(
            (h.width, h.height) == want,
            "seq {}: {}x{} from a {}x{} source, want {want:?}",
            h.seq,
            h.width,
            h.height,
            h.source_width,
            h.source_height
        );
    }
    for r in &records {
        let h = r
            .headers
            .as_ref()
            .map_err(|e| anyhow::anyhow!("headers: {e}"))?;
        let (w, ht) = jpeg_info(&r.payload)?;
        ensure!(
            (w, ht) == (h.width, h.height),
            "seq {}: JPEG {w}x{ht} vs header",
            h.seq
        );
    }
    let seqs: Vec<u64> = headers.iter().map(|h| h.seq).collect();
    ensure!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "sequence not continuous across the changes: {seqs:?}"
    );
    println!(
        "{} frames, seq {}..={}, {} reconnects",
        seqs.len(),
        seqs[0],
        seqs[seqs.len() - 1],
        reconnects(&node) - steady_reconnects
    );
    Ok(())
}

/// (width, height) of a JPEG.
fn jpeg_info(bytes: &[u8]) -> Result<(u32, u32)> {
    let mut dec = jpeg_decoder::Decoder::new(bytes);
    dec.read_info().context("not a JPEG")?;
    let info = dec.info().context("no JPEG info")?;
    Ok((u32::from(info.width), u32::from(info.height)))
}
