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
//! (`devbroker` docs; Kafka's read_committed would hide them). Recovery times (assignment records
//! read from Redis, published on a loopback port by `docker-compose.test.yml`) are printed as
//! a table. Docker and docker-compose are required: without them the test fails.
//! Every container, network and volume goes with the project (`down -v`), however it ends.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use panoptes_checker::Report;
use panoptes_coordinator_client::{AssignRecord, keys};
use serde::Deserialize;

mod common;

use common::images::{deploy, docker, require_docker, run_in};

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

    /// Waits (at most `timeout`) until `done(cameras, partitions)`; returns how long it took.
    fn wait(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Records, &Records) -> bool,
    ) -> Result<Duration> {
        let start = Instant::now();
        panoptes_testkit::wait_until(what, timeout, || {
            let (c, p) = self.assignments().ok()?;
            done(&c, &p).then(|| start.elapsed())
        })
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

    fn wait_home(&self, what: &str, timeout: Duration) -> Result<Duration> {
        self.wait(what, timeout, |c, p| self.home(c, p))
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

/// Secrets (`make-secrets.sh`), models (`panoptes-models`), the checkers' output folder, and
/// the project's environment.
fn prepare() -> Result<Deployment> {
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
    let file: CamerasFile = serde_yaml::from_str(&std::fs::read_to_string(
        deploy().join("compose/config/dev/cameras.yaml"),
    )?)?;
    let env = vec![
        ("PANOPTES_TAG".to_string(), TAG.to_string()),
        ("PANOPTES_SECRETS".into(), path_str(secrets.path())?),
        ("PANOPTES_MODELS".into(), path_str(models.path())?),
        // a free port: runs side by side do not collide
        ("PANOPTES_PROMETHEUS_PORT".into(), "0".into()),
    ];
    Ok(Deployment {
        // docker-compose 1.29 keeps only [a-z0-9] of a project name
        project: format!("panoptescompose{}", std::process::id()),
        env,
        cameras: file.cameras,
        checkers: Vec::new(),
        redis: None,
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

/// Recovery times, in the order measured.
type Times = Vec<(String, Duration)>;

fn scenario(d: &mut Deployment, built: Duration) -> Result<()> {
    let mut times: Times = vec![("images built (build.sh, warm layers)".into(), built)];
    let t = Instant::now();
    d.compose(&["up", "-d"])?;
    let redis = d.published("redis", 6379)?;
    d.redis = Some(redis::Client::open(format!("redis://{redis}/0"))?);
    for (r, _, _) in REGIONS {
        start_checker(d, r)?;
    }
    let settled = d.wait_home("the deployment to settle", Duration::from_secs(90))?;
    times.push((
        "up -d → every camera and partition home".into(),
        t.elapsed(),
    ));
    eprintln!("settled {settled:.1?} after the first assignment poll");
    std::thread::sleep(Duration::from_secs(3));

    kill_a_worker(d, &mut times)?;
    cut_an_ingest_node(d, &mut times)?;
    rolling_upgrade(d, &mut times)?;
    cut_a_regions_broker(d, &mut times)?;
    prometheus_scrapes_every_node(d)?;

    // Intake stops (killed: what reached Kafka is what the checkers account for); the
    // workers answer what is in Kafka.
    d.compose(&["kill", "ingest-1", "ingest-2"])?;
    std::thread::sleep(Duration::from_secs(6));
    let mut table = String::from("| step | time |\n| --- | --- |\n");
    for (what, took) in &times {
        table.push_str(&format!("| {what} | {:.1} s |\n", took.as_secs_f64()));
    }
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
    d.docker_ok(&["kill", &victim])?;
    let took = d.wait(
        "a's partitions granted to worker-2",
        Duration::from_secs(20),
        |_, p| {
            a.iter().all(|c| {
                p.get(&keys::partition_item("a", c.partition))
                    .is_some_and(|r| r.owner == "worker-2")
            })
        },
    )?;
    times.push((
        "worker-1 killed → a's partitions granted to worker-2".into(),
        took,
    ));
    let t = Instant::now();
    d.docker_ok(&["start", &victim])?;
    d.wait_home("a's partitions back on worker-1", Duration::from_secs(60))?;
    times.push((
        "worker-1 started again → everything home (model load included)".into(),
        t.elapsed(),
    ));
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
            moved: "a's cameras granted to ingest-2",
        },
    )
}

/// A container cut off its region's network: the region's cameras are granted to `taken_by`
/// streaming into region `moved_to` within `within`; reconnected, they come home.
struct Cut {
    container: &'static str,
    region: &'static str,
    taken_by: &'static str,
    moved_to: &'static str,
    within: Duration,
    moved: &'static str,
}

fn cut_off_and_reconnect(d: &Deployment, times: &mut Times, cut: Cut) -> Result<()> {
    let node = d.container(cut.container)?;
    let net = d.network(cut.region);
    let cams = d.region_cameras(cut.region);
    d.docker_ok(&["network", "disconnect", &net, &node])?;
    let took = d.wait(cut.moved, cut.within, |c, _| {
        cams.iter().all(|cam| {
            c.get(&cam.id).is_some_and(|r| {
                r.owner == cut.taken_by && r.cluster.as_deref() == Some(cut.moved_to)
            })
        })
    })?;
    times.push((
        format!("{} disconnected → {}", cut.container, cut.moved),
        took,
    ));
    std::thread::sleep(Duration::from_secs(3));
    let t = Instant::now();
    d.docker_ok(&["network", "connect", "--alias", cut.container, &net, &node])?;
    d.wait_home(
        &format!("{}'s cameras back home", cut.region),
        Duration::from_secs(45),
    )?;
    times.push((
        format!(
            "{} reconnected → {}'s cameras home",
            cut.container, cut.region
        ),
        t.elapsed(),
    ));
    Ok(())
}

/// 3. Each worker in turn recreated from the `:compose-next` tag (SIGTERM: it drains first).
fn rolling_upgrade(d: &Deployment, times: &mut Times) -> Result<()> {
    let next = [("PANOPTES_TAG".to_string(), NEXT.to_string())];
    for (region, _, worker) in REGIONS {
        let items: Vec<String> = d
            .region_cameras(region)
            .iter()
            .map(|c| keys::partition_item(region, c.partition))
            .collect();
        let before = d.assignments()?.1;
        let t = Instant::now();
        d.compose_with(&next, &["up", "-d", "--no-deps", worker])?;
        let recreated = t.elapsed();
        let id = d.container(worker)?;
        let image = d.docker_ok(&["inspect", "--format", "{{.Config.Image}}", &id])?;
        ensure!(
            image.trim() == format!("panoptes/worker:{NEXT}"),
            "{worker} runs {image}"
        );
        d.wait_home(
            &format!("{worker}'s partitions home after its upgrade"),
            Duration::from_secs(60),
        )?;
        // handed over to the other worker while the old container drained, then back to the
        // new one: two grants at least
        let after = d.assignments()?.1;
        for item in &items {
            let (b, a) = (before[item].epoch, after[item].epoch);
            ensure!(
                a >= b + 2,
                "{item}: epoch {b} → {a}: not handed over and back"
            );
        }
        times.push((
            format!(
                "{worker} upgraded (recreate {:.1} s) → its partitions home",
                recreated.as_secs_f64()
            ),
            t.elapsed(),
        ));
    }
    Ok(())
}

/// 4. Region b's broker cut off its network: b's cameras move to ingest-1 (region a's Kafka);
///    reconnected, they come home.
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
