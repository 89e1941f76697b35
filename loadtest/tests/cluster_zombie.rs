//! A worker paused (SIGSTOP) past its lease loses its partitions to another worker at higher
//! epochs; after SIGCONT, nothing it writes for them is accepted by a reader that honours
//! epochs, and the checker finds no loss and no duplicate beyond the frames of the
//! transaction it had open when paused (visible on the development broker only).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Result;
use panoptes_coordinator_client::keys;
use panoptes_loadtest::stack::{Stack, StackCamera, StackSpec, WaitAssignments, Watching};
use panoptes_loadtest::watch::wall_ms;

#[test]
fn paused_worker_is_superseded_and_its_late_output_discarded() -> Result<()> {
    let cameras = StackCamera::small_set(4, "local", 5);
    let mut stack = Stack::start(StackSpec::single_region(cameras, 4))?;
    stack.start_members("local", &["ingest-0"], &["w-a", "w-b"])?;
    stack.register_cameras()?;
    stack.wait_settled(Duration::from_secs(60))?;
    stack.wait_owns("w-a", Duration::from_secs(20))?;
    stack.wait_owns("w-b", Duration::from_secs(20))?;
    let checker = stack.checker("local")?;
    let detections = stack.watch_detections("local")?;
    std::thread::sleep(Duration::from_secs(3));

    let before = stack.partitions_by_worker()?;
    let victim_items = before["w-a"].clone();
    let (_, parts_before) = stack.assignments()?;
    let old_epochs: BTreeMap<String, u64> = victim_items
        .iter()
        .map(|i| (i.clone(), parts_before[i].epoch))
        .collect();
    stack.workers["w-a"].proc.signal("STOP")?;
    let paused = Instant::now();
    let paused_ms = wall_ms();
    // Its partitions move to w-b at higher epochs once the lease expires.
    stack.wait_assignments(
        "the paused worker's partitions to move",
        Duration::from_secs(10),
        |_, parts| {
            victim_items.iter().all(|i| {
                parts
                    .get(i)
                    .is_some_and(|r| r.owner == "w-b" && r.epoch > old_epochs[i])
            })
        },
    )?;
    eprintln!("partitions moved {:?} after the pause", paused.elapsed());
    let moved_partitions =
        detections.wait_written_by("w-b", &victim_items, paused_ms, Duration::from_secs(10))?;
    std::thread::sleep(Duration::from_secs(2));
    stack.workers["w-a"].proc.signal("CONT")?;
    let resumed_ms = wall_ms();
    std::thread::sleep(Duration::from_secs(5));
    let lost_leases = stack.workers["w-a"]
        .metric("panoptes_worker_lease_lost_total")
        .unwrap_or(0.0);
    assert!(
        lost_leases >= 1.0,
        "the zombie noticed its lease had expired"
    );

    let report = stack.stop_intake_and_settle(checker, Duration::from_secs(60))?;
    let t = &report.total;
    eprintln!("checker: {t:?}");
    // Anything the zombie wrote for a moved partition after it resumed carries its old epoch
    // and is discarded by the epoch rule (the checker counts it as superseded).
    let (_, parts_after) = stack.assignments()?;
    for d in detections.seen() {
        if d.worker_id == "w-a"
            && d.arrived_ms >= resumed_ms
            && moved_partitions.contains(&d.partition)
        {
            let item = keys::partition_item("local", d.partition);
            assert!(
                d.epoch < parts_after[&item].epoch || d.epoch > old_epochs[&item],
                "zombie record at epoch {} for {item} after resuming",
                d.epoch
            );
        }
    }
    assert_eq!(t.lost, 0, "{t:?}");
    assert_eq!(t.reordered, 0, "{t:?}");
    let explained = t.duplicated_across_epochs.get("w-a").copied().unwrap_or(0);
    assert_eq!(
        t.duplicated, explained,
        "only the paused worker's open transaction is seen twice: {t:?}"
    );
    Ok(())
}
