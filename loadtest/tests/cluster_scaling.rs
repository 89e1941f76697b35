//! Scaling a worker group while eight cameras stream: 1 → 3 workers (partitions spread by
//! load), 3 → 2 (one leaves with SIGTERM and hands its partitions over first), and an operator
//! drain (`panoptes drain`'s API call) that empties a worker before it is stopped. Graceful
//! handovers commit before releasing, so the checker finds nothing lost and nothing
//! duplicated, not even on the development broker.

use std::time::Duration;

use anyhow::Result;
use panoptes_coordinator_client::MemberKind;
use panoptes_loadtest::stack::{Stack, StackCamera, StackSpec};
use panoptes_testkit::wait_until;

fn owned(stack: &Stack, w: &str) -> usize {
    stack
        .partitions_by_worker()
        .ok()
        .and_then(|m| m.get(w).map(Vec::len))
        .unwrap_or(0)
}

#[test]
fn one_to_three_to_two_workers_and_a_drain_lose_nothing() -> Result<()> {
    let mut spec = StackSpec::single_region(StackCamera::small_set(8, "local", 4), 8);
    spec.placement.rebalance_cooldown = Duration::from_millis(500);
    let mut stack = Stack::start(spec)?;
    stack.start_members("local", &["ingest-0"], &["w0"])?;
    stack.register_cameras()?;
    stack.wait_settled(Duration::from_secs(60))?;
    let checker = stack.checker("local")?;
    assert_eq!(owned(&stack, "w0"), 8);

    // 1 → 3: the newcomers get partitions by load over measured capacity (each ends with at
    // least two of the eight).
    stack.start_worker("w1", "local", "default")?;
    stack.start_worker("w2", "local", "default")?;
    let spread = wait_until(
        "partitions to spread over three workers",
        Duration::from_secs(60),
        || {
            let n: Vec<usize> = ["w0", "w1", "w2"]
                .iter()
                .map(|w| owned(&stack, w))
                .collect();
            (n.iter().sum::<usize>() == 8 && n.iter().all(|&k| k >= 2)).then_some(n)
        },
    );
    if spread.is_err() {
        let nodes = stack.coordinator()?.api("GET", "/v1/nodes", None)?;
        eprintln!(
            "owned: {:?}\nnodes: {}",
            stack.partitions_by_worker()?,
            nodes.1
        );
    }
    let spread = spread?;
    eprintln!("spread over three workers: {spread:?}");
    std::thread::sleep(Duration::from_secs(3));
    stack.wait_settled(Duration::from_secs(30))?;
    let status = stack.coordinator()?.api("GET", "/v1/status", None)?;
    eprintln!("status groups: {}", status.1["groups"]);
    let desired = stack
        .coordinator()?
        .metric("panoptes_coordinator_desired_replicas{group=\"default\"}");
    assert!(
        desired.is_some_and(|d| d >= 1.0),
        "desired replicas published: {desired:?}"
    );

    // 3 → 2: SIGTERM makes w2 hand its partitions over before it exits.
    let had = owned(&stack, "w2");
    assert!(
        stack.stop(MemberKind::Worker, "w2", Duration::from_secs(30))?,
        "w2 exited cleanly"
    );
    assert_eq!(
        owned(&stack, "w2"),
        0,
        "w2 had handed over its {had} partitions before exiting"
    );
    stack.wait_settled(Duration::from_secs(30))?;

    // Operator drain: w1 empties while it keeps running, then stops.
    let (code, body) = stack
        .coordinator()?
        .api("POST", "/v1/nodes/worker/w1/drain", None)?;
    assert!((200..300).contains(&code), "drain: {code} {body}");
    wait_until("w1 to be drained", Duration::from_secs(30), || {
        (owned(&stack, "w1") == 0).then_some(())
    })?;
    assert!(
        stack.workers.get_mut("w1").expect("w1").proc.is_running(),
        "drain does not stop the process"
    );
    assert!(stack.stop(MemberKind::Worker, "w1", Duration::from_secs(30))?);
    stack.wait_settled(Duration::from_secs(30))?;
    assert_eq!(owned(&stack, "w0"), 8);
    std::thread::sleep(Duration::from_secs(3));

    let report = stack.stop_intake_and_settle(checker, Duration::from_secs(60))?;
    let t = &report.total;
    eprintln!("checker: {t:?}");
    assert!(t.frames > 100, "{t:?}");
    assert_eq!((t.lost, t.duplicated, t.reordered), (0, 0, 0), "{t:?}");
    Ok(())
}
