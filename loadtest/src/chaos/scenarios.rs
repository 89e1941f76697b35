//! The scenarios.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use panoptes_coordinator_client::keys;
use panoptes_testkit::wait_until;

use super::harness::{Register, Run, cameras, spec};
use super::proxy::TcpProxy;
use super::{Scale, ScenarioReport};
use crate::stack::{Stack, StackSpec, WaitAssignments};
use crate::watch::wall_ms;

mod redis_loss;
use redis_loss::{redis_restart, redis_restart_empty};

/// Sizes of a run.
struct P {
    cameras: usize,
    workers: usize,
    fps: u32,
    /// Observed before the first fault.
    before: Duration,
    /// Observed after the last recovery.
    after: Duration,
    /// Faults repeated (kills, flaps, cuts).
    repeats: usize,
}

fn params(scale: Scale) -> P {
    match scale {
        Scale::Ci => P {
            cameras: 4,
            workers: 2,
            fps: 5,
            before: Duration::from_secs(2),
            after: Duration::from_secs(3),
            repeats: 1,
        },
        Scale::Full => P {
            cameras: 8,
            workers: 3,
            fps: 5,
            before: Duration::from_secs(10),
            after: Duration::from_secs(10),
            repeats: 3,
        },
    }
}

impl P {
    /// One region with `cameras` cameras at `fps` (see [`spec`]).
    fn spec(&self) -> StackSpec {
        spec(cameras(self.cameras, self.fps))
    }
}

/// Starts `spec` with the `ingest` nodes and `workers` workers `w0`, `w1`, … (see
/// [`Run::start`]).
fn start<'a>(
    report: &'a mut ScenarioReport,
    out: &Path,
    spec: StackSpec,
    ingest: &[&str],
    workers: usize,
    register: Option<Register<'_>>,
) -> Result<Run<'a>> {
    let ids: Vec<String> = (0..workers).map(|i| format!("w{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    Run::start(report, out, spec, ingest, &ids, register)
}

/// Records, per partition in `parts`, the recovery `partition N (victim what)`: `since` → its
/// first committed detection written by a worker other than `victim`.
fn partitions_recovered(run: &mut Run, parts: &[i32], since: u64, victim: &str, what: &str) {
    let rec = run.wait_detections(parts, since, Duration::from_secs(15), |d, p| {
        d.partition == *p && d.worker_id != victim
    });
    for (part, ms) in rec {
        run.recovery(
            format!("partition {part} ({victim} {what})"),
            ms,
            WORKER_BOUND,
        );
    }
}

/// Kills the busiest worker and records its partitions' recoveries (`partition N (victim
/// what)`); returns the victim.
fn kill_busiest_worker(run: &mut Run, what: &str) -> Result<String> {
    let (victim, parts) = run.busiest_worker()?;
    let t = run.kill_worker(&victim)?;
    partitions_recovered(run, &parts, t, &victim, what);
    Ok(victim)
}

/// Detection records the checker discarded as superseded, over every region of `report`.
fn superseded(report: &ScenarioReport) -> u64 {
    report
        .regions
        .values()
        .map(|r| r.checker.total.superseded)
        .sum()
}

/// Records the recovery `what` of camera `cam`: `since` → its first frame captured after it.
fn frames_recovered(run: &mut Run, cam: &str, since: u64, what: String, bound: Duration) {
    let cams = [cam.to_string()];
    let rec = run.wait_cameras_frames(&cams, since, Duration::from_secs(15));
    run.recovery(what, rec[cam], bound);
}

pub(super) fn run(name: &str, scale: Scale, out: &Path, report: &mut ScenarioReport) -> Result<()> {
    let p = params(scale);
    match name {
        "worker-kill" => worker_kill(&p, out, report),
        "worker-pause" => worker_pause(&p, out, report),
        "ingest-kill" => ingest_kill(&p, out, report),
        "leader-kill" => leader_kill(&p, out, report),
        "redis-restart" => redis_restart(&p, out, report),
        "redis-restart-empty" => redis_restart_empty(&p, out, report),
        "broker-down" => broker_down(&p, out, report, false),
        "broker-down-coordinator" => broker_down(&p, out, report, true),
        "camera-flap" => camera_flap(&p, out, report),
        "network" => network(&p, out, report),
        other => anyhow::bail!("unknown scenario {other}"),
    }
}

const WORKER_BOUND: Duration = Duration::from_secs(5);

fn worker_kill(p: &P, out: &Path, report: &mut ScenarioReport) -> Result<()> {
    report.description = format!(
        "kill -9 of the worker owning the most partitions ({} time(s), a replacement started \
         after each but the last); recovery = kill → the next committed detection of each of \
         its partitions written by another worker (read_committed reader), bound {} ms.",
        p.repeats,
        WORKER_BOUND.as_millis()
    );
    let mut run = start(report, out, p.spec(), &["ingest-0"], p.workers, None)?;
    let mut next = p.workers;
    for i in 0..p.repeats {
        run.hold(p.before);
        kill_busiest_worker(&mut run, "killed")?;
        if i + 1 < p.repeats {
            let id = format!("w{next}");
            next += 1;
            run.stack.start_worker(&id, "local", "default")?;
            run.mark(&format!("worker {id} started (replacement)"));
            run.stack.wait_owns(&id, Duration::from_secs(30))?;
            run.stack.wait_settled(Duration::from_secs(30))?;
        }
    }
    run.hold(p.after);
    run.finish()
}

fn worker_pause(p: &P, out: &Path, report: &mut ScenarioReport) -> Result<()> {
    report.description = format!(
        "SIGSTOP of the worker owning the most partitions until its lease expired and its \
         partitions were granted elsewhere at higher epochs, then SIGCONT; recovery = pause → \
         the next committed detection of each of its partitions by another worker, bound {} ms. \
         The resumed zombie must notice its lost lease and anything it writes for the moved \
         partitions must carry a superseded epoch.",
        WORKER_BOUND.as_millis()
    );
    let mut run = start(report, out, p.spec(), &["ingest-0"], p.workers, None)?;
    let mut zombie_stale = 0u64;
    for _ in 0..p.repeats {
        run.hold(p.before);
        let (victim, parts) = run.busiest_worker()?;
        let items: Vec<String> = parts
            .iter()
            .map(|q| keys::partition_item("local", *q))
            .collect();
        let (_, before) = run.stack.assignments()?;
        let old: BTreeMap<String, u64> =
            items.iter().map(|i| (i.clone(), before[i].epoch)).collect();
        run.stack.workers[&victim].proc.signal("STOP")?;
        run.report.culprits.insert(victim.clone());
        let t = run.mark(&format!("SIGSTOP worker {victim} (owned {parts:?})"));
        let moved = run.stack.wait_assignments(
            "the paused worker's partitions to move",
            Duration::from_secs(15),
            |_, now| {
                items.iter().all(|i| {
                    now.get(i).is_some_and(|r| {
                        r.owner != victim && !r.owner.is_empty() && r.epoch > old[i]
                    })
                })
            },
        );
        match moved {
            Ok(at) => run.note(format!(
                "{victim}'s partitions granted elsewhere {} ms after the pause",
                at - t
            )),
            Err(e) => run.fail(format!("{e}")),
        }
        partitions_recovered(&mut run, &parts, t, &victim, "paused");
        run.hold(Duration::from_secs(1));
        run.stack.workers[&victim].proc.signal("CONT")?;
        let resumed = run.mark(&format!("SIGCONT worker {victim}"));
        run.hold(Duration::from_secs(4));
        let lost = run.stack.workers[&victim]
            .metric("panoptes_worker_lease_lost_total")
            .unwrap_or(0.0);
        if lost < 1.0 {
            run.fail(format!(
                "{victim} did not count a lost lease after resuming"
            ));
        } else {
            run.note(format!(
                "{victim} counted {lost} lost lease(s) after resuming"
            ));
        }
        let (_, after) = run.stack.assignments()?;
        let zombie: Vec<_> = run
            .dets
            .seen()
            .into_iter()
            .filter(|d| {
                d.worker_id == victim && d.arrived_ms >= resumed && parts.contains(&d.partition)
            })
            .collect();
        let mut stale = 0;
        for d in &zombie {
            let item = keys::partition_item("local", d.partition);
            let current = after.get(&item).map_or(0, |r| r.epoch);
            if d.epoch < current {
                stale += 1;
            } else if d.epoch <= old[&item] {
                run.fail(format!(
                    "zombie record of {victim} for {item} at epoch {} after resuming is not superseded (current epoch {current})",
                    d.epoch
                ));
            }
        }
        run.note(format!(
            "{victim} wrote {} records for its old partitions after resuming, {stale} of them at superseded epochs (the rest at epochs granted to it again after it re-registered)",
            zombie.len()
        ));
        zombie_stale += stale;
    }
    run.hold(p.after);
    run.finish()?;
    let superseded = superseded(report);
    if superseded < zombie_stale {
        report.failures.push(format!(
            "the zombie wrote {zombie_stale} records at superseded epochs after resuming, the checker discarded only {superseded}"
        ));
    }
    Ok(())
}

const INGEST_BOUND: Duration = Duration::from_secs(5);

fn ingest_kill(p: &P, out: &Path, report: &mut ScenarioReport) -> Result<()> {
    report.description = format!(
        "two ingest nodes; kill -9 of the one with the most cameras; recovery = kill → the next \
         frame of each of its cameras on Kafka from the other node (a frame captured after the \
         kill), bound {} ms. Sequence numbers must never be reused.",
        INGEST_BOUND.as_millis()
    );
    let mut run = start(report, out, p.spec(), &["in-a", "in-b"], p.workers, None)?;
    for i in 0..p.repeats {
        run.hold(p.before);
        let by = run.stack.cameras_by_ingest()?;
        let (victim, cams) = by
            .iter()
            .filter(|(n, _)| run.stack.ingest.contains_key(*n))
            .max_by_key(|(_, c)| c.len())
            .map(|(n, c)| (n.clone(), c.clone()))
            .context("no ingest node owns a camera")?;
        let seen = run.frames.seen();
        let max_before: BTreeMap<String, u64> = cams
            .iter()
            .map(|c| {
                (
                    c.clone(),
                    seen.iter()
                        .filter(|f| &f.camera_id == c)
                        .map(|f| f.seq)
                        .max()
                        .unwrap_or(0),
                )
            })
            .collect();
        run.stack
            .kill(panoptes_coordinator_client::MemberKind::Ingest, &victim)?;
        let t = run.mark(&format!("kill -9 ingest {victim} (owned {cams:?})"));
        let rec = run.wait_cameras_frames(&cams, t, Duration::from_secs(15));
        for (c, ms) in rec {
            run.recovery(format!("camera {c} ({victim} killed)"), ms, INGEST_BOUND);
        }
        for f in run.frames.seen() {
            if let Some(m) = max_before.get(&f.camera_id)
                && f.capture_time_us / 1000 > t as i64
                && f.seq <= *m
            {
                run.fail(format!(
                    "{}: seq {} reused after the kill (had reached {m})",
                    f.camera_id, f.seq
                ));
            }
        }
        // Replace the victim for the next round.
        if i + 1 < p.repeats {
            run.stack.start_ingest(&victim, "local")?;
            run.mark(&format!("ingest {victim} started again"));
            run.stack.wait_settled(Duration::from_secs(30))?;
        }
    }
    run.hold(p.after);
    run.finish()
}

const LEADER_BOUND: Duration = Duration::from_secs(3);

fn leader_kill(p: &P, out: &Path, report: &mut ScenarioReport) -> Result<()> {
    report.description = format!(
        "two coordinators; kill -9 of the leader; recovery = kill → the other coordinator leads \
         (its `panoptes_coordinator_is_leader` gauge), bound {} ms; then placement must still \
         work: the busiest worker is killed and each of its partitions must have a committed \
         detection from another worker within {} ms.",
        LEADER_BOUND.as_millis(),
        WORKER_BOUND.as_millis()
    );
    let mut s = p.spec();
    s.coordinators = 2;
    let mut run = start(report, out, s, &["ingest-0"], p.workers.max(2), None)?;
    for _ in 0..p.repeats {
        run.hold(p.before);
        let idx = wait_until("a leader", Duration::from_secs(20), || {
            run.stack.coordinators.iter().position(|c| c.is_leader())
        })?;
        let leader = run.stack.coordinators.remove(idx);
        leader.child.signal("KILL")?;
        let id = leader.id.clone();
        let t = run.mark(&format!("kill -9 leading coordinator {id}"));
        drop(leader);
        let took = wait_until(
            "another coordinator to lead",
            Duration::from_secs(15),
            || {
                run.stack
                    .coordinators
                    .iter()
                    .find(|c| c.is_leader())
                    .map(|c| (c.id.clone(), wall_ms() - t))
            },
        );
        match took {
            Ok((new, ms)) => {
                run.recovery(
                    format!("leadership ({id} killed, {new} leads)"),
                    Some(ms),
                    LEADER_BOUND,
                );
            }
            Err(_) => run.recovery(format!("leadership ({id} killed)"), None, LEADER_BOUND),
        }
        run.hold(Duration::from_secs(1));
        let victim = kill_busiest_worker(&mut run, "killed under the new leader")?;
        // Restore the deployment for the next round.
        run.stack.start_coordinator(&id)?;
        run.mark(&format!("coordinator {id} started again (follower)"));
        let fresh = format!("{victim}-new");
        run.stack.start_worker(&fresh, "local", "default")?;
        run.mark(&format!("worker {fresh} started (replaces {victim})"));
    }
    run.hold(p.after);
    run.finish()
}

const BROKER_BOUND: Duration = Duration::from_secs(10);

/// `coordinator = false`: the broker other than broker 1 leading the most frames partitions
/// goes down and up. `coordinator = true`: broker 1, which on the development broker is the
/// workers' group coordinator (and transaction coordinator of some partitions). The workers'
/// group and transactional ids are registered with the development broker first, so that
/// their coordinators move to a live broker when theirs goes down, as on Kafka.
fn broker_down(p: &P, out: &Path, report: &mut ScenarioReport, coordinator: bool) -> Result<()> {
    let down_for = Duration::from_secs(if p.repeats > 1 { 10 } else { 5 });
    report.description = format!(
        "a 3-broker cluster; one broker goes down (connections refused, data kept; the \
         development broker does not move partition leadership, but moves the workers' group \
         and transaction coordinators off it, as Kafka would) for {} s, then comes back: \
         `broker-down` takes the broker other than broker 1 that leads the most frames \
         partitions, `broker-down-coordinator` broker 1, which the workers' consumer group \
         hashes to on the development broker. Recovery = broker up → detections of every \
         camera flowing again, bound {} ms. The report notes which cameras kept flowing \
         during each outage. A worker that gave a partition run up meanwhile (a transaction \
         call wedged or failed; its coordinator grants the partition again at a higher \
         epoch) left that transaction open, which the development broker shows: its \
         duplicates across epochs are accepted, same-epoch duplicates never.",
        down_for.as_secs(),
        BROKER_BOUND.as_millis()
    );
    let mut s = p.spec();
    s.brokers_per_region = 3;
    let mut run = start(report, out, s, &["ingest-0"], p.workers, None)?;
    for _ in 0..p.repeats {
        for phase in [usize::from(coordinator)] {
            run.hold(p.before);
            let leaders = partition_leaders(
                &run.stack.brokers["local"].bootstrap,
                &run.stack.topics.frames,
            )?;
            register_coordinators(&run, leaders.keys().copied())?;
            let mut count: BTreeMap<i32, Vec<i32>> = BTreeMap::from([(1, vec![])]);
            for (part, b) in &leaders {
                count.entry(*b).or_default().push(*part);
            }
            let (broker, led) = if phase == 0 {
                count
                    .iter()
                    .filter(|(b, _)| **b != 1)
                    .max_by_key(|(b, v)| (v.len(), -**b))
                    .map(|(b, v)| (*b, v.clone()))
                    .context("no broker other than 1")?
            } else {
                (1, count[&1].clone())
            };
            let control = run.stack.brokers["local"].control.clone();
            run.watch_abandoned_runs();
            panoptes_testkit::post_json(
                &format!("{control}/brokers/{broker}/down"),
                &serde_json::json!({}),
            )?;
            let down = run.mark(&format!(
                "broker {broker} down (leads frames partitions {led:?})"
            ));
            let coordinators = panoptes_testkit::http::get_json(&format!("{control}/coordinators"));
            run.note(format!(
                "broker {broker} down: coordinators now {}",
                coordinators["coordinators"]
            ));
            run.hold(down_for);
            let flowing: Vec<String> = {
                let seen = run.dets.seen();
                run.camera_ids()
                    .into_iter()
                    .filter(|c| {
                        seen.iter()
                            .any(|d| &d.camera_id == c && d.arrived_ms > down + 1000)
                    })
                    .collect()
            };
            run.note(format!(
                "broker {broker} down: from 1 s after the outage began, detections kept coming for {flowing:?}"
            ));
            panoptes_testkit::post_json(
                &format!("{control}/brokers/{broker}/up"),
                &serde_json::json!({}),
            )?;
            let up = run.mark(&format!("broker {broker} up"));
            let cams = run.camera_ids();
            let rec = run.wait_cameras_detections(&cams, up, Duration::from_secs(15));
            let stalled = rec.values().any(Option::is_none);
            if stalled {
                run.note_assignments();
                run.note_worker_metrics();
            }
            for (c, ms) in rec {
                run.recovery(
                    format!("camera {c} detections after broker {broker} came back"),
                    ms,
                    BROKER_BOUND,
                );
            }
            if stalled {
                break;
            }
        }
    }
    run.hold(p.after);
    run.finish()
}

/// Registers the workers' consumer group and the transactional ids of `partitions` with
/// the development broker (`POST /coordinators`), which then keeps their coordinators on
/// live brokers.
fn register_coordinators(run: &Run<'_>, partitions: impl Iterator<Item = i32>) -> Result<()> {
    let frames = &run.stack.topics.frames;
    let transaction: Vec<String> = partitions
        .map(|p| panoptes_workers::pipeline::publish::transactional_id(frames, p))
        .collect();
    panoptes_testkit::post_json(
        &format!("{}/coordinators", run.stack.brokers["local"].control),
        &serde_json::json!({ "group": [WORKER_GROUP], "transaction": transaction }),
    )
}

/// The consumer group of the stack's workers.
const WORKER_GROUP: &str = "panoptes-workers";

/// Leader broker id of each partition of `topic`.
fn partition_leaders(bootstrap: &str, topic: &str) -> Result<BTreeMap<i32, i32>> {
    use panoptes_testkit::kafka::{KafkaClientConfig, client_config};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let c: BaseConsumer = client_config(&KafkaClientConfig::plaintext(bootstrap), &[])?.create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    Ok(md
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| (p.id(), p.leader())))
        .collect())
}

const FLAP_BOUND: Duration = Duration::from_secs(7);
const OTHERS_GAP_BOUND: u64 = 4000;

fn camera_flap(p: &P, out: &Path, report: &mut ScenarioReport) -> Result<()> {
    let flaps = if p.repeats > 1 { 8 } else { 3 };
    report.description = format!(
        "the camera simulator stops cam0 (unmounted, sessions ended) for 2 s and resumes it, \
         {flaps} times, 2 s apart; recovery = resume → the next frame of cam0 on Kafka, bound {} ms \
         (the ingest node's reconnect backoff plus the RTSP handshake). The other cameras must \
         never stop: their longest gap between detection records stays under {OTHERS_GAP_BOUND} ms.",
        FLAP_BOUND.as_millis()
    );
    let mut run = start(report, out, p.spec(), &["ingest-0"], p.workers, None)?;
    run.hold(p.before);
    let cam = "cam0".to_string();
    for i in 0..flaps {
        run.stack.camsim.fault(&cam, "stop")?;
        run.mark(&format!("camera {cam} stopped ({}/{flaps})", i + 1));
        run.hold(Duration::from_secs(2));
        run.stack.camsim.fault(&cam, "resume")?;
        let t = run.mark(&format!("camera {cam} resumed"));
        let what = format!("{cam} frames after resume {}", i + 1);
        frames_recovered(&mut run, &cam, t, what, FLAP_BOUND);
        run.hold(Duration::from_secs(2));
    }
    run.hold(p.after);
    run.finish()?;
    let bad: Vec<(String, u64)> = report
        .longest_detection_gap_ms
        .iter()
        .filter(|(c, g)| **c != cam && **g > OTHERS_GAP_BOUND)
        .map(|(c, g)| (c.clone(), *g))
        .collect();
    if !bad.is_empty() {
        report.failures.push(format!(
            "cameras other than {cam} stalled while it flapped (longest detection gap, ms): {bad:?}"
        ));
    }
    Ok(())
}

const NETWORK_BOUND: Duration = Duration::from_secs(5);

/// Whether `tc ... netem` works here (in a throw-away network namespace).
pub(super) fn netem_probe() -> std::result::Result<(), String> {
    let ns = format!("panoptes-netem-probe-{}", std::process::id());
    let add = std::process::Command::new("ip")
        .args(["netns", "add", &ns])
        .output();
    match add {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(format!(
                "ip netns add: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Err(e) => return Err(format!("ip: {e}")),
    }
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", &ns, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay",
            "10ms",
        ])
        .output();
    let _ = std::process::Command::new("ip")
        .args(["netns", "del", &ns])
        .output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr).trim().to_string()),
        Err(e) => Err(format!("tc: {e}")),
    }
}

fn network(p: &P, out: &Path, report: &mut ScenarioReport) -> Result<()> {
    let delay = Duration::from_millis(if p.repeats > 1 { 200 } else { 100 });
    let cuts = if p.repeats > 1 { 12 } else { 3 };
    let every = Duration::from_secs(if p.repeats > 1 { 5 } else { 4 });
    report.description = format!(
        "every camera is reached through an in-process TCP proxy (RTSP interleaved over TCP, \
         the ingest node's default transport) that adds {} ms to each direction (a fixed \
         one-way delay, order kept, throughput not limited) for the whole run, and \
         emulates loss at the TCP level: every {} s it closes one camera's connections \
         (round robin, {cuts} cuts). Packet loss inside a connection is not emulated (TCP \
         would hide it behind retransmissions). Recovery = cut → the next frame of that camera \
         on Kafka (captured after the cut), bound {} ms.",
        delay.as_millis(),
        every.as_secs(),
        NETWORK_BOUND.as_millis()
    );
    let netem = netem_probe();
    let rtsp_hostport = |stack: &Stack| {
        stack
            .camsim
            .rtsp
            .trim_start_matches("rtsp://")
            .trim_end_matches('/')
            .to_string()
    };
    // The proxy needs the simulator's port, known only once the stack runs: start the stack
    // without registering, then the proxy, then register through it.
    let proxy_cell: std::cell::RefCell<Option<TcpProxy>> = std::cell::RefCell::new(None);
    let register = |stack: &Stack| -> Result<()> {
        let up = rtsp_hostport(stack);
        let proxy = TcpProxy::start(&up, delay)?;
        let coord = stack.coordinator()?;
        for (i, c) in stack.spec.cameras.iter().enumerate() {
            let url = stack
                .camera_url(c)
                .replacen(&up, &proxy.addr.to_string(), 1);
            coord.add_camera(&panoptes_testkit_stack::stack::registration(i, c, &url))?;
        }
        *proxy_cell.borrow_mut() = Some(proxy);
        Ok(())
    };
    let mut run = start(
        report,
        out,
        p.spec(),
        &["ingest-0"],
        p.workers,
        Some(&register),
    )?;
    let proxy = proxy_cell.borrow_mut().take().context("proxy")?;
    match &netem {
        Ok(()) => run.note("netem works on this machine; the run still uses the TCP proxy (same emulation everywhere)"),
        Err(e) => run.note(format!("kernel netem unavailable: {e}; the TCP proxy emulates delay and loss instead")),
    }
    run.mark(&format!(
        "TCP proxy on {} adds {} ms each way (since the start)",
        proxy.addr,
        delay.as_millis()
    ));
    run.hold(p.before);
    let cams = run.camera_ids();
    for i in 0..cuts {
        let cam = cams[i % cams.len()].clone();
        let n = proxy.cut(&cam);
        let t = run.mark(&format!("TCP connections of {cam} cut ({n})"));
        if n == 0 {
            run.fail(format!(
                "no open proxy connection of {cam} to cut (open: {:?})",
                proxy.open()
            ));
        }
        let what = format!("{cam} frames after cut {}", i + 1);
        frames_recovered(&mut run, &cam, t, what, NETWORK_BOUND);
        let left = every.saturating_sub(Duration::from_millis(wall_ms() - t));
        run.hold(left);
    }
    run.hold(p.after);
    let (accepted, cut, bytes) = proxy.stats();
    run.note(format!(
        "proxy: {accepted} connections accepted, {cut} cut, {} MB forwarded",
        bytes / 1_000_000
    ));
    run.finish()?;
    drop(proxy);
    Ok(())
}
