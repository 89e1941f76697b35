//! A broker outage never wedges a worker that has no controller (static assignment): on a
//! 3-broker development broker, the broker coordinating the test's consumer group goes down
//! for 4 s and comes back. Its group and the partitions' transactional ids are registered
//! with the development broker, which moves their coordinators to a live broker as Kafka
//! would; the partitions it leads stay unavailable while it is down. Detections of every
//! camera must flow again by themselves soon after it is back, the worker must still be
//! running, and the checker must find nothing lost (exactly-once: nothing duplicated unless
//! a hung librdkafka call had a run restarted, see the test).
//!
//! And a fatal librdkafka error on a worker's producer (fatal idempotence, injected by the
//! development broker) replaces the producer: counted, `/readyz` ready again, frames flowing.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use common::node::{
    CAMERAS, Worker, camera_configs, checker, exactly_once, finish_when_settled, start_ingest,
    start_worker,
};
use panoptes_checker::Report;
use panoptes_testkit::kafka::{FrameProducer, all_records, frame_headers, test_jpeg};
use panoptes_testkit::{CamSim, DevBroker, Topics, unique_name, wait_until};
use panoptes_workers::config::WorkerConfig;
use panoptes_workers::pipeline::publish::transactional_id;

const DOWN_FOR: Duration = Duration::from_secs(4);
/// Bound from "broker up" to detections of every camera (the chaos scenario's bound).
const RECOVERY_BOUND_MS: i64 = 10_000;

fn now_us() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Registers the group and the transactional ids with the broker; returns the broker that
/// coordinates the group.
fn register(broker: &DevBroker, t: &Topics, group: &str) -> Result<i64> {
    let txn: Vec<String> = (0..3).map(|p| transactional_id(&t.frames, p)).collect();
    let body = serde_json::json!({ "group": [group], "transaction": txn }).to_string();
    let (status, text) = broker.api("POST", "/coordinators", Some(&body))?;
    anyhow::ensure!(status == 200, "POST /coordinators: {status} {text}");
    let v: serde_json::Value = serde_json::from_str(&text)?;
    v["coordinators"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["key"] == group))
        .and_then(|c| c["broker"].as_i64())
        .context("group not in the coordinator list")
}

/// A static worker (reference detector, fresh id) in `group`, tuned by `tune`.
fn worker(
    broker: &DevBroker,
    t: &Topics,
    group: &str,
    tune: fn(&mut WorkerConfig),
) -> Result<Worker> {
    let model = &common::models().reference;
    start_worker(&unique_name("w"), &broker.bootstrap, t, group, model, tune)
}

/// Runs the outage against a static worker tuned by `tune`; returns the checker's report,
/// each camera's recovery (ms from "up" to its first record published after it) and how
/// many partition runs the worker restarted.
fn outage(tune: fn(&mut WorkerConfig)) -> Result<(Report, BTreeMap<String, i64>, f64)> {
    let cams = camera_configs();
    let sim = CamSim::with_configs(&cams)?;
    let broker = DevBroker::start(3)?;
    let t = broker.create_topics(3)?;
    let group = unique_name("group");
    let coordinator = register(&broker, &t, &group)?;
    let checker = checker(&broker.bootstrap, &t, cams)?;
    let mut worker = worker(&broker, &t, &group, tune)?;
    let mut ingest = start_ingest(&broker.bootstrap, &t.frames, &sim)?;
    std::thread::sleep(Duration::from_secs(4));

    let (s, body) = broker.api("POST", &format!("/brokers/{coordinator}/down"), None)?;
    anyhow::ensure!(s == 200, "down: {s} {body}");
    println!("broker {coordinator} down: {body}");
    std::thread::sleep(DOWN_FOR);
    let up_us = now_us();
    let (s, body) = broker.api("POST", &format!("/brokers/{coordinator}/up"), None)?;
    anyhow::ensure!(s == 200, "up: {s} {body}");
    std::thread::sleep(Duration::from_secs(8));
    assert!(ingest.proc.terminate(Duration::from_secs(10))?);
    let report = finish_when_settled(checker, Duration::from_secs(30))?;
    println!("{}", report.to_markdown());

    let records = all_records(&broker.bootstrap, &t.detections)?;
    let mut recovery = BTreeMap::new();
    for cam in CAMERAS {
        let first = records
            .iter()
            .filter(|r| r.camera_id == cam && r.published_time_us >= up_us)
            .map(|r| r.published_time_us)
            .min();
        if let Some(at) = first {
            recovery.insert(cam.to_string(), (at - up_us) / 1000);
        }
    }
    println!("recovery after broker {coordinator} came back (ms): {recovery:?}");
    let restarts = worker
        .metric("panoptes_worker_partition_restarts_total")
        .unwrap_or(0.0);
    println!("partition restarts: {restarts}");
    assert!(worker.proc.is_running(), "the worker must not exit");
    Ok((report, recovery, restarts))
}

fn assert_recovered(recovery: &BTreeMap<String, i64>) {
    assert_eq!(recovery.len(), CAMERAS.len(), "every camera: {recovery:?}");
    for (cam, ms) in recovery {
        assert!(*ms <= RECOVERY_BOUND_MS, "{cam} recovered after {ms} ms");
    }
}

#[test]
fn exactly_once_worker_recovers_from_a_coordinator_outage() -> Result<()> {
    let (report, recovery, restarts) = outage(|c| {
        exactly_once(c);
        c.epoch = 1;
    })?;
    assert_recovered(&recovery);
    let total = &report.total;
    assert!(total.frames >= 100, "{}", total.frames);
    assert_eq!(total.lost, 0, "{:?}", total.lost_examples);
    assert_eq!(total.reordered, 0);
    // Without a restart nothing may repeat. A run restarted after a hung librdkafka call
    // leaves its open transaction behind, whose records the development broker shows
    // (Kafka would abort them when the fresh producer initialises): at most a partition's
    // in-flight bound of frames per restart repeat.
    let bound = restarts * 64.0;
    assert!(
        (total.duplicated as f64) <= bound,
        "{} duplicates, {restarts} restarts",
        total.duplicated
    );
    Ok(())
}

#[test]
fn at_least_once_worker_recovers_from_a_coordinator_outage() -> Result<()> {
    let (report, recovery, _restarts) = outage(|c| c.epoch = 1)?;
    assert_recovered(&recovery);
    let total = &report.total;
    assert!(total.frames >= 100, "{}", total.frames);
    assert_eq!(total.lost, 0, "{:?}", total.lost_examples);
    Ok(())
}

/// Detection records the worker delivered, every status.
fn delivered(w: &Worker) -> f64 {
    w.metrics()
        .lines()
        .filter(|l| l.starts_with("panoptes_worker_records_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn a_fatal_producer_error_replaces_the_workers_producer() -> Result<()> {
    let broker = DevBroker::start(1)?;
    let t = broker.create_topics(1)?;
    let checker = checker(&broker.bootstrap, &t, Vec::new())?;
    let mut worker = worker(&broker, &t, &unique_name("group"), |c| c.epoch = 1)?;
    let frames = FrameProducer::new(&broker.bootstrap, &[])?;
    let jpeg = test_jpeg(320, 180);
    let send = |seqs: std::ops::Range<u64>| -> Result<()> {
        for seq in seqs {
            let h = frame_headers("cam0", seq, (320, 180), Duration::ZERO);
            frames.send(&t.frames, 0, &h, &jpeg)?;
        }
        frames.flush()
    };
    send(0..10)?;
    wait_until("10 records", Duration::from_secs(30), || {
        (delivered(&worker) >= 10.0).then_some(())
    })?;
    // Frames wait while the worker is stopped; then the next Produce request, the worker's
    // (nothing else produces), fails with OUT_OF_ORDER_SEQUENCE_NUMBER while it is the only
    // one in flight: librdkafka raises a fatal idempotence error on the producer.
    worker.proc.signal("STOP")?;
    send(10..20)?;
    broker.fail_next_produce_fatally()?;
    worker.proc.signal("CONT")?;
    wait_until("the producer replaced", Duration::from_secs(20), || {
        worker
            .metric("panoptes_worker_kafka_client_rebuilds_total")
            .filter(|&v| v >= 1.0)
    })?;
    let fatal = worker.metric("panoptes_worker_kafka_errors_total{kind=\"fatal\"}");
    assert!(fatal.unwrap_or(0.0) >= 1.0, "fatal errors: {fatal:?}");
    worker.wait_ready(Duration::from_secs(10))?;
    send(20..30)?;
    wait_until(
        "records after the replacement",
        Duration::from_secs(20),
        || (delivered(&worker) >= 30.0).then_some(()),
    )?;
    let report = finish_when_settled(checker, Duration::from_secs(20))?;
    println!("{}", report.to_markdown());
    assert_eq!(report.total.frames, 30);
    assert_eq!(report.total.lost, 0, "{:?}", report.total.lost_examples);
    assert!(worker.proc.is_running(), "the worker must not exit");
    Ok(())
}
