//! End to end: camera simulator → real ingest node → devbroker → real worker with the
//! reference detector → the accounting checker reading all three topics while it runs.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::node::{CAMERAS, Rig, camera_configs, finish_when_settled, start_ingest};
use panoptes_testkit::{CamSim, metric_value};

#[test]
fn frames_from_three_cameras_are_detected_exactly_once_in_order() -> Result<()> {
    let started = Instant::now();
    let cams = camera_configs();
    let sim = CamSim::with_configs(&cams)?;
    let rig = Rig::new(3)?;
    let Rig { broker, t, .. } = &rig;
    let checker = rig.checker(cams)?;
    let worker = rig.worker(|c| {
        c.batching.max_batch = 4;
        c.batching.max_wait = Duration::from_millis(10);
    })?;
    let mut ingest = start_ingest(&broker.bootstrap, &t.frames, &sim)?;

    worker.wait_ready(Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(12));
    assert!(
        ingest.proc.terminate(Duration::from_secs(10))?,
        "ingest exits cleanly"
    );
    let report = finish_when_settled(checker, Duration::from_secs(20))?;
    println!("{}", report.to_markdown());

    let total = &report.total;
    assert!(total.frames >= 100, "too few frames: {}", total.frames);
    assert_eq!(total.lost, 0, "lost: {:?}", total.lost_examples);
    assert_eq!(total.duplicated, 0);
    assert_eq!(total.reordered, 0);
    assert_eq!(total.superseded, 0);
    assert_eq!(
        total.skipped_total(),
        0,
        "nothing should be stale at this rate"
    );
    assert_eq!(total.dead_lettered_total(), 0);
    for id in CAMERAS {
        assert!(report.cameras[id].detections_accepted > 20, "{id}");
    }
    let acc = total.accuracy.as_ref().context("accuracy report")?;
    let (p, r) = (acc.precision.unwrap_or(0.0), acc.recall.unwrap_or(0.0));
    println!(
        "precision {p:.4} recall {r:.4} over {} frames",
        acc.frames_evaluated
    );
    assert!(acc.frames_evaluated >= 90, "{acc:?}");
    assert!(p >= 0.95 && r >= 0.95, "{acc:?}");

    let m = worker.metrics();
    for series in [
        "panoptes_worker_batch_size_count",
        "panoptes_worker_end_to_end_latency_seconds_count",
        "panoptes_worker_frame_age_seconds_count",
        "panoptes_worker_stage_latency_seconds_count{stage=\"inference\"}",
    ] {
        let v = metric_value(&m, series).unwrap_or(0.0);
        assert!(v > 0.0, "{series} = {v}\n{m}");
    }
    let e2e_sum = metric_value(&m, "panoptes_worker_end_to_end_latency_seconds_sum").unwrap_or(0.0);
    let e2e_n = metric_value(&m, "panoptes_worker_end_to_end_latency_seconds_count").unwrap_or(1.0);
    let inf_sum = metric_value(
        &m,
        "panoptes_worker_stage_latency_seconds_sum{stage=\"inference\"}",
    )
    .unwrap_or(0.0);
    let inf_n = metric_value(
        &m,
        "panoptes_worker_stage_latency_seconds_count{stage=\"inference\"}",
    )
    .unwrap_or(1.0);
    let b_sum = metric_value(&m, "panoptes_worker_batch_size_sum").unwrap_or(0.0);
    let b_n = metric_value(&m, "panoptes_worker_batch_size_count").unwrap_or(1.0);
    println!(
        "mean end-to-end {:.1} ms, mean inference {:.1} ms/batch, mean batch {:.2}, test took {:?}",
        1000.0 * e2e_sum / e2e_n,
        1000.0 * inf_sum / inf_n,
        b_sum / b_n,
        started.elapsed()
    );
    assert!(m.contains("panoptes_worker_info{device=\"cpu\""), "{m}");
    let mut worker = worker;
    assert!(
        worker.proc.terminate(Duration::from_secs(15))?,
        "SIGTERM: the worker drains and exits 0"
    );
    Ok(())
}
