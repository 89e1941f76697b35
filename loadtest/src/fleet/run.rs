//! A fleet run (see [`crate::fleet`]): Redis, the camera registry, the member hosts, the
//! coordinators; then the measurements, the mass failure and the pruning wait.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use panoptes_coordinator::config::{CoordinatorConfig, RegionConfig};
use panoptes_coordinator::registry::{self, CameraSpec, Limits};
use panoptes_coordinator_client::keys;
use panoptes_testkit::coordinator::config;
use panoptes_testkit::process::ChildProcess;
use panoptes_testkit::{Coordinator, RedisServer, unique_name};

use super::host::{HostSpec, SimMember};
use super::probe::{self, CameraItem};
use super::{FleetParams, FleetReport, REGION_NAMES};
use crate::bench::scaffold::RunInfo;
use crate::bench::sys;

const ROUND: &str = "panoptes_coordinator_round_seconds";
const COMMANDS: &str = "panoptes_coordinator_round_redis_commands_total";

/// The fleet's members: ingest nodes and workers spread round-robin over the regions, each
/// sized so that its region runs at about 60 % of its capacity; the victims are the last
/// workers.
fn members(p: &FleetParams) -> (Vec<SimMember>, Vec<SimMember>, Vec<SimMember>) {
    // 5 fps at 640×360: 5 load units per camera.
    let region_load = p.cameras_per_region as f64 * 5.0;
    let per = |n: usize| (n as f64 / p.regions as f64).max(1.0);
    let make = |kind: &str, prefix: &str, n: usize| -> Vec<SimMember> {
        (0..n)
            .map(|i| SimMember {
                kind: kind.into(),
                id: format!("{prefix}{i:03}"),
                region: REGION_NAMES[i % p.regions].into(),
                capacity: (region_load / per(n) / 0.6).ceil(),
            })
            .collect()
    };
    let ingest = make("ingest", "i", p.ingest);
    let mut workers = make("worker", "w", p.workers);
    let victims = workers.split_off(p.workers - p.victims());
    (ingest, workers, victims)
}

/// Registers the cameras through the registry's own apply (one partition each).
fn register(redis: &RedisServer, p: &FleetParams) -> Result<Vec<CameraItem>> {
    let regions: Vec<String> = REGION_NAMES[..p.regions]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let limits = Limits {
        frames_partitions: p.cameras() as i32,
        regions: regions.clone(),
        camera_keys: None,
    };
    let specs: Vec<CameraSpec> = (0..p.cameras())
        .map(|i| CameraSpec {
            id: format!("cam{i:05}"),
            url: format!("rtsp://10.0.{}.{}:554/stream", i / 250, i % 250),
            region: regions[i % p.regions].clone(),
            ..CameraSpec::default()
        })
        .collect();
    let mut c = redis.connection()?;
    registry::apply(&mut c, &limits, &specs, false, None).context("registering the cameras")?;
    let raw: std::collections::BTreeMap<String, String> =
        redis::cmd("HGETALL").arg(keys::CAMERAS).query(&mut c)?;
    raw.into_iter()
        .map(|(id, json)| -> Result<CameraItem> {
            let rec: panoptes_coordinator_client::CameraRecord = serde_json::from_str(&json)?;
            Ok(CameraItem {
                id,
                partition: rec.partition,
            })
        })
        .collect()
}

/// Starts a member host for `members` and waits until all registered.
fn start_host(
    p: &FleetParams,
    redis: &RedisServer,
    topic: &str,
    name: &str,
    members: Vec<SimMember>,
    dir: &Path,
) -> Result<ChildProcess> {
    let n = members.len();
    let spec = HostSpec {
        redis: redis.url.clone(),
        frames_topic: topic.into(),
        lease_ttl_ms: p.lease_ttl.as_millis() as u64,
        poll_ms: p.poll.as_millis() as u64,
        members,
    };
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string(&spec)?)?;
    let path_s = path.to_str().context("utf-8 path")?;
    let mut child = ChildProcess::spawn(
        name,
        &p.host_exe,
        &["host", "--spec", path_s],
        &[("RUST_LOG", "warn")],
    )?;
    let ready = child
        .wait_for_line("READY=", Duration::from_secs(30 + n as u64))
        .with_context(|| format!("member host {name}: {}", child.log_text()))?;
    if ready.trim() != n.to_string() {
        bail!("member host {name} started {ready} of {n} members");
    }
    Ok(child)
}

fn coordinator_config(
    p: &FleetParams,
    id: &str,
    redis: &RedisServer,
    topic: &str,
) -> CoordinatorConfig {
    let mut c = config(id, &redis.url, "127.0.0.1:9", topic, p.cameras() as i32);
    c.regions = REGION_NAMES[..p.regions]
        .iter()
        .map(|r| RegionConfig {
            name: (*r).into(),
            bootstrap_servers: "127.0.0.1:9".into(),
        })
        .collect();
    c.leader.ttl = Duration::from_millis(1500);
    set_prune(&mut c, p.prune_dead_after);
    c
}

/// Sets `placement.prune_dead_after` when asked to.
fn set_prune(c: &mut CoordinatorConfig, after: Option<Duration>) {
    if let Some(after) = after {
        c.placement.prune_dead_after = after;
    }
}

/// Polls `f` every `every` until it returns `Some` or `timeout` passes. An error (a Redis
/// probe timing out on a loaded machine) counts as "not yet" until the deadline.
fn poll<T>(
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<Option<T>> {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(Some(v)) => return Ok(Some(v)),
            Ok(None) => {}
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(e) => tracing::warn!(error = %e, "probe failed; retrying"),
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(every);
    }
}

/// What a steady-state window measured.
struct Window {
    rounds_per_s: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    commands_per_round: Option<f64>,
    leader_cpu: Option<f64>,
    redis_cpu: f64,
    redis_ops: f64,
    redis_mib: f64,
    leader_rss_mib: Option<f64>,
}

fn measure_window(p: &FleetParams, leader: &Coordinator, redis: &RedisServer) -> Result<Window> {
    let mut c = redis.connection()?;
    let scrape = || crate::bench::scaffold::metrics_text(&leader.http).context("leader metrics");
    let m0 = scrape()?;
    let i0 = probe::redis_info(&mut c)?;
    let t0 = Instant::now();
    std::thread::sleep(p.window);
    let m1 = scrape()?;
    let i1 = probe::redis_info(&mut c)?;
    let secs = t0.elapsed().as_secs_f64();
    let b = probe::bucket_delta(
        &probe::histogram_buckets(&m0, ROUND),
        &probe::histogram_buckets(&m1, ROUND),
    );
    let rounds = b.last().map_or(0.0, |l| l.1);
    let val = |t: &str, s: &str| panoptes_testkit::http::metric_value(t, s);
    let delta = |s: &str| Some(val(&m1, s)? - val(&m0, s)?);
    let cpu = |i: &str| {
        probe::info_field(i, "used_cpu_sys").unwrap_or(0.0)
            + probe::info_field(i, "used_cpu_user").unwrap_or(0.0)
    };
    let info_delta = |f: &str| {
        probe::info_field(&i1, f).unwrap_or(0.0) - probe::info_field(&i0, f).unwrap_or(0.0)
    };
    Ok(Window {
        rounds_per_s: rounds / secs,
        p50_ms: probe::histogram_quantile(&b, 0.5).map(|s| s * 1000.0),
        p99_ms: probe::histogram_quantile(&b, 0.99).map(|s| s * 1000.0),
        commands_per_round: delta(COMMANDS).filter(|_| rounds > 0.0).map(|n| n / rounds),
        leader_cpu: delta("process_cpu_seconds_total").map(|s| s / secs * 100.0),
        redis_cpu: (cpu(&i1) - cpu(&i0)) / secs * 100.0,
        redis_ops: info_delta("total_commands_processed") / secs,
        redis_mib: probe::info_field(&i1, "used_memory").unwrap_or(0.0) / 1048576.0,
        leader_rss_mib: val(&m1, "process_resident_memory_bytes").map(|b| b / 1048576.0),
    })
}

/// Runs the fleet; `log` gets progress lines.
pub fn run(p: &FleetParams, log: impl Fn(&str)) -> Result<FleetReport> {
    let run_info = RunInfo::now("");
    let redis = RedisServer::start()?;
    let topic = unique_name("frames");
    let cams = register(&redis, p)?;
    log(&format!("registered {} cameras", cams.len()));
    let dir = tempfile::tempdir()?;
    let (ingest, workers, victims) = members(p);
    let victim_ids: BTreeSet<String> = victims.iter().map(|m| m.id.clone()).collect();
    let mut live: BTreeSet<String> = ingest
        .iter()
        .chain(&workers)
        .chain(&victims)
        .map(|m| m.id.clone())
        .collect();
    let _ingest = start_host(p, &redis, &topic, "fleet-ingest", ingest, dir.path())?;
    let _workers = start_host(p, &redis, &topic, "fleet-workers", workers, dir.path())?;
    let doomed = start_host(p, &redis, &topic, "fleet-victims", victims, dir.path())?;
    log(&format!("{} members registered", live.len()));

    let started = Instant::now();
    let coords = (0..p.coordinators)
        .map(|i| {
            Coordinator::start(&coordinator_config(
                p,
                &format!("c{}", i + 1),
                &redis,
                &topic,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut c = redis.connection()?;
    let total = cams.len();
    let granted = poll(Duration::from_secs(600), Duration::from_millis(200), || {
        // A fresh connection per probe: a timed-out reply must not be read by the next one.
        let cov = probe::coverage(&mut redis.connection()?, &topic, &cams, &live)?;
        Ok((cov.cameras == total && cov.partitions == total).then_some(()))
    })?;
    if granted.is_none() {
        let cov = probe::coverage(&mut c, &topic, &cams, &live)?;
        bail!("not every item was granted after 600 s: {cov:?} of {total}");
    }
    let all_granted_s = started.elapsed().as_secs_f64();
    log(&format!(
        "all {total} cameras and partitions granted after {all_granted_s:.2} s"
    ));

    std::thread::sleep(Duration::from_secs(2));
    let leader = coords.iter().find(|c| c.is_leader()).context("no leader")?;
    let w = measure_window(p, leader, &redis)?;
    log(&format!(
        "window: round p50 {:?} ms p99 {:?} ms, {:?} commands/round",
        w.p50_ms, w.p99_ms, w.commands_per_round
    ));

    // The mass failure: SIGKILL the victims' host; their leases expire.
    let mut held: Vec<String> = Vec::new();
    for v in &victim_ids {
        let items: Vec<String> = redis::cmd("SMEMBERS")
            .arg(keys::owned(
                panoptes_coordinator_client::MemberKind::Worker,
                v,
            ))
            .query(&mut c)?;
        held.extend(items);
    }
    doomed.signal("KILL")?;
    let killed = Instant::now();
    live.retain(|id| !victim_ids.contains(id));
    let regranted = poll(Duration::from_secs(60), Duration::from_millis(20), || {
        let owners = probe::partition_owners(&mut redis.connection()?, &topic, &held)?;
        Ok(owners.values().all(|o| live.contains(o)).then_some(()))
    })?
    .map(|()| killed.elapsed().as_secs_f64());
    log(&format!(
        "{} workers killed holding {} partitions: re-granted after {regranted:?} s",
        victim_ids.len(),
        held.len()
    ));
    let pruned_s = match p.prune_wait {
        None => None,
        Some(wait) => poll(wait, Duration::from_millis(100), || {
            let set: BTreeSet<String> = redis::cmd("SMEMBERS")
                .arg(keys::members(
                    panoptes_coordinator_client::MemberKind::Worker,
                ))
                .query(&mut c)?;
            Ok(set.is_disjoint(&victim_ids).then_some(()))
        })?
        .map(|()| killed.elapsed().as_secs_f64()),
    };
    log(&format!("dead workers pruned after {pruned_s:?} s"));
    let cov = probe::coverage(&mut c, &topic, &cams, &live)?;
    if cov.cameras != total || cov.partitions != total {
        bail!("after the failure, not every item is granted to a live member: {cov:?} of {total}");
    }
    Ok(FleetReport {
        run: run_info,
        machine: sys::machine_info(),
        params: p.clone(),
        all_granted_s,
        rounds_per_s: w.rounds_per_s,
        round_p50_ms: w.p50_ms,
        round_p99_ms: w.p99_ms,
        commands_per_round: w.commands_per_round,
        leader_cpu_percent: w.leader_cpu,
        redis_cpu_percent: w.redis_cpu,
        redis_ops_per_s: w.redis_ops,
        redis_memory_mib: w.redis_mib,
        leader_rss_mib: w.leader_rss_mib,
        killed: victim_ids.len(),
        killed_items: held.len(),
        regrant_s: regranted,
        pruned_s,
    })
}
