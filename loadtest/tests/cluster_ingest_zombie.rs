//! An ingest node paused (SIGSTOP) past its lease loses its cameras to the other ingest node
//! at higher epochs; after SIGCONT it publishes nothing it captured after resuming (its lease
//! fence lapsed at the expiry, counted from its last renewal), no frame of the old owner is
//! inferred once the new owner's first frame was read (workers drop them under
//! `superseded_owner`), no `seq` is published twice, and the checker finds nothing lost.
//! A second process started with a live node's member id is refused at start.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Result;
use panoptes_loadtest::stack::{WaitAssignments, Watching, busiest_ingest, two_ingest_nodes};
use panoptes_loadtest::watch::{SeenFrame, wall_ms};
use panoptes_testkit::kafka::{self, FrameProducer};
use panoptes_testkit::{ingest, wait_until};

/// Per camera, frames in partition order: how many of the old owner's (epoch below `new`)
/// came after the new owner's first frame, as `(camera, seq)`.
fn old_after_new(frames: &[SeenFrame], new_epochs: &BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for (cam, new) in new_epochs {
        let mut new_seen = false;
        for f in frames.iter().filter(|f| &f.camera_id == cam) {
            match f.owner_epoch {
                Some(e) if e >= *new => new_seen = true,
                Some(_) if new_seen => out.push((cam.clone(), f.seq)),
                _ => {}
            }
        }
    }
    out
}

#[test]
fn paused_ingest_node_is_fenced_and_its_late_frames_dropped() -> Result<()> {
    let mut stack = two_ingest_nodes(4)?;
    let checker = stack.checker("local")?;
    let frames = stack.watch_frames("local")?;
    let detections = stack.watch_detections("local")?;
    std::thread::sleep(Duration::from_secs(2));

    let (cams_before, _) = stack.assignments()?;
    let (victim, cams, survivor) = busiest_ingest(&stack)?;
    let old_epochs: BTreeMap<String, u64> = cams
        .iter()
        .map(|c| (c.clone(), cams_before[c].epoch))
        .collect();
    stack.ingest[&victim].proc.signal("STOP")?;
    let stopped_ms = wall_ms();
    let granted_ms = stack.wait_assignments(
        "the paused node's cameras to move",
        Duration::from_secs(10),
        |a, _| {
            cams.iter()
                .all(|c| a[c].owner == survivor && a[c].epoch > old_epochs[c])
        },
    )?;
    let (cams_after, _) = stack.assignments()?;
    let new_epochs: BTreeMap<String, u64> = cams
        .iter()
        .map(|c| (c.clone(), cams_after[c].epoch))
        .collect();
    wait_until("the new owner's frames", Duration::from_secs(20), || {
        let seen = frames.seen();
        cams.iter()
            .all(|c| {
                seen.iter()
                    .any(|f| &f.camera_id == c && f.owner_epoch >= Some(new_epochs[c]))
            })
            .then_some(())
    })?;
    std::thread::sleep(Duration::from_millis(500));
    stack.ingest[&victim].proc.signal("CONT")?;
    let resumed_ms = wall_ms();
    // The zombie notices its lost lease at its next renewal and stops its cameras (the leader
    // may later hand it one back, at a newer epoch); the frames its camera threads try to
    // publish meanwhile are refused by the fence (read while the cameras' series still
    // exist: they go with the cameras).
    let mut fenced = 0.0f64;
    wait_until(
        "the zombie to notice its lost lease",
        Duration::from_secs(10),
        || {
            let text = stack.ingest[&victim].metrics();
            let now: f64 = text
                .lines()
                .filter(|l| {
                    l.starts_with("panoptes_ingest_frames_dropped_total")
                        && l.contains("lease_expired")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            fenced = fenced.max(now);
            let lost = panoptes_testkit::metric_value(&text, "panoptes_ingest_lease_lost_total")?;
            (lost >= 1.0).then_some(())
        },
    )?;
    std::thread::sleep(Duration::from_secs(1));

    let seen = frames.seen();
    let old_frames: Vec<&SeenFrame> = seen
        .iter()
        .filter(|f| {
            cams.contains(&f.camera_id)
                && f.owner_epoch.is_some_and(|e| e < new_epochs[&f.camera_id])
        })
        .collect();
    let last_old_capture_ms = old_frames
        .iter()
        .map(|f| (f.capture_time_us / 1000) as u64)
        .max()
        .unwrap_or(0);
    let captured_after_resume = old_frames
        .iter()
        .filter(|f| (f.capture_time_us / 1000) as u64 >= resumed_ms)
        .count();
    let late_before = old_after_new(&seen, &new_epochs);
    let mut reused = 0;
    for c in &cams {
        let mut seqs = BTreeSet::new();
        reused += seen
            .iter()
            .filter(|f| &f.camera_id == c)
            .filter(|f| !seqs.insert(f.seq))
            .count();
    }
    eprintln!(
        "{victim} paused; cameras {cams:?} granted to {survivor} {} ms later (lease 1 s); resumed after {} ms; \
         last frame captured by the old owner {} ms after the pause; old-owner frames captured after resuming: {captured_after_resume}; \
         old-owner frames read after the new owner's first: {} {late_before:?}; frames refused by the fence: {fenced}; reused seq: {reused}",
        granted_ms - stopped_ms,
        resumed_ms - stopped_ms,
        last_old_capture_ms as i64 - stopped_ms as i64,
        late_before.len(),
    );
    assert_eq!(
        captured_after_resume, 0,
        "the zombie published after its lease expired"
    );
    assert!(
        last_old_capture_ms < stopped_ms + 1000,
        "nothing captured by the old owner after its lease expiry"
    );
    assert_eq!(reused, 0, "sequence numbers are never reused");

    // The fence left nothing late to drop on this broker (the producer queue was empty when
    // the node froze), so play the frames a zombie with a fuller queue would still deliver:
    // the old owner's epoch, numbers from the gap between the two owners, after the new
    // owner's first frame. Workers must drop them (`superseded_owner`), not infer them.
    let zombie_cam = &cams[0];
    let old_max = old_frames
        .iter()
        .filter(|f| &f.camera_id == zombie_cam)
        .map(|f| f.seq)
        .max()
        .unwrap_or(0);
    let own = seen.iter().filter(|f| &f.camera_id == zombie_cam);
    let new_min = own
        .clone()
        .filter(|f| f.owner_epoch >= Some(new_epochs[zombie_cam]))
        .map(|f| f.seq)
        .min()
        .expect("new owner's frames");
    let partition = own.map(|f| f.partition).next().expect("a frame");
    let injected: Vec<u64> = (old_max + 1..new_min).take(3).collect();
    assert!(
        !injected.is_empty(),
        "a gap between the owners: {old_max} .. {new_min}"
    );
    let producer = FrameProducer::new(&stack.brokers["local"].bootstrap, &[])?;
    for seq in &injected {
        let mut h = kafka::frame_headers(zombie_cam, *seq, (320, 180), Duration::ZERO);
        h.owner_epoch = Some(old_epochs[zombie_cam]);
        producer.send(
            &stack.topics.frames,
            partition,
            &h,
            &kafka::test_jpeg(320, 180),
        )?;
    }
    producer.flush()?;
    wait_until(
        "records for the injected frames",
        Duration::from_secs(20),
        || {
            let dets = detections.seen();
            injected
                .iter()
                .all(|s| {
                    dets.iter()
                        .any(|d| &d.camera_id == zombie_cam && d.seq == *s)
                })
                .then_some(())
        },
    )?;
    let late = old_after_new(&frames.seen(), &new_epochs);
    eprintln!("zombie frames played after the new owner's first: {late:?}");

    // A second process with the survivor's member id is refused while the survivor lives.
    let mut dup = ingest::coordinated_config(
        survivor,
        &stack.brokers["local"].bootstrap,
        &stack.topics.frames,
        &stack.redis.url,
    );
    dup.coordinator.redis = stack.redis.client_config(survivor);
    let started = std::time::Instant::now();
    let (mut proc, _file) = panoptes_testkit::node::spawn(
        "dup-ingest",
        "panoptes-ingest",
        &dup,
        &[("RUST_BACKTRACE", "0")],
    )?;
    let status = wait_until("the duplicate to exit", Duration::from_secs(20), || {
        proc.try_wait().ok().flatten()
    })?;
    let log = proc.log_text();
    eprintln!("duplicate refused after {:?}: {status}", started.elapsed());
    assert!(!status.success(), "{log}");
    assert!(
        log.contains(&format!("member id \"{survivor}\""))
            && log.contains("another live process (session"),
        "{log}"
    );

    let report = stack.stop_intake_and_settle(checker, Duration::from_secs(60))?;
    let t = &report.total;
    eprintln!("checker: {t:?}");
    // Every frame of the old owner read after the new owner's first was dropped, not inferred.
    let dets = detections.seen();
    for (cam, seq) in &late {
        let statuses: Vec<&str> = dets
            .iter()
            .filter(|d| &d.camera_id == cam && d.seq == *seq)
            .map(|d| d.status)
            .collect();
        assert!(
            statuses.iter().all(|s| *s == "superseded_owner") && !statuses.is_empty(),
            "{cam}/{seq}: {statuses:?}"
        );
    }
    assert_eq!(t.owner_superseded_inferred, 0, "{t:?}");
    assert_eq!(t.owner_superseded_frames, late.len() as u64, "{t:?}");
    assert!(late.len() >= injected.len(), "{late:?}");
    assert_eq!((t.lost, t.duplicated, t.reordered), (0, 0, 0), "{t:?}");

    Ok(())
}
