//! Clocks skewed between machines (issue 10 item 9): nodes started under libfaketime with
//! their wall clocks 5 s ahead or 5 s behind (their monotonic clocks true, as on a machine
//! whose clock is off) mark no frame stale, force no handover and report sane latencies,
//! because every timestamp that crosses machines is on the cluster clock (Redis's).
//!
//! One stack: the coordinator 5 s behind; ingest `in-ahead` (+5 s) and `in-behind` (−5 s),
//! one camera each; worker `w-ahead` (+5 s) runs both cameras' partitions first, then
//! `w-behind` (−5 s) joins and `w-ahead` is drained, so every pair of ingest and worker
//! clocks runs: skews of 0 and ±10 s between capture and processing. With wall-clock stamps
//! the `in-behind` → `w-ahead` frames would be 10 s old (all stale, policy `skip` with
//! `max_age` 2 s) and the `in-ahead` → `w-behind` ones 10 s in the future (age and
//! end-to-end latency read as 0).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use panoptes_loadtest::stack::{Stack, StackCamera, StackSpec, WaitAssignments, Watching};
use panoptes_loadtest::watch::{SeenDetection, Watch};
use panoptes_testkit::process::faketime_env;
use panoptes_testkit::{get_text, wait_until};

/// The skewed nodes and their wall-clock offsets.
const SKEWS: &[(&str, &str, f64)] = &[
    ("coord-0", "-5s", -5.0),
    ("in-ahead", "+5s", 5.0),
    ("in-behind", "-5s", -5.0),
    ("w-ahead", "+5s", 5.0),
    ("w-behind", "-5s", -5.0),
];

/// Bound on latencies: far below the 10 s skews, with margin for a busy machine.
const MAX_LATENCY_MS: f32 = 4000.0;

/// Records of each camera each worker must write.
const RECORDS: usize = 10;

#[test]
fn skewed_node_clocks_mark_no_frame_stale_and_force_no_handover() -> Result<()> {
    let started = Instant::now();
    let mut spec = StackSpec::single_region(StackCamera::small_set(2, "local", 5), 2);
    spec.coordinators = 0;
    let mut stack = Stack::start(spec)?;
    for (id, offset, _) in SKEWS {
        stack.node_env.insert((*id).into(), faketime_env(offset)?);
    }
    stack.start_coordinator("coord-0")?;
    stack.start_members("local", &["in-ahead", "in-behind"], &["w-ahead"])?;
    stack.register_cameras()?;
    stack.wait_settled(Duration::from_secs(30))?;
    // The coordinator spreads the two cameras (a rebalancing move when one node took both).
    stack.wait_assignments(
        "each ingest node to run one camera",
        Duration::from_secs(20),
        |cams, _| {
            let owners: BTreeSet<&str> = cams.values().map(|r| r.owner.as_str()).collect();
            owners == BTreeSet::from(["in-ahead", "in-behind"])
                && cams.values().all(|r| r.target.is_none())
        },
    )?;
    let detections = stack.watch_detections("local")?;

    // Phase 1: w-ahead runs both partitions; phase 2: w-behind joins, w-ahead is drained.
    wait_records(&detections, "w-ahead")?;
    stack.start_worker("w-behind", "local", "default")?;
    let (code, body) = stack
        .coordinator()?
        .api("POST", "/v1/nodes/worker/w-ahead/drain", None)?;
    ensure!((200..300).contains(&code), "drain: {code} {body}");
    stack.wait_assignments(
        "w-behind to own both partitions",
        Duration::from_secs(20),
        |_, parts| parts.len() == 2 && parts.values().all(|r| r.owner == "w-behind"),
    )?;
    wait_records(&detections, "w-behind")?;

    let offsets = measured_offsets(&stack);
    let seen = detections.seen();
    let report = SkewReport::new(&seen);
    eprintln!(
        "offsets (cluster − wall, s): {offsets:?}; cameras by ingest node: {:?}; (records, stale, median end-to-end ms) by (camera, worker): {:?}; end-to-end p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; capture → arrival p50 {:.0} ms; {:.1} s in all",
        stack.cameras_by_ingest()?,
        report.pairs,
        report.e2e_ms(0.5),
        report.e2e_ms(0.99),
        report.e2e_ms(1.0),
        report.capture_to_arrival_ms(0.5),
        started.elapsed().as_secs_f64()
    );

    // Each skewed node estimated its offset to the cluster clock: minus its skew.
    for ((id, _, skew), measured) in SKEWS.iter().skip(1).zip(&offsets) {
        let m = measured.unwrap_or(f64::NAN);
        assert!((m + skew).abs() < 0.5, "{id}: offset {m} s, skew {skew} s");
    }
    // Every pair of ingest and worker clocks ran.
    for (owner, cams) in stack.cameras_by_ingest()? {
        for w in ["w-ahead", "w-behind"] {
            let n = report.pairs.get(&(cams[0].clone(), w.into())).map(|p| p.0);
            assert!(
                n.unwrap_or(0) >= RECORDS,
                "camera of {owner} on {w}: {n:?} records"
            );
        }
    }
    assert_eq!(report.stale, 0, "no frame wrongly stale");
    for w in ["w-ahead", "w-behind"] {
        let m = &stack.workers[w];
        let stale = m.metric(r#"panoptes_worker_frames_skipped_total{reason="skipped_stale"}"#);
        assert_eq!(stale, Some(0.0), "{w}: skipped_stale");
        let timeouts = m.metric(r#"panoptes_worker_handovers_total{result="timeout"}"#);
        assert_eq!(timeouts, Some(0.0), "{w}: handovers timed out");
        let future = m.metric("panoptes_worker_frames_from_future_total");
        assert_eq!(future, Some(0.0), "{w}: frames stamped in the future");
    }
    let (_, coordinator_metrics) = get_text(&format!("{}/metrics", stack.coordinator()?.http))
        .context("coordinator metrics")?;
    let forced = forced_actions(&coordinator_metrics);
    assert_eq!(forced, 0.0, "handovers forced (timeout) or leases expired");
    // Latencies: never below what the worker itself spent on the frame (a clock ahead at
    // ingest would clamp them to 0), and well below the 10 s skews (4 s: margin for a busy
    // machine; frames older than 2 s at dequeue would have been skipped).
    for d in &seen {
        let l = &d.latency;
        assert!(
            l.end_to_end_ms >= l.decode_ms + l.inference_ms && l.end_to_end_ms < MAX_LATENCY_MS,
            "{} seq {} on {}: {l:?}",
            d.camera_id,
            d.seq,
            d.worker_id
        );
    }
    // Capture times are on the cluster clock: Redis runs on this machine, whose clock
    // is true, so a record arrives here a little after its frame's capture time.
    let lag = report.capture_to_arrival_ms(1.0);
    let first = report.capture_to_arrival_ms(0.0);
    assert!(
        first >= 0.0 && lag < f64::from(MAX_LATENCY_MS),
        "capture → arrival from {first} to {lag} ms"
    );
    Ok(())
}

/// Waits until `worker` wrote [`RECORDS`] records of each camera.
fn wait_records(detections: &Watch<SeenDetection>, worker: &str) -> Result<()> {
    wait_until(
        &format!("{RECORDS} records of each camera from {worker}"),
        Duration::from_secs(30),
        || {
            let seen = detections.seen();
            let of = |cam: &str| {
                seen.iter()
                    .filter(|d| d.worker_id == worker && d.camera_id == cam)
                    .count()
            };
            (of("cam0") >= RECORDS && of("cam1") >= RECORDS).then_some(())
        },
    )
}

/// The skewed members' `clock_offset_seconds` (in [`SKEWS`] order, the coordinator left out).
fn measured_offsets(stack: &Stack) -> Vec<Option<f64>> {
    SKEWS
        .iter()
        .skip(1)
        .map(|(id, _, _)| match stack.ingest.get(*id) {
            Some(n) => n.metric("panoptes_ingest_clock_offset_seconds"),
            None => stack.workers[*id].metric("panoptes_worker_clock_offset_seconds"),
        })
        .collect()
}

/// Placement actions that a skewed clock could cause: handovers given up on
/// (`handover_timeout`) and members declared dead (`owner_dead`).
fn forced_actions(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("panoptes_coordinator_actions_total{"))
        .filter(|l| {
            l.contains(r#"reason="handover_timeout""#) || l.contains(r#"reason="owner_dead""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// What the detection records say.
struct SkewReport {
    /// Per (camera, worker): records, `skipped_stale` among them, median end-to-end (ms).
    pairs: BTreeMap<(String, String), (usize, usize, f64)>,
    /// Records with status `skipped_stale`.
    stale: usize,
    /// End-to-end latencies, sorted (ms).
    e2e: Vec<f64>,
    /// Arrival here minus capture time, sorted (ms).
    arrival: Vec<f64>,
}

impl SkewReport {
    fn new(seen: &[SeenDetection]) -> Self {
        let mut by_pair: BTreeMap<(String, String), Vec<&SeenDetection>> = BTreeMap::new();
        for d in seen {
            by_pair
                .entry((d.camera_id.clone(), d.worker_id.clone()))
                .or_default()
                .push(d);
        }
        let e2e = |ds: &[&SeenDetection]| {
            sorted(
                ds.iter()
                    .map(|d| f64::from(d.latency.end_to_end_ms))
                    .collect(),
            )
        };
        let pairs = by_pair
            .iter()
            .map(|(k, ds)| {
                let stale = ds.iter().filter(|d| d.status == "skipped_stale").count();
                (k.clone(), (ds.len(), stale, quantile(&e2e(ds), 0.5)))
            })
            .collect();
        let all: Vec<&SeenDetection> = seen.iter().collect();
        Self {
            pairs,
            stale: seen.iter().filter(|d| d.status == "skipped_stale").count(),
            e2e: e2e(&all),
            arrival: sorted(
                seen.iter()
                    .map(|d| d.arrived_ms as f64 - d.capture_time_us as f64 / 1000.0)
                    .collect(),
            ),
        }
    }

    fn e2e_ms(&self, q: f64) -> f64 {
        quantile(&self.e2e, q)
    }

    fn capture_to_arrival_ms(&self, q: f64) -> f64 {
        quantile(&self.arrival, q)
    }
}

/// `v` sorted.
fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The `q` quantile of sorted `v` (NaN when empty).
fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * q).round() as usize]
}
