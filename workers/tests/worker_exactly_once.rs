//! Exactly-once mode: kill -9 the worker mid-stream, start a new one (next epoch) on the same
//! consumer group; it resumes from the offsets committed in the last transaction.
//!
//! The development broker (librdkafka's mock cluster) does not hide records of transactions
//! that never committed from `read_committed` readers. So the records the killed worker
//! wrote in its open transaction(s) stay visible, and the new worker — correctly — processes
//! those frames again. The test reads the group's committed offsets at the moment of the
//! kill and counts the killed worker's records at or after them: exactly those, and nothing
//! else, must show up as duplicates; nothing may be lost. On a real broker those records are
//! aborted (the new producer's `init_transactions` with the same transactional id) and hidden.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::node::{Rig, camera_configs, exactly_once, finish_when_settled, start_ingest};
use panoptes_testkit::CamSim;
use panoptes_testkit::kafka::{all_records, committed, offsets_reader};

#[test]
fn killed_worker_is_replaced_without_loss() -> Result<()> {
    let cams = camera_configs();
    let sim = CamSim::with_configs(&cams)?;
    let rig = Rig::new(3)?;
    let Rig { broker, t, group } = &rig;
    let checker = rig.checker(cams)?;
    let mut first = rig.worker(|c| {
        exactly_once(c);
        c.epoch = 1;
    })?;
    let mut ingest = start_ingest(&broker.bootstrap, &t.frames, &sim)?;
    std::thread::sleep(Duration::from_secs(6));
    first.proc.signal("KILL")?;
    std::thread::sleep(Duration::from_millis(300));
    assert!(!first.proc.is_running());
    let at_kill = committed(&offsets_reader(&broker.bootstrap, group)?, &t.frames, 3)?;
    println!("committed offsets at kill: {at_kill:?}");

    assert_eq!(
        at_kill.len(),
        3,
        "every partition had committed transactions"
    );

    let second = rig.worker(|c| {
        exactly_once(c);
        c.epoch = 2;
    })?;
    std::thread::sleep(Duration::from_secs(6));
    assert!(ingest.proc.terminate(Duration::from_secs(10))?);
    let report = finish_when_settled(checker, Duration::from_secs(30))?;
    println!("{}", report.to_markdown());

    let records = all_records(&broker.bootstrap, &t.detections)?;
    let leftovers = records
        .iter()
        .filter(|r| r.epoch == 1 && r.offset >= at_kill.get(&r.partition).copied().unwrap_or(0))
        .count() as u64;
    let by_second = records.iter().filter(|r| r.epoch == 2).count();
    println!(
        "records: {} total, {by_second} by the new worker, {leftovers} left by the killed worker's open transaction",
        records.len()
    );
    let total = &report.total;
    assert!(total.frames >= 120, "{}", total.frames);
    assert_eq!(total.lost, 0, "{:?}", total.lost_examples);
    assert_eq!(
        total.duplicated, leftovers,
        "only the uncommitted transaction's records repeat"
    );
    assert_eq!(total.reordered, 0);
    assert!(by_second > 0);
    drop(second);
    Ok(())
}
