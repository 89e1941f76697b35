//! `panoptes-loadtest run` end to end: a short run of 2 cameras through the whole stack (real
//! processes), then the report files: JSON that parses and accounts for every frame,
//! Markdown with the charts embedded, and four valid PNG charts of a non-trivial size.
//!
//! Needs the workspace binaries (`cargo build --workspace --bins`) and the DejaVu font
//! (`scripts/setup.sh`). About 35 s.

use std::process::Command;

use panoptes_testkit::bin_path;

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

#[test]
fn short_run_writes_a_complete_report() {
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().join("report");
    let result = Command::new(bin_path("panoptes-loadtest"))
        .args([
            "run",
            "--cameras",
            "2",
            "--fps",
            "5",
            "--resolution",
            "320x180",
            "--seconds",
            "20",
            "--workers",
            "2",
            "--out",
        ])
        .arg(&dir)
        .output()
        .expect("running panoptes-loadtest");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "run failed:\n{stderr}");

    let json_text = std::fs::read_to_string(dir.join("report.json")).expect("report.json");
    let json: serde_json::Value = serde_json::from_str(&json_text).expect("report.json parses");
    let frames = json["checker"]["total"]["frames"].as_u64().expect("frames");
    assert!(frames > 0, "no frames: {json_text}");
    assert_eq!(json["checker"]["total"]["lost"], 0, "{json_text}");
    assert_eq!(json["checker"]["total"]["duplicated"], 0, "{json_text}");
    assert_eq!(json["verdict"]["pass"], true, "{json_text}");
    // 2 cameras × 5 fps × 20 s, give or take start-up on a busy machine.
    let recorded = json["throughput"]["frames_in"]["records"]
        .as_u64()
        .expect("frames in");
    assert!(recorded >= 100, "only {recorded} frames recorded");
    assert!(
        json["latency_ms"]["p99"].as_f64().is_some_and(|v| v > 0.0),
        "{json_text}"
    );
    assert!(
        json["samples"].as_array().is_some_and(|s| s.len() >= 18),
        "{json_text}"
    );
    assert!(
        json["processes"]
            .as_object()
            .is_some_and(|p| p.contains_key("worker-0") && p.contains_key("ingest-0")),
        "{json_text}"
    );

    let md = std::fs::read_to_string(dir.join("report.md")).expect("report.md");
    assert!(md.contains("**Result: PASS**"), "{md}");
    assert!(md.contains("panoptes-loadtest run --cameras 2"), "{md}");
    for png in [
        "throughput.png",
        "latency.png",
        "latency-histogram.png",
        "resources.png",
    ] {
        assert!(
            md.contains(&format!("({png})")),
            "{png} not embedded:\n{md}"
        );
        let bytes = std::fs::read(dir.join(png)).unwrap_or_else(|e| panic!("{png}: {e}"));
        assert!(bytes.starts_with(PNG_MAGIC), "{png} is not a PNG");
        // IHDR: width and height, big-endian, at bytes 16..24.
        let width = u32::from_be_bytes(bytes[16..20].try_into().expect("4 bytes"));
        let height = u32::from_be_bytes(bytes[20..24].try_into().expect("4 bytes"));
        assert_eq!((width, height), (1000, 500), "{png}");
        // A blank 1000×500 PNG compresses to a few KB; text, grid and lines make tens of KB.
        assert!(bytes.len() > 20_000, "{png} is only {} bytes", bytes.len());
    }
}
