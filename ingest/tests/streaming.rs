//! Cameras at different rates and sizes through a real ingest node into a real broker.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use common::{Ingest, broker_with_topic, camera, start};
use panoptes_schemas::FrameEncoding;
use panoptes_testkit::CamSim;
use panoptes_testkit::kafka::{TopicReader, by_camera};

struct Expect {
    fps: f64,
    size: (u32, u32),
    source: (u32, u32),
}

/// What a camera should publish: its rate, frame size and the source size it reports.
fn expect(fps: f64, size: (u32, u32), source: (u32, u32)) -> Expect {
    Expect { fps, size, source }
}

#[test]
fn four_cameras_publish_gapless_ordered_valid_frames_at_their_rates() -> Result<()> {
    let (broker, topic) = broker_with_topic(8)?;
    let sim = CamSim::with_cameras(&[
        "id=cam0,width=640,height=360,fps=10,codec=h264",
        "id=cam1,width=1280,height=720,fps=10,codec=h264",
        "id=cam2,width=640,height=480,fps=8,codec=h265",
        "id=cam3,width=320,height=240,fps=12,codec=h264",
    ])?;
    let cams = vec![
        // Full rate, no scaling; explicit partition.
        camera("cam0", sim.url("cam0", None), 10, (640, 360), Some(3)),
        // 720p sampled to half rate, scaled into 640x360.
        camera("cam1", sim.url("cam1", None), 5, (640, 360), None),
        // H.265, 4:3 into a square box: aspect kept.
        camera("cam2", sim.url("cam2", None), 4, (320, 320), None),
        // Smaller than the box: never upscaled.
        camera("cam3", sim.url("cam3", None), 12, (640, 360), Some(7)),
    ];
    let expect: BTreeMap<&str, Expect> = [
        ("cam0", expect(10.0, (640, 360), (640, 360))),
        ("cam1", expect(5.0, (640, 360), (1280, 720))),
        ("cam2", expect(4.0, (320, 240), (640, 480))),
        ("cam3", expect(12.0, (320, 240), (320, 240))),
    ]
    .into_iter()
    .collect();
    let mut ingest = start(&broker.bootstrap, &topic, cams.clone(), |_| ())?;
    for c in &cams {
        ingest.wait_streaming(&c.id, Duration::from_secs(20))?;
    }
    // Read what arrives over a 12 s window while the cameras stream.
    let reader = TopicReader::new(&broker.bootstrap, &topic)?;
    let mut records = Vec::new();
    reader.read_for(Duration::from_secs(12), &mut records)?;
    assert!(
        ingest.terminate_cleanly(),
        "ingest did not exit cleanly on SIGTERM:\n{}",
        ingest.proc.log_text()
    );
    reader.read_for(Duration::from_secs(2), &mut records)?;

    let cams_seen = by_camera(&records);
    assert!(
        !cams_seen.contains_key(""),
        "records with bad headers: {:?}",
        cams_seen.get("").map(|r| r[0].headers.clone())
    );
    for (id, want) in &expect {
        let recs = cams_seen
            .get(*id)
            .unwrap_or_else(|| panic!("no frames from {id}"));
        assert!(
            recs.len() as f64 >= want.fps * 8.0,
            "{id}: only {} frames",
            recs.len()
        );
        let partitions: std::collections::BTreeSet<i32> =
            recs.iter().map(|r| r.partition).collect();
        assert_eq!(
            partitions.len(),
            1,
            "{id}: frames spread over partitions {partitions:?}"
        );
        if let Some(p) = cams.iter().find(|c| c.id == *id).and_then(|c| c.partition) {
            assert_eq!(partitions.iter().next(), Some(&p), "{id}: wrong partition");
        }
        let mut prev_seq: Option<u64> = None;
        for r in recs {
            let h = r.headers.as_ref().expect("headers parse");
            h.validate()
                .unwrap_or_else(|e| panic!("{id} seq {}: invalid headers: {e}", h.seq));
            h.check_record_key(r.key.as_deref().map(str::as_bytes))
                .expect("key is the camera id");
            assert_eq!(h.encoding, FrameEncoding::Jpeg);
            if let Some(p) = prev_seq {
                assert_eq!(h.seq, p + 1, "{id}: sequence gap or reorder");
            } else {
                assert_eq!(h.seq, 0, "{id}: sequence must start at 0");
            }
            prev_seq = Some(h.seq);
            assert_eq!((h.width, h.height), want.size, "{id}: header size");
            assert_eq!(
                (h.source_width, h.source_height),
                want.source,
                "{id}: header source size"
            );
            let mut dec = jpeg_decoder::Decoder::new(r.payload.as_slice());
            dec.decode()
                .unwrap_or_else(|e| panic!("{id} seq {}: payload is not a JPEG: {e}", h.seq));
            let info = dec.info().expect("jpeg info");
            assert_eq!(
                (u32::from(info.width), u32::from(info.height)),
                want.size,
                "{id}: JPEG size"
            );
        }
        // Rate from capture times, skipping the first second (jitter-buffer start-up burst).
        let times: Vec<i64> = recs
            .iter()
            .map(|r| r.headers.as_ref().unwrap().capture_time_us)
            .collect();
        let start = times[0] + 1_000_000;
        let window: Vec<i64> = times.into_iter().filter(|t| *t >= start).collect();
        let span = (window[window.len() - 1] - window[0]) as f64 / 1e6;
        let fps = (window.len() - 1) as f64 / span;
        assert!(
            (fps - want.fps).abs() <= want.fps * 0.10,
            "{id}: measured {fps:.2} fps, configured {}",
            want.fps
        );
        eprintln!(
            "{id}: {} frames, {fps:.2} fps (configured {})",
            recs.len(),
            want.fps
        );
    }
    drop(sim);
    drop(broker);
    Ok(())
}

trait Terminate {
    fn terminate_cleanly(&mut self) -> bool;
}

impl Terminate for Ingest {
    fn terminate_cleanly(&mut self) -> bool {
        self.proc
            .terminate(Duration::from_secs(15))
            .unwrap_or(false)
    }
}
