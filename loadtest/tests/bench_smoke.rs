//! The ingest benchmark runs end to end in its small `--quick` form: both phases produce
//! frames and a ratio is reported. The ratio itself is not asserted here: performance is
//! judged from full benchmark runs (docs/benchmarks.md), never from a timed test.

use std::process::Command;

#[test]
fn quick_ingest_benchmark_produces_a_report() {
    let out = tempfile::tempdir().expect("tempdir");
    let status = Command::new(env!("CARGO_BIN_EXE_panoptes-bench-ingest"))
        .args(["--quick", "--window", "5", "--out"])
        .arg(out.path())
        .status()
        .expect("run panoptes-bench-ingest");
    assert!(status.success(), "benchmark failed: {status}");
    let text = std::fs::read_to_string(out.path().join("ingest-bench.json")).expect("JSON report");
    let report: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let samples = report["samples"].as_array().expect("samples");
    for phase in ["bare", "ingest"] {
        let frames: u64 = samples
            .iter()
            .filter(|s| s["phase"] == phase)
            .map(|s| s["frames"].as_u64().unwrap_or(0))
            .sum();
        assert!(frames > 0, "{phase} phase produced no frames: {text}");
    }
    let ratio = report["ratio"].as_f64().expect("ratio");
    assert!(ratio.is_finite() && ratio > 0.0, "ratio {ratio}");
    assert!(out.path().join("ingest-bench.md").is_file());
}
