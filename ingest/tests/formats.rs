//! Every source format GStreamer can decode reaches Kafka as a JPEG of the right size: 8-, 10-
//! and 12-bit, 4:2:0/4:2:2/4:4:4, interlaced, odd sizes, MJPEG and uncompressed video over
//! RTP, all served by the simulator's format cameras (plain gst-rtsp-server launch lines with
//! explicit caps, not the scene feeder) into one real ingest node; and a stream this node has
//! no decoder for is reported once, precisely, as `unsupported`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::{broker_with_topic, camera, start};
use panoptes_ingest::pipeline::fit_within;
use panoptes_schemas::FrameEncoding;
use panoptes_testkit::kafka::{FrameRecord, TopicReader, by_camera};
use panoptes_testkit::{CamSim, ingest, wait_until};

/// (camera id, format, source width, source height as the camera sends it).
const FORMATS: &[(&str, &str, u32, u32)] = &[
    ("h264-16", "h264", 650, 362),
    ("h264-hi10", "h264-high10", 320, 240),
    ("h264-hi422", "h264-high422", 320, 240),
    ("h264-hi422-10", "h264-high422-10", 320, 240),
    ("h264-hi444-odd", "h264-high444", 641, 361),
    ("h264-interlaced", "h264-interlaced", 320, 240),
    ("h265-main10", "h265-main10", 320, 240),
    ("h265-main12", "h265-main12", 320, 240),
    ("h265-444", "h265-main444", 320, 240),
    ("h265-422-10", "h265-main422-10", 320, 240),
    ("mjpeg-odd", "mjpeg", 643, 363),
    ("raw-uyvy", "raw-uyvy", 320, 240),
];

/// Analytic box of every camera.
const BOX: (u32, u32) = (640, 360);

/// Frames wanted from each camera.
const FRAMES: usize = 3;

fn format_sim() -> Result<CamSim> {
    let specs: Vec<String> = FORMATS
        .iter()
        .map(|(id, f, w, h)| format!("id={id},format={f},width={w},height={h},fps=5"))
        .collect();
    let mut args = Vec::new();
    for s in &specs {
        args.extend(["--format-camera", s.as_str()]);
    }
    CamSim::start(&args)
}

/// Reads `topic` until every camera in `ids` has `FRAMES` frames or `timeout` passes.
fn read_until_all(
    reader: &TopicReader,
    ids: &[&str],
    timeout: Duration,
) -> Result<Vec<FrameRecord>> {
    let deadline = Instant::now() + timeout;
    let mut records = Vec::new();
    loop {
        reader.read_for(Duration::from_millis(500), &mut records)?;
        let per_cam = by_camera(&records);
        let missing: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|id| per_cam.get(*id).is_none_or(|r| r.len() < FRAMES))
            .collect();
        if missing.is_empty() {
            return Ok(records);
        }
        if Instant::now() > deadline {
            bail!("after {timeout:?} no {FRAMES} frames yet from {missing:?}");
        }
    }
}

#[test]
fn every_decodable_format_reaches_kafka_as_jpeg() -> Result<()> {
    let (broker, topic) = broker_with_topic(16)?;
    let sim = format_sim()?;
    let cams = FORMATS
        .iter()
        .map(|(id, ..)| camera(id, sim.url(id, None), 5, BOX, None))
        .collect();
    let ingest = start(&broker.bootstrap, &topic, cams, |_| ())?;
    let reader = TopicReader::new(&broker.bootstrap, &topic)?;
    let ids: Vec<&str> = FORMATS.iter().map(|(id, ..)| *id).collect();
    let started = Instant::now();
    let records = read_until_all(&reader, &ids, Duration::from_secs(45)).map_err(|e| {
        let status = ingest.cameras();
        let log = ingest.proc.log_text();
        let tail: String = log
            .chars()
            .skip(log.chars().count().saturating_sub(6000))
            .collect();
        e.context(format!("camera status: {status:#}\nlog tail:\n{tail}"))
    })?;
    println!(
        "{} formats streaming after {:.1} s",
        ids.len(),
        started.elapsed().as_secs_f64()
    );

    let per_cam = by_camera(&records);
    let mut sizes = BTreeMap::new();
    for (id, format, sw, sh) in FORMATS {
        // RTP/JPEG (RFC 2435) carries sizes in 8-pixel blocks: a 643×363 camera arrives
        // as 648×368 (the encoder's padding blocks included), so that is the source.
        let (sw, sh) = if *format == "mjpeg" {
            (sw.next_multiple_of(8), sh.next_multiple_of(8))
        } else {
            (*sw, *sh)
        };
        let want = fit_within(sw, sh, BOX.0, BOX.1);
        for r in &per_cam[*id] {
            let h = r.headers.as_ref().expect("headers parse");
            h.validate().expect("valid headers");
            assert_eq!(h.encoding, FrameEncoding::Jpeg);
            assert_eq!(
                (h.source_width, h.source_height),
                (sw, sh),
                "{id}: source size"
            );
            assert_eq!((h.width, h.height), want, "{id}: header size");
            let mut dec = jpeg_decoder::Decoder::new(r.payload.as_slice());
            let pixels = dec
                .decode()
                .unwrap_or_else(|e| panic!("{id} seq {}: not a JPEG: {e}", h.seq));
            let info = dec.info().expect("jpeg info");
            assert_eq!(
                (u32::from(info.width), u32::from(info.height)),
                want,
                "{id}: JPEG size"
            );
            // The test pattern is a moving ball on black: a frame of one flat value means
            // the conversion lost the picture (e.g. 10-bit samples read as 8-bit zeros).
            let (lo, hi) = pixels
                .iter()
                .fold((u8::MAX, u8::MIN), |(lo, hi), p| (lo.min(*p), hi.max(*p)));
            assert!(hi - lo > 100, "{id}: flat picture ({lo}..{hi})");
        }
        sizes.insert(*id, want);
    }
    println!("output sizes: {sizes:?}");
    let status = ingest.cameras();
    for (id, ..) in FORMATS {
        let errors = ingest
            .metric(&format!(
                "panoptes_ingest_camera_errors_total{{camera=\"{id}\",kind=\"unsupported\"}}"
            ))
            .unwrap_or(0.0);
        assert_eq!(errors, 0.0, "{id} reported unsupported: {status:#}");
    }
    Ok(())
}

#[test]
fn a_stream_without_a_decoder_is_reported_once_as_unsupported() -> Result<()> {
    let (broker, topic) = broker_with_topic(1)?;
    let sim = CamSim::start(&["--format-camera", "id=hevc,format=h265-main10,fps=5"])?;
    let mut config = ingest::config("ingest-no-hevc", &broker.bootstrap, &topic);
    config.cameras = vec![camera("hevc", sim.url("hevc", None), 5, BOX, None)];
    config.camera_defaults.backoff_initial = Duration::from_millis(100);
    config.camera_defaults.backoff_max = Duration::from_millis(300);
    // A node without any H.265 decoder: rank NONE keeps decodebin from plugging them.
    let no_hevc =
        "avdec_h265:NONE,libde265dec:NONE,vah265dec:NONE,vaapih265dec:NONE,nvh265dec:NONE";
    let mut env = ingest::DEBUG_LOGS.to_vec();
    env.push(("GST_PLUGIN_FEATURE_RANK", no_hevc));
    let node = ingest::start(&config, &env)?;
    let series = "panoptes_ingest_camera_errors_total{camera=\"hevc\",kind=\"unsupported\"}";
    let reconnects = "panoptes_ingest_reconnects_total{camera=\"hevc\"}";
    // Several attempts, each failing the same way.
    wait_until("three reconnects", Duration::from_secs(30), || {
        (node.metric(reconnects).unwrap_or(0.0) >= 3.0).then_some(())
    })
    .map_err(|e| e.context(node.proc.log_text()))?;
    let status = node.camera("hevc");
    println!("status: {status:#}");
    assert_eq!(status["last_error_kind"], "unsupported", "{status:#}");
    let message = status["last_error"].as_str().unwrap_or_default();
    assert!(
        message.contains("no decoder installed for video/x-h265"),
        "imprecise reason: {message}"
    );
    assert_eq!(node.metric(series), Some(1.0), "counted once per reason");
    let other: f64 = ["pipeline", "connect_timeout", "stream_ended"]
        .iter()
        .map(|k| {
            node.metric(&format!(
                "panoptes_ingest_camera_errors_total{{camera=\"hevc\",kind=\"{k}\"}}"
            ))
            .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(other, 0.0, "reported under another kind too: {status:#}");
    Ok(())
}
