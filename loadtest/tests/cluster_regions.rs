//! Two regions on one machine, each with its own broker, ingest node and worker.
//!
//! 1. All of region a's workers are killed: region b's worker consumes a's partitions from
//!    a's broker (detections keep coming for a's cameras); a new worker in a takes them home.
//! 2. Region a's broker goes down (every broker of its cluster refuses connections): a's
//!    ingest node reports it, the coordinator moves a's cameras to b's ingest node, their
//!    frames go to b's broker and b's worker processes them there; when a's broker is back,
//!    the cameras go home.
//!
//! Each region's checker finds nothing lost and no duplicate except frames of the killed
//! worker's uncommitted transaction (shown by the development broker only).

use std::time::Duration;

use anyhow::Result;
use panoptes_coordinator_client::{MemberKind, keys};
use panoptes_loadtest::stack::{Stack, StackCamera, StackSpec, WaitAssignments, Watching};
use panoptes_loadtest::watch::wall_ms;
use panoptes_testkit::wait_until;

#[test]
fn region_failures_move_work_across_and_back() -> Result<()> {
    let cameras = vec![
        StackCamera::small("a0", "a", 4, 1),
        StackCamera::small("a1", "a", 4, 2),
        StackCamera::small("b0", "b", 4, 3),
        StackCamera::small("b1", "b", 4, 4),
    ];
    let mut spec = StackSpec::single_region(cameras, 4);
    spec.regions = vec!["a".into(), "b".into()];
    let mut stack = Stack::start(spec)?;
    stack.start_ingest("in-a", "a")?;
    stack.start_ingest("in-b", "b")?;
    stack.start_worker("w-a", "a", "default")?;
    stack.start_worker("w-b", "b", "default")?;
    stack.register_cameras()?;
    stack.wait_settled(Duration::from_secs(60))?;
    let (cams, parts) = stack.assignments()?;
    assert_eq!(cams["a0"].owner, "in-a");
    assert_eq!(cams["b0"].owner, "in-b");
    assert_eq!(parts["a:0"].owner, "w-a", "work stays in its region");
    assert_eq!(parts["b:2"].owner, "w-b");
    let check_a = stack.checker("a")?;
    let check_b = stack.checker("b")?;
    let det_a = stack.watch_detections("a")?;
    let det_b = stack.watch_detections("b")?;
    let frames_b = stack.watch_frames("b")?;
    std::thread::sleep(Duration::from_secs(2));

    // 1. Region a loses all its workers.
    let killed = stack.kill(MemberKind::Worker, "w-a").map(|_| wall_ms())?;
    wait_until(
        "b's worker to consume a's partitions",
        Duration::from_secs(10),
        || {
            det_a
                .seen()
                .iter()
                .any(|d| d.arrived_ms > killed && d.worker_id == "w-b" && d.partition == 0)
                .then_some(())
        },
    )?;
    let (_, parts) = stack.assignments()?;
    assert_eq!(
        (parts["a:0"].owner.as_str(), parts["a:1"].owner.as_str()),
        ("w-b", "w-b")
    );
    eprintln!(
        "a's partitions consumed by w-b {} ms after the kill",
        det_a
            .seen()
            .iter()
            .filter(|d| d.worker_id == "w-b" && d.arrived_ms > killed)
            .map(|d| d.arrived_ms - killed)
            .min()
            .unwrap_or(0)
    );
    stack.start_worker("w-a2", "a", "default")?;
    stack.wait_assignments(
        "a's partitions to come home",
        Duration::from_secs(30),
        |_, p| p["a:0"].owner == "w-a2" && p["a:1"].owner == "w-a2",
    )?;
    std::thread::sleep(Duration::from_secs(2));

    // 2. Region a's broker goes down.
    stack.brokers["a"].all_down()?;
    let down = wall_ms();
    let moved = stack.wait_assignments(
        "a's cameras to move to b's ingest node",
        Duration::from_secs(20),
        |c, _| {
            c["a0"].owner == "in-b"
                && c["a0"].cluster.as_deref() == Some("b")
                && c["a1"].owner == "in-b"
        },
    )?;
    wait_until(
        "a's cameras' frames on b's broker, processed in b",
        Duration::from_secs(20),
        || {
            let f = frames_b.seen().iter().any(|f| f.camera_id == "a0");
            let d = det_b
                .seen()
                .iter()
                .any(|d| d.camera_id == "a0" && d.worker_id == "w-b");
            (f && d).then_some(())
        },
    )?;
    eprintln!(
        "broker a down: cameras moved after {} ms, detections of a0 in region b after {} ms",
        moved - down,
        wall_ms() - down
    );
    let (_, parts) = stack.assignments()?;
    assert_eq!(
        parts[&keys::partition_item("b", 0)].owner,
        "w-b",
        "routed frames are processed in region b"
    );
    std::thread::sleep(Duration::from_secs(2));

    // Region a's broker is back: the cameras go home.
    stack.brokers["a"].all_up()?;
    let up = wall_ms();
    stack.wait_assignments(
        "a's cameras to come home",
        Duration::from_secs(30),
        |c, _| {
            c["a0"].owner == "in-a"
                && c["a1"].owner == "in-a"
                && c["a0"].cluster.as_deref() == Some("a")
        },
    )?;
    eprintln!("broker a up: cameras home after {} ms", wall_ms() - up);
    std::thread::sleep(Duration::from_secs(3));

    let ids: Vec<String> = stack.ingest.keys().cloned().collect();
    for id in ids {
        stack.kill(MemberKind::Ingest, &id)?;
    }
    for (name, checker) in [("a", check_a), ("b", check_b)] {
        let report = panoptes_loadtest::stack::settle(checker, Duration::from_secs(60))?;
        let t = &report.total;
        eprintln!("region {name}: {t:?}");
        assert!(t.frames > 0);
        assert_eq!(t.lost, 0, "region {name}: {t:?}");
        assert_eq!(t.reordered, 0, "region {name}: {t:?}");
        let explained = t.duplicated_across_epochs.get("w-a").copied().unwrap_or(0);
        assert_eq!(t.duplicated, explained, "region {name}: {t:?}");
    }
    Ok(())
}
