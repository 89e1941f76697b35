//! An ingest node killed with SIGKILL: the coordinator gives its cameras to the other node,
//! which streams them within the lease expiry plus the RTSP handshake. Sequence numbers go on
//! from above anything the dead node may have published (a gap, never a reused number), and
//! the checker finds nothing lost or duplicated.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use panoptes_coordinator_client::MemberKind;
use panoptes_loadtest::stack::{WaitAssignments, Watching, busiest_ingest, two_ingest_nodes};
use panoptes_loadtest::watch::wall_ms;
use panoptes_testkit::wait_until;

#[test]
fn killed_ingest_nodes_cameras_stream_from_the_other_node() -> Result<()> {
    let mut stack = two_ingest_nodes(4)?;
    let checker = stack.checker("local")?;
    let frames = stack.watch_frames("local")?;
    std::thread::sleep(Duration::from_secs(3));

    let (victim, cams, survivor) = busiest_ingest(&stack)?;
    let max_before: BTreeMap<String, u64> = cams
        .iter()
        .map(|c| {
            (
                c.clone(),
                frames
                    .seen()
                    .iter()
                    .filter(|f| &f.camera_id == c)
                    .map(|f| f.seq)
                    .max()
                    .unwrap_or(0),
            )
        })
        .collect();
    let killed_ms = stack.kill(MemberKind::Ingest, &victim).map(|_| wall_ms())?;
    let granted_ms = stack.wait_assignments(
        "the cameras to be granted to the survivor",
        Duration::from_secs(10),
        |a, _| cams.iter().all(|c| a[c].owner == survivor),
    )?;
    let first: BTreeMap<String, u64> =
        wait_until("frames from the survivor", Duration::from_secs(20), || {
            let seen = frames.seen();
            let m: BTreeMap<String, u64> = cams
                .iter()
                .filter_map(|c| {
                    seen.iter()
                        .filter(|f| {
                            &f.camera_id == c && f.capture_time_us / 1000 > killed_ms as i64
                        })
                        .map(|f| f.arrived_ms)
                        .min()
                        .map(|t| (c.clone(), t))
                })
                .collect();
            (m.len() == cams.len()).then_some(m)
        })?;
    let handshake: Vec<u64> = first
        .values()
        .map(|t| t.saturating_sub(granted_ms))
        .collect();
    eprintln!(
        "{victim} killed; cameras {cams:?} granted to {survivor} after {} ms; first frames after {:?} ms from the kill (grant → frame {handshake:?} ms)",
        granted_ms - killed_ms,
        first.values().map(|t| t - killed_ms).collect::<Vec<_>>()
    );
    assert!(
        granted_ms - killed_ms < 2500,
        "grant within the lease expiry and a tick"
    );
    for c in &cams {
        let after: Vec<u64> = frames
            .seen()
            .iter()
            .filter(|f| &f.camera_id == c && f.capture_time_us / 1000 > killed_ms as i64)
            .map(|f| f.seq)
            .collect();
        assert!(
            after.iter().all(|s| *s > max_before[c]),
            "{c}: sequence numbers are never reused"
        );
    }
    std::thread::sleep(Duration::from_secs(2));
    let report = stack.stop_intake_and_settle(checker, Duration::from_secs(60))?;
    let t = &report.total;
    eprintln!("checker: {t:?}");
    assert_eq!((t.lost, t.duplicated, t.reordered), (0, 0, 0), "{t:?}");
    Ok(())
}
