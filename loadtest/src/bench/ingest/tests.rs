//! Unit tests of the ingest benchmark's pure parts (parameters, pipeline text, counting,
//! the report).

use super::*;

fn urls(n: u32) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("cam{i}"), format!("rtsp://127.0.0.1:8554/cam{i}")))
        .collect()
}

#[test]
fn defaults_and_quick_are_valid_and_bad_values_are_not() {
    IngestBenchParams::default().validate().expect("default");
    IngestBenchParams::quick().validate().expect("quick");
    assert_eq!(IngestBenchParams::quick().cameras, 2);
    let bad = |f: fn(&mut IngestBenchParams)| {
        let mut p = IngestBenchParams::default();
        f(&mut p);
        p.validate().is_err()
    };
    assert!(bad(|p| p.cameras = 0));
    assert!(bad(|p| p.out_fps = 20));
    assert!(bad(|p| p.out_width = 1920));
    assert!(bad(|p| p.out_height = 361));
    assert!(bad(|p| p.window_s = 0));
}

#[test]
fn bare_pipeline_has_one_branch_per_camera() {
    let args = IngestBenchParams::default().bare_launch_args(&urls(2));
    assert_eq!(args[0], "-v");
    let text = args.join(" ");
    assert_eq!(text.matches("rtspsrc ").count(), 2);
    assert!(
        text.contains("location=rtsp://127.0.0.1:8554/cam1 protocols=tcp latency=200 ! decodebin")
    );
    assert!(text.contains(
        "videorate drop-only=true max-rate=5 ! videoscale ! video/x-raw,width=640,height=360"
    ));
    assert!(text.contains("jpegenc quality=80 ! fakesink name=cam1 sync=false silent=false"));
}

#[test]
fn ingest_config_lists_the_cameras() {
    let c = IngestBenchParams::default().ingest_config("127.0.0.1:1234", &urls(2), Phase::Ingest);
    assert!(c.camera_defaults.decode_skip);
    let all = IngestBenchParams::default().ingest_config("x:1", &urls(1), Phase::IngestDecodeAll);
    assert!(!all.camera_defaults.decode_skip);
    assert_eq!(c.kafka.client.bootstrap_servers, "127.0.0.1:1234");
    let d = &c.camera_defaults;
    assert_eq!(
        (d.fps, d.width, d.height, d.jpeg_quality),
        (5, 640, 360, 80)
    );
    assert_eq!(c.cameras.len(), 2);
    assert_eq!(
        (c.cameras[1].id.as_str(), c.cameras[1].url.as_str()),
        ("cam1", "rtsp://127.0.0.1:8554/cam1")
    );
    // What the node reads: the same settings survive the trip through TOML.
    let toml = toml::to_string(&c).expect("serializes");
    assert!(toml.contains("jpeg_quality = 80"));
    assert_eq!(toml.matches("[[cameras]]").count(), 2);
}

#[test]
fn counts_fakesink_buffers_from_verbose_output() {
    let c = LaunchFrameCounter::default();
    for line in [
        "/GstPipeline:pipeline0/GstFakeSink:cam0: last-message = chain   ******* (cam0:sink) (9628 bytes, dts: 0:00:11.6)",
        "/GstPipeline:pipeline0/GstFakeSink:cam1: last-message = chain   ******* (cam1:sink) (9593 bytes)",
        "/GstPipeline:pipeline0/GstFakeSink:cam0: last-message = chain   ******* (cam0:sink) (9593 bytes)",
        "/GstPipeline:pipeline0/GstFakeSink:cam0: last-message = event   ******* (cam0:sink) E (type: eos (28174), )",
        "/GstPipeline:pipeline0/GstRTSPSrc:rtspsrc0/GstRtpBin:manager: latency = 200",
        "Setting pipeline to PLAYING ...",
    ] {
        c.feed(line);
    }
    assert_eq!(c.total(), 3);
    assert_eq!(c.per_sink().get("cam0"), Some(&2));
}

fn sample(phase: Phase, round: u32, frames: u64, cpu_s: f64) -> Sample {
    Sample {
        phase,
        round,
        frames,
        cpu_s,
        wall_s: 10.0,
        source_cpu_s: 1.0,
        machine_busy: 0.5,
        rss_kib: Some(2048),
        skipped: None,
    }
}

#[test]
fn report_ratio_and_cameras_per_core() {
    let samples = vec![
        sample(Phase::Bare, 1, 100, 0.5),
        sample(Phase::Ingest, 1, 100, 0.6),
        sample(Phase::Bare, 2, 100, 0.4),
        sample(Phase::Ingest, 2, 100, 0.6),
    ];
    let machine = MachineInfo {
        nproc: 2,
        cpu_model: "test".into(),
        kernel: "Linux".into(),
        gstreamer: "GStreamer 1.22.0".into(),
        loadavg_at_start: "0 0 0".into(),
    };
    let ticks = ClockTicks {
        per_second: 100,
        from_getconf: true,
    };
    let run = RunInfo {
        date: "2025-01-01T00:00:00Z".into(),
        command: "bench".into(),
        profile: "dev".into(),
    };
    let r = IngestBenchReport::new(
        run,
        machine,
        ticks,
        None,
        IngestBenchParams {
            rounds: 2,
            ..IngestBenchParams::default()
        },
        samples,
        "…".into(),
    )
    .expect("report");
    assert!((r.bare.cpu_per_frame_s - 0.0045).abs() < 1e-12);
    assert!((r.ingest.cpu_per_frame_s - 0.006).abs() < 1e-12);
    assert!((r.ratio - 0.006 / 0.0045).abs() < 1e-9);
    assert!(!r.within_target);
    assert_eq!(r.round_ratios.len(), 2);
    assert!((r.round_ratios[0] - 1.2).abs() < 1e-9);
    // 1 / (0.006 s × 5 fps) = 33.3 cameras per core.
    assert!((r.ingest.cameras_per_core - 1.0 / 0.03).abs() < 1e-9);
    let md = r.to_markdown();
    assert!(md.contains("| CPU ms per output frame (median) | 4.50 | 6.00 |"));
    assert!(md.contains("ABOVE target"));
    serde_json::to_string(&r).expect("json");
}
