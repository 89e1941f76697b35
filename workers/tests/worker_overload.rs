//! Overload: frames arrive far faster than the worker infers them. With the `skip` policy,
//! frames older than `max_age` at dequeue are skipped (counted, one record each); every
//! frame is still accounted for, and resident memory stays flat: after a warm-up burst, a
//! second 600-frame overload burst peaks no higher than the first (the in-flight bound
//! pauses the partition; the backlog waits in Kafka, not in the worker).

mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use common::node::{Rig, finish_when_settled};
use panoptes_testkit::kafka::{FrameProducer, frame_headers, test_jpeg};
use panoptes_testkit::metric_value;
use panoptes_workers::config::StalePolicy;

/// `n` frames per camera from `first_seq` on, cam0 → partition 0, cam1 → partition 1.
fn burst(p: &FrameProducer, topic: &str, first_seq: u64, n: u64, jpeg: &[u8]) -> Result<()> {
    for seq in first_seq..first_seq + n {
        for (partition, camera) in [(0, "cam0"), (1, "cam1")] {
            let h = frame_headers(camera, seq, (320, 180), Duration::ZERO);
            p.send(topic, partition, &h, jpeg)?;
        }
    }
    p.flush()
}

fn wait_answered(c: &panoptes_checker::Checker, want: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let p = c.progress();
        if p.detections + p.dead_letters >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {p:?} of {want}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Frames per camera in each overload burst (the in-flight bound is 16: each burst overfills
/// it many times over, so the partition pauses and the backlog waits in Kafka).
const BURST: u64 = 300;
/// Frames produced in all: 2 cameras × (warm-up 100 + three bursts).
const TOTAL: u64 = 2 * (100 + 3 * BURST);

#[test]
fn overload_skips_stale_frames_with_flat_memory() -> Result<()> {
    let rig = Rig::new(2)?;
    let Rig { broker, t, .. } = &rig;
    let checker = rig.checker(Vec::new())?;
    let worker = rig.worker(|c| {
        c.partition_queue = 16;
        c.decode_threads = 1;
        c.batching.max_batch = 4;
        c.batching.max_wait = Duration::from_millis(5);
        c.staleness.policy = StalePolicy::Skip;
        c.staleness.max_age = Duration::from_millis(250);
    })?;
    let producer = FrameProducer::new(&broker.bootstrap, &[])?;
    let jpeg = test_jpeg(320, 180);
    // Warm-up burst (allocator and libtorch caches), then two identical overload bursts: the
    // first sets the working set under overload, the second must not grow it. (Comparing a
    // quiet moment with the peak of a burst would measure the in-flight working set, not growth.)
    burst(&producer, &t.frames, 0, 100, &jpeg)?;
    wait_answered(&checker, 200)?;
    let rss_quiet = worker.proc.rss_kib().unwrap_or(0);
    let peak_during = |want: u64| -> u64 {
        let mut peak = 0;
        let deadline = Instant::now() + Duration::from_secs(40);
        while checker.progress().detections < want && Instant::now() < deadline {
            peak = peak.max(worker.proc.rss_kib().unwrap_or(0));
            std::thread::sleep(Duration::from_millis(50));
        }
        peak
    };
    burst(&producer, &t.frames, 100, BURST, &jpeg)?;
    let rss1 = peak_during(2 * (100 + BURST));
    burst(&producer, &t.frames, 100 + BURST, BURST, &jpeg)?;
    let rss2 = peak_during(2 * (100 + 2 * BURST));
    // A third identical burst: the allocator's arenas settle over the first two under load
    // (seen growing by up to ~45 MiB between the first and second on a busy machine); a leak
    // or an unbounded queue would keep growing.
    burst(&producer, &t.frames, 100 + 2 * BURST, BURST, &jpeg)?;
    let rss_max = peak_during(TOTAL);
    let report = finish_when_settled(checker, Duration::from_secs(30))?;
    println!("{}", report.to_markdown());
    let m = worker.metrics();
    let skipped = metric_value(
        &m,
        "panoptes_worker_frames_skipped_total{reason=\"skipped_stale\"}",
    )
    .unwrap_or(0.0);
    let ok = metric_value(&m, "panoptes_worker_records_total{status=\"ok\"}").unwrap_or(0.0);
    println!(
        "RSS quiet {rss_quiet} KiB, peak during the {}-frame bursts: {rss1}, {rss2}, {rss_max} KiB; {ok} inferred, {skipped} skipped stale",
        2 * BURST
    );
    assert_eq!(report.total.frames, TOTAL);
    assert_eq!(report.total.lost, 0);
    assert_eq!(report.total.duplicated, 0);
    assert_eq!(report.total.reordered, 0);
    assert!(skipped > 0.0, "the burst must overload the worker");
    assert_eq!(report.total.skipped_total() as f64, skipped);
    assert!(
        rss_max < rss2 + 32 * 1024,
        "RSS peak grew from {rss2} to {rss_max} KiB between the second and third identical bursts"
    );
    // Every frame was answered, so each partition's lag (end offset from the broker minus
    // the position, refreshed every 2 s) comes to 0 and stays a real reading.
    panoptes_testkit::wait_until("lag 0 on both partitions", Duration::from_secs(6), || {
        let m = worker.metrics();
        (0..2)
            .all(|p| {
                metric_value(
                    &m,
                    &format!("panoptes_worker_partition_lag{{partition=\"{p}\"}}"),
                ) == Some(0.0)
            })
            .then_some(())
    })?;
    Ok(())
}
