//! `deploy/compose/` run for real, from the images `deploy/images/build.sh` makes of this test
//! build's binaries: Redis (append-only file on a volume), three coordinators, two regions
//! (Docker networks `region-a`, `region-b`, each with its development broker, ingest node and
//! worker), the simulator's four cameras (from the shipped `config/dev/cameras.yaml`) and
//! Prometheus. While two checkers (one per region, in containers on the region's network)
//! read the topics, it:
//!
//! 1. kills region a's worker (`docker kill`): b's worker takes a's partitions; the worker
//!    is started again and they come home;
//! 2. cuts region a's ingest node off its network (`docker network disconnect`): its cameras
//!    move to b's ingest node; reconnected, they come home;
//! 3. rolls both workers, one by one, onto a new image tag (`:compose-next`, the same image
//!    tagged again: the procedure is what is tested, not a code change);
//! 4. cuts region b's broker off its network: b's cameras move to a's ingest node (their
//!    frames to a's Kafka); reconnected, they come home;
//! 5. checks that Prometheus scrapes every node (all targets up) and its config and rules
//!    load (`promtool check config` in its container).
//!
//! Then the intake stops and each checker must find nothing lost or reordered, and no
//! duplicate but frames of a transaction a fault cut short (region a: the killed worker's;
//! region b: its worker's when its broker vanished mid-transaction), answered again at a
//! higher epoch: the development broker shows records of aborted and open transactions
//! (`devbroker` docs; Kafka's read_committed would hide them).
//!
//! Redis runs as `deploy/redis/` sets it up (TLS only, mutual TLS, ACL users; secrets from
//! `make-secrets.sh`); the test reads it as the `ops` user. Recovery times, measured from the
//! moment each fault (or reconnect) is started, are printed as a table (and written to
//! `$CARGO_TARGET_TMPDIR/compose-recovery.md`) twice per step: until the moved items are
//! granted (assignment records read from Redis, published on a loopback port by
//! `docker-compose.test.yml`), and until each moved partition or camera has its first
//! detection on the detections topics (watched from the host: `compose/recovery.rs`).
//! Docker and docker-compose are required: without them the test fails.
//! Every container, network and volume goes with the project (`down -v`), however it ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use panoptes_checker::Report;
use panoptes_coordinator_client::{AssignRecord, RedisLink, keys};
use panoptes_loadtest::watch::wall_ms;
use panoptes_runtime::config::RedisClientConfig;
use panoptes_runtime::tls::TlsFiles;
use serde::Deserialize;

mod common;
#[path = "compose/recovery.rs"]
mod recovery;

use common::images::{deploy, docker, require_docker, run_in};
use recovery::{Detections, Moved, Span};

/// The images' tag for this test, and the tag the workers are rolled onto.
const TAG: &str = "compose-test";
const NEXT: &str = "compose-next";
/// Regions of `docker-compose.yml` with their ingest node and worker.
const REGIONS: [(&str, &str, &str); 2] =
    [("a", "ingest-1", "worker-1"), ("b", "ingest-2", "worker-2")];
/// Frames topic (the nodes' default, as in the shipped configs).
const FRAMES: &str = "panoptes.frames";

/// One camera of the shipped `cameras.yaml`.
#[derive(Debug, Clone, Deserialize)]
struct Camera {
    id: String,
    region: String,
    partition: i32,
}

#[derive(Deserialize)]
struct CamerasFile {
    cameras: Vec<Camera>,
}

/// Assignment records: cameras by id, partitions by item (`<cluster>:<p>`).
type Records = BTreeMap<String, AssignRecord>;

/// A compose project of this test; `down -v` (and the checkers removed) when dropped.
struct Deployment {
    project: String,
    env: Vec<(String, String)>,
    cameras: Vec<Camera>,
    checkers: Vec<String>,
    redis: Option<redis::Client>,
    /// Watchers of the regions' detections topics (started once the deployment settled).
    detections: Option<Detections>,
    /// `make-secrets.sh`'s folder.
    secrets: PathBuf,
    /// Each region's network prefix (first three octets; `docker-compose.test.yml`).
    nets: BTreeMap<String, String>,
    /// Where the checkers write their reports (mounted at `/out`).
    out_dir: PathBuf,
    _dirs: Vec<tempfile::TempDir>,
}

impl Deployment {
    /// `docker-compose` on the project with `extra` environment; fails with its output.
    fn compose_with(&self, extra: &[(String, String)], args: &[&str]) -> Result<String> {
        let mut full = vec![
            "-p",
            &self.project,
            "-f",
            "docker-compose.yml",
            "-f",
            "docker-compose.test.yml",
            "--profile",
            "dev",
        ];
        full.extend(args);
        let env: Vec<(String, String)> = self.env.iter().chain(extra).cloned().collect();
        let (ok, out) = run_in(
            Path::new("docker-compose"),
            &full,
            &deploy().join("compose"),
            &env,
        )
        .context("docker-compose (scripts/setup.sh installs it)")?;
        ensure!(ok, "docker-compose {}:\n{out}", args.join(" "));
        Ok(out)
    }

    fn compose(&self, args: &[&str]) -> Result<String> {
        self.compose_with(&[], args)
    }

    /// The container id of `service`.
    fn container(&self, service: &str) -> Result<String> {
        let out = self.compose(&["ps", "-q", service])?;
        let id = out.lines().last().unwrap_or_default().trim();
        ensure!(!id.is_empty(), "no container for {service}");
        Ok(id.to_string())
    }

    /// The Docker network of `region` (the same name with compose v1 and v2).
    fn network(&self, region: &str) -> String {
        format!("{}_region-{region}", self.project)
    }

    /// The host address a service's port is published on.
    fn published(&self, service: &str, port: u16) -> Result<String> {
        let out = self.compose(&["port", service, &port.to_string()])?;
        Ok(out.trim().to_string())
    }

    fn docker_ok(&self, args: &[&str]) -> Result<String> {
        let (ok, out) = docker(args)?;
        ensure!(ok, "docker {}:\n{out}", args.join(" "));
        Ok(out)
    }

    /// The camera and partition records of the shipped cameras.
    fn assignments(&self) -> Result<(Records, Records)> {
        let mut c = self.redis.as_ref().context("redis")?.get_connection()?;
        let mut cams = Records::new();
        let mut parts = Records::new();
        for cam in &self.cameras {
            let h: BTreeMap<String, String> = redis::cmd("HGETALL")
                .arg(keys::camera_assign(&cam.id))
                .query(&mut c)?;
            if !h.is_empty() {
                cams.insert(cam.id.clone(), AssignRecord::from_fields(&h)?);
            }
            for (r, _, _) in REGIONS {
                let h: BTreeMap<String, String> = redis::cmd("HGETALL")
                    .arg(keys::partition_assign(r, FRAMES, cam.partition))
                    .query(&mut c)?;
                if !h.is_empty() {
                    parts.insert(
                        keys::partition_item(r, cam.partition),
                        AssignRecord::from_fields(&h)?,
                    );
                }
            }
        }
        Ok((cams, parts))
    }

    /// Waits (at most `timeout`) until `done(cameras, partitions)`; returns the time since
    /// `since`.
    fn wait(
        &self,
        what: &str,
        since: Instant,
        timeout: Duration,
        mut done: impl FnMut(&Records, &Records) -> bool,
    ) -> Result<Duration> {
        panoptes_testkit::wait_until(what, timeout, || {
            let (c, p) = self.assignments().ok()?;
            done(&c, &p).then(|| since.elapsed())
        })
    }

    /// The first detection of every item `moved`, after the step began at `since_ms`.
    fn first_detections(&self, since_ms: u64, moved: &Moved<'_>) -> Result<Span> {
        self.detections
            .as_ref()
            .context("detections not watched")?
            .first_after(since_ms, moved, Duration::from_secs(45))
    }

    /// Region `region`'s frames partitions with their epochs now (before a step).
    fn partition_epochs(&self, region: &str) -> Result<BTreeMap<i32, u64>> {
        let parts = self.assignments()?.1;
        self.region_cameras(region)
            .iter()
            .map(|c| {
                let item = keys::partition_item(region, c.partition);
                let rec = parts
                    .get(&item)
                    .with_context(|| format!("no record for {item}"))?;
                Ok((c.partition, rec.epoch))
            })
            .collect()
    }

    /// The address region `region`'s development broker advertises (and the host reaches).
    fn broker_ip(&self, region: &str) -> Result<String> {
        let net = self.nets.get(region).context("region")?;
        Ok(format!("{net}.10"))
    }

    /// Every camera streamed by its region's ingest node into its region's Kafka, every
    /// partition owned by its region's worker, no handover pending.
    fn home(&self, c: &Records, p: &Records) -> bool {
        self.cameras.iter().all(|cam| {
            let (ingest, worker) = homes(&cam.region);
            let item = keys::partition_item(&cam.region, cam.partition);
            c.get(&cam.id).is_some_and(|a| {
                a.owner == ingest && a.target.is_none() && a.cluster.as_deref() == Some(&cam.region)
            }) && p
                .get(&item)
                .is_some_and(|a| a.owner == worker && a.target.is_none())
        })
    }

    fn wait_home(&self, what: &str, since: Instant, timeout: Duration) -> Result<Duration> {
        self.wait(what, since, timeout, |c, p| self.home(c, p))
    }

    fn region_cameras(&self, region: &str) -> Vec<Camera> {
        self.cameras
            .iter()
            .filter(|c| c.region == region)
            .cloned()
            .collect()
    }

    /// Logs of every service (for a failure).
    fn dump_logs(&self) {
        if let Ok(out) = self.compose(&["logs", "--no-color", "--tail", "60"]) {
            eprintln!("---- compose logs (last 60 lines per service) ----\n{out}");
        }
        for c in &self.checkers {
            if let Ok((_, out)) = docker(&["logs", "--tail", "30", c]) {
                eprintln!("---- {c} ----\n{out}");
            }
        }
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        for c in &self.checkers {
            let _ = docker(&["rm", "-f", "-v", c]);
        }
        if let Err(e) = self.compose(&["down", "-v", "--remove-orphans", "-t", "3"]) {
            eprintln!("compose down failed: {e:#}");
        }
    }
}

/// Region `r`'s ingest node and worker.
fn homes(region: &str) -> (&'static str, &'static str) {
    REGIONS
        .iter()
        .find(|(r, _, _)| *r == region)
        .map(|(_, i, w)| (*i, *w))
        .unwrap_or(("?", "?"))
}

/// A folder the containers' user 10001 can read (and, `writable`, write).
fn shared_dir(writable: bool) -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir()?;
    let mode = if writable { 0o777 } else { 0o755 };
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode))?;
    Ok(dir)
}

/// Removes the containers and networks of earlier runs whose test process is gone: a run
/// killed by the harness's timeout (SIGKILL) never reaches `Deployment::drop`, and its stack
/// would keep running, load the machine and hold its subnets.
fn reap_stale_projects() {
    const PREFIX: &str = "panoptescompose";
    let alive = |name: &str| {
        let digits: String = name[PREFIX.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.is_empty() || Path::new("/proc").join(&digits).exists()
    };
    let names = |args: &[&str]| -> Vec<String> {
        docker(args)
            .map(|(_, out)| out.lines().map(str::trim).map(String::from).collect())
            .unwrap_or_default()
    };
    let stale = |n: &String| n.starts_with(PREFIX) && !alive(n);
    for c in names(&["ps", "-a", "--format", "{{.Names}}"])
        .iter()
        .filter(|n| stale(n))
    {
        eprintln!("removing {c}, left by a run that was killed");
        let _ = docker(&["rm", "-f", "-v", c]);
    }
    for n in names(&["network", "ls", "--format", "{{.Name}}"])
        .iter()
        .filter(|n| stale(n))
    {
        let _ = docker(&["network", "rm", n]);
    }
}

/// Secrets (`make-secrets.sh`), models (`panoptes-models`), the checkers' output folder, and
/// the project's environment.
fn prepare() -> Result<Deployment> {
    reap_stale_projects();
    let secrets = tempfile::tempdir()?;
    let (ok, out) = run_in(
        &deploy().join("compose/make-secrets.sh"),
        &[],
        &deploy(),
        &[("PANOPTES_SECRETS".into(), path_str(secrets.path())?)],
    )?;
    ensure!(ok, "make-secrets.sh: {out}");
    let models = shared_dir(false)?;
    let out = std::process::Command::new(panoptes_testkit::bin_path("panoptes-models"))
        .args(["--only", "reference", "--out"])
        .arg(models.path())
        .output()?;
    ensure!(out.status.success(), "panoptes-models: {out:?}");
    let output = shared_dir(true)?;
    // Fixed subnets (a broker's address must survive its reconnect), outside Docker's default
    // pools, different per run.
    let n = std::process::id() % 250 + 1;
    let nets: BTreeMap<String, String> = [
        ("a".to_string(), format!("10.213.{n}")),
        ("b".to_string(), format!("10.214.{n}")),
    ]
    .into();
    let file: CamerasFile = serde_yaml::from_str(&std::fs::read_to_string(
        deploy().join("compose/config/dev/cameras.yaml"),
    )?)?;
    let env = vec![
        ("PANOPTES_TAG".to_string(), TAG.to_string()),
        ("PANOPTES_SECRETS".into(), path_str(secrets.path())?),
        ("PANOPTES_MODELS".into(), path_str(models.path())?),
        // a free port: runs side by side do not collide
        ("PANOPTES_PROMETHEUS_PORT".into(), "0".into()),
        ("PANOPTES_TEST_NET_A".into(), nets["a"].clone()),
        ("PANOPTES_TEST_NET_B".into(), nets["b"].clone()),
    ];
    Ok(Deployment {
        // docker-compose 1.29 keeps only [a-z0-9] of a project name
        project: format!("panoptescompose{}", std::process::id()),
        env,
        cameras: file.cameras,
        checkers: Vec::new(),
        redis: None,
        detections: None,
        secrets: secrets.path().to_path_buf(),
        nets,
        out_dir: output.path().to_path_buf(),
        _dirs: vec![secrets, models, output],
    })
}

fn path_str(p: &Path) -> Result<String> {
    Ok(p.to_str().context("non-UTF-8 path")?.to_string())
}

/// Starts region `r`'s checker on its network, writing `/out/<r>.json`.
fn start_checker(d: &mut Deployment, region: &str) -> Result<()> {
    let name = format!("{}-check-{region}", d.project);
    let volume = format!("{}:/out", path_str(&d.out_dir)?);
    let image = format!("panoptes/camsim:{TAG}");
    let bootstrap = format!("broker-{region}:19092");
    let json = format!("/out/{region}.json");
    let net = d.network(region);
    d.checkers.push(name.clone());
    d.docker_ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        &net,
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-v",
        &volume,
        "--entrypoint",
        "/usr/local/bin/panoptes-check",
        &image,
        "--bootstrap",
        &bootstrap,
        "--json",
        &json,
        "--drain",
        "20s",
        "--kafka",
        "reconnect.backoff.max.ms=500",
    ])?;
    Ok(())
}

/// Stops region `r`'s checker (SIGINT: it drains, then writes its report) and reads it.
fn finish_checker(d: &Deployment, region: &str) -> Result<Report> {
    let name = format!("{}-check-{region}", d.project);
    d.docker_ok(&["kill", "--signal", "INT", &name])?;
    let code = d.docker_ok(&["wait", &name])?;
    let (_, logs) = docker(&["logs", "--tail", "20", &name])?;
    ensure!(
        code.trim() == "0",
        "checker {region} exited {code}:\n{logs}"
    );
    let path = d.out_dir.join(format!("{region}.json"));
    let report: Report = serde_json::from_slice(&std::fs::read(&path)?)?;
    Ok(report)
}

#[test]
fn compose_deployment_survives_kills_cuts_upgrades_and_a_lost_region() -> Result<()> {
    let started = Instant::now();
    require_docker()?;
    let (ok, out) = run_in(Path::new("docker-compose"), &["version"], &deploy(), &[])
        .context("docker-compose missing: scripts/setup.sh installs it")?;
    ensure!(ok, "docker-compose version: {out}");
    let built = common::images::build(TAG)?;
    docker(&[
        "tag",
        &format!("panoptes/worker:{TAG}"),
        &format!("panoptes/worker:{NEXT}"),
    ])?;
    let mut d = prepare()?;
    let result = scenario(&mut d, built);
    if result.is_err() {
        d.dump_logs();
    }
    drop(d);
    eprintln!("whole test: {:.0?}", started.elapsed());
    result
}

/// One measured step: until granted (Redis) and, for fault steps, until each moved item's
/// first detection (fastest–slowest).
struct Step {
    what: String,
    granted: Duration,
    detected: Option<Span>,
}

/// Recovery times, in the order measured.
type Times = Vec<Step>;

fn push(times: &mut Times, what: impl Into<String>, granted: Duration, detected: Option<Span>) {
    times.push(Step {
        what: what.into(),
        granted,
        detected,
    });
}

/// The steps as a Markdown table.
fn table(times: &Times) -> String {
    let mut table = String::from(
        "| step | granted (Redis) | first detection of each moved item (fastest–slowest) |\n\
         | --- | --- | --- |\n",
    );
    for s in times {
        let detected = s
            .detected
            .map_or_else(|| "–".to_string(), |d| d.to_string());
        table.push_str(&format!(
            "| {} | {:.1} s | {detected} |\n",
            s.what,
            s.granted.as_secs_f64()
        ));
    }
    table
}

/// The deployment's Redis from the host: TLS, as the `ops` user (the server's certificate,
/// which is also a client certificate, for mutual TLS).
fn open_redis(d: &Deployment) -> Result<redis::Client> {
    let addr = d.published("redis", 6380)?;
    let file = |name: &str| Some(d.secrets.join(name));
    let cfg = RedisClientConfig {
        redis_url: format!("rediss://{addr}/0"),
        redis_tls: TlsFiles {
            ca_file: file("redis-ca.crt"),
            cert_file: file("redis-server.crt"),
            key_file: file("redis-server.key"),
        },
        redis_username: Some("ops".into()),
        redis_password_file: file("redis-ops"),
    };
    let link = RedisLink::open(&cfg).context("Redis link")?;
    Ok(link.client().clone())
}

fn scenario(d: &mut Deployment, built: Duration) -> Result<()> {
    let mut times: Times = Vec::new();
    push(
        &mut times,
        "images built (build.sh, warm layers)",
        built,
        None,
    );
    let t = Instant::now();
    d.compose(&["up", "-d"])?;
    d.redis = Some(open_redis(d)?);
    for (r, _, _) in REGIONS {
        start_checker(d, r)?;
    }
    let settled = d.wait_home("the deployment to settle", t, Duration::from_secs(90))?;
    push(
        &mut times,
        "up -d → every camera and partition home",
        settled,
        None,
    );
    let regions: Vec<(String, String)> = REGIONS
        .iter()
        .map(|(r, _, _)| Ok((r.to_string(), format!("{}:19092", d.broker_ip(r)?))))
        .collect::<Result<_>>()?;
    d.detections = Some(Detections::start(&regions)?);
    std::thread::sleep(Duration::from_secs(2));

    kill_a_worker(d, &mut times)?;
    cut_an_ingest_node(d, &mut times)?;
    rolling_upgrade(d, &mut times)?;
    cut_a_regions_broker(d, &mut times)?;
    prometheus_scrapes_every_node(d)?;

    // Intake stops (killed: what reached Kafka is what the checkers account for); the
    // workers answer what is in Kafka.
    d.compose(&["kill", "ingest-1", "ingest-2"])?;
    std::thread::sleep(Duration::from_secs(6));
    let table = table(&times);
    eprintln!("\n{table}");
    let report = Path::new(env!("CARGO_TARGET_TMPDIR")).join("compose-recovery.md");
    std::fs::write(&report, &table)?;
    eprintln!("(also in {})", report.display());
    for (r, _, worker) in REGIONS {
        let report = finish_checker(d, r)?;
        let t = &report.total;
        eprintln!("region {r}: {}", report.totals_markdown().trim());
        ensure!(t.frames > 0, "region {r}: no frames: {t:?}");
        ensure!(
            t.lost == 0 && report.malformed_lost == 0,
            "region {r}: lost: {t:?}"
        );
        ensure!(t.reordered == 0, "region {r}: reordered: {t:?}");
        // Duplicates only from a transaction cut short by a fault in the region, answered
        // again at a higher epoch after the takeover: worker-1's when it was killed (region
        // a), worker-2's when region b's broker was cut mid-transaction. The development
        // broker shows records of aborted and open transactions (no read_committed), Kafka
        // would not; a graceful handover (the upgrade, the returns home) must add none.
        ensure!(
            t.duplicated == t.duplicated_across_epochs_total()
                && t.duplicated_across_epochs.keys().all(|w| w == worker),
            "region {r}: duplicates beyond {worker}'s interrupted transaction: {t:?}"
        );
    }
    Ok(())
}

/// 1. `docker kill` region a's worker; b's worker takes a's partitions; started again, they
///    come home.
fn kill_a_worker(d: &Deployment, times: &mut Times) -> Result<()> {
    let victim = d.container("worker-1")?;
    let a = d.region_cameras("a");
    let epochs = d.partition_epochs("a")?;
    let (t, t_ms) = (Instant::now(), wall_ms());
    d.docker_ok(&["kill", &victim])?;
    let granted = d.wait(
        "a's partitions granted to worker-2",
        t,
        Duration::from_secs(20),
        |_, p| {
            a.iter().all(|c| {
                p.get(&keys::partition_item("a", c.partition))
                    .is_some_and(|r| r.owner == "worker-2")
            })
        },
    )?;
    let moved = Moved::Partitions {
        region: "a",
        owner: "worker-2",
        epochs,
    };
    let detected = d.first_detections(t_ms, &moved)?;
    push(
        times,
        "worker-1 killed → a's partitions on worker-2",
        granted,
        Some(detected),
    );
    let epochs = d.partition_epochs("a")?;
    let (t, t_ms) = (Instant::now(), wall_ms());
    d.docker_ok(&["start", &victim])?;
    let granted = d.wait_home(
        "a's partitions back on worker-1",
        t,
        Duration::from_secs(60),
    )?;
    let moved = Moved::Partitions {
        region: "a",
        owner: "worker-1",
        epochs,
    };
    let detected = d.first_detections(t_ms, &moved)?;
    push(
        times,
        "worker-1 started again → everything home (model load included)",
        granted,
        Some(detected),
    );
    Ok(())
}

/// 2. Region a's ingest node cut off its network; its cameras go to ingest-2; reconnected,
///    they come home.
fn cut_an_ingest_node(d: &Deployment, times: &mut Times) -> Result<()> {
    cut_off_and_reconnect(
        d,
        times,
        Cut {
            container: "ingest-1",
            region: "a",
            taken_by: "ingest-2",
            moved_to: "b",
            within: Duration::from_secs(20),
            moved: "a's cameras on ingest-2",
            ip: None,
        },
    )
}

/// A container cut off its region's network: the region's cameras are granted to `taken_by`
/// streaming into region `moved_to` within `within`; reconnected (at `ip` when set), they
/// come home.
struct Cut {
    container: &'static str,
    region: &'static str,
    taken_by: &'static str,
    moved_to: &'static str,
    within: Duration,
    moved: &'static str,
    ip: Option<String>,
}

fn cut_off_and_reconnect(d: &Deployment, times: &mut Times, cut: Cut) -> Result<()> {
    let node = d.container(cut.container)?;
    let net = d.network(cut.region);
    let cams = d.region_cameras(cut.region);
    let ids: Vec<String> = cams.iter().map(|c| c.id.clone()).collect();
    let (t, t_ms) = (Instant::now(), wall_ms());
    d.docker_ok(&["network", "disconnect", &net, &node])?;
    let granted = d.wait(cut.moved, t, cut.within, |c, _| {
        cams.iter().all(|cam| {
            c.get(&cam.id).is_some_and(|r| {
                r.owner == cut.taken_by && r.cluster.as_deref() == Some(cut.moved_to)
            })
        })
    })?;
    let moved = Moved::Cameras {
        into: cut.moved_to,
        cameras: ids.clone(),
    };
    let detected = d.first_detections(t_ms, &moved)?;
    push(
        times,
        format!("{} disconnected → {}", cut.container, cut.moved),
        granted,
        Some(detected),
    );
    std::thread::sleep(Duration::from_secs(2));
    let (t, t_ms) = (Instant::now(), wall_ms());
    let mut connect = vec!["network", "connect", "--alias", cut.container];
    if let Some(ip) = &cut.ip {
        connect.extend(["--ip", ip.as_str()]);
    }
    connect.extend([net.as_str(), node.as_str()]);
    d.docker_ok(&connect)?;
    let granted = d.wait_home(
        &format!("{}'s cameras back home", cut.region),
        t,
        Duration::from_secs(45),
    )?;
    let moved = Moved::Cameras {
        into: cut.region,
        cameras: ids,
    };
    let detected = d.first_detections(t_ms, &moved)?;
    push(
        times,
        format!(
            "{} reconnected → {}'s cameras home",
            cut.container, cut.region
        ),
        granted,
        Some(detected),
    );
    Ok(())
}

/// 3. Each worker in turn recreated from the `:compose-next` tag (SIGTERM: it drains first).
fn rolling_upgrade(d: &Deployment, times: &mut Times) -> Result<()> {
    let next = [("PANOPTES_TAG".to_string(), NEXT.to_string())];
    for (region, _, worker) in REGIONS {
        let before = d.partition_epochs(region)?;
        let (t, t_ms) = (Instant::now(), wall_ms());
        d.compose_with(&next, &["up", "-d", "--no-deps", worker])?;
        let recreated = t.elapsed();
        let id = d.container(worker)?;
        let image = d.docker_ok(&["inspect", "--format", "{{.Config.Image}}", &id])?;
        ensure!(
            image.trim() == format!("panoptes/worker:{NEXT}"),
            "{worker} runs {image}"
        );
        let granted = d.wait_home(
            &format!("{worker}'s partitions home after its upgrade"),
            t,
            Duration::from_secs(60),
        )?;
        // handed over to the other worker while the old container drained, then back to the
        // new one: two grants at least
        let after = d.partition_epochs(region)?;
        for (p, b) in &before {
            let a = after.get(p).copied().unwrap_or_default();
            ensure!(
                a >= b + 2,
                "{region}:{p}: epoch {b} → {a}: not handed over and back"
            );
        }
        // the new container's first detections: above the epoch of the handover away
        let epochs = before.iter().map(|(p, e)| (*p, e + 1)).collect();
        let moved = Moved::Partitions {
            region,
            owner: worker,
            epochs,
        };
        let detected = d.first_detections(t_ms, &moved)?;
        push(
            times,
            format!(
                "{worker} upgraded (recreate {:.1} s) → its partitions home",
                recreated.as_secs_f64()
            ),
            granted,
            Some(detected),
        );
    }
    Ok(())
}

/// 4. Region b's broker cut off its network: b's cameras move to ingest-1 (region a's Kafka);
///    reconnected (at its fixed address), they come home.
fn cut_a_regions_broker(d: &Deployment, times: &mut Times) -> Result<()> {
    cut_off_and_reconnect(
        d,
        times,
        Cut {
            container: "broker-b",
            region: "b",
            taken_by: "ingest-1",
            moved_to: "a",
            within: Duration::from_secs(30),
            moved: "b's cameras streaming into region a",
            ip: Some(d.broker_ip("b")?),
        },
    )
}

/// 5. Every node's target up in Prometheus; its config and the project's rules load.
fn prometheus_scrapes_every_node(d: &Deployment) -> Result<()> {
    let prom = d.container("prometheus")?;
    d.docker_ok(&[
        "exec",
        &prom,
        "promtool",
        "check",
        "config",
        "/etc/prometheus/prometheus.yml",
    ])?;
    let addr = d.published("prometheus", 9090)?;
    let url = format!("http://{addr}/api/v1/targets");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?;
    let mut last = String::new();
    let up = panoptes_testkit::wait_until("every target up", Duration::from_secs(40), || {
        let v: serde_json::Value = client.get(&url).send().ok()?.json().ok()?;
        let targets = v["data"]["activeTargets"].as_array()?;
        let health: Vec<String> = targets
            .iter()
            .map(|t| format!("{}={}", t["labels"]["instance"], t["health"]))
            .collect();
        last = health.join(", ");
        (targets.len() >= 8 && targets.iter().all(|t| t["health"] == "up")).then_some(targets.len())
    });
    if up.is_err() {
        bail!("Prometheus targets not all up: {last}");
    }
    eprintln!("prometheus: {} targets up", up?);
    Ok(())
}
