//! A whole Panoptes deployment as real processes on one machine: Redis, one development
//! broker per region, the camera simulator, coordinators, ingest nodes and workers, all in
//! coordinator mode. The cluster tests, the failover benchmark and the load and chaos runs
//! start their systems through [`Stack`], so they exercise exactly what operators run.
//!
//! Every process dies with the [`Stack`] (see `panoptes_testkit::ChildProcess`). Topics get
//! unique names, so stacks can share brokers' machines and run side by side.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use panoptes_coordinator_client::{AssignRecord, MemberKind, keys};
use panoptes_testkit::{
    CamSim, ChildProcess, Coordinator, CoordinatorSpec, DevBroker, RedisServer, bin_path, get_text,
    metric_value, unique_name, wait_until,
};

use crate::camsim::config::CameraConfig;
use crate::checker::{Checker, ReaderConfig};

/// One simulated camera of a stack.
#[derive(Debug, Clone)]
pub struct StackCamera {
    /// Camera id.
    pub id: String,
    /// Home region.
    pub region: String,
    /// Simulator settings (resolution, fps, seed, credentials).
    pub sim: CameraConfig,
    /// Sampled fps at ingest.
    pub sample_fps: u32,
    /// Analytic box.
    pub analytic: (u32, u32),
}

impl StackCamera {
    /// A camera `id` in `region`: 320×180 at `fps`, sampled at `fps`, analytic 320×180.
    pub fn small(id: &str, region: &str, fps: u32, seed: u64) -> Self {
        let mut sim = CameraConfig::new(id);
        sim.width = 320;
        sim.height = 180;
        sim.fps = fps;
        sim.seed = seed;
        Self {
            id: id.into(),
            region: region.into(),
            sim,
            sample_fps: fps,
            analytic: (320, 180),
        }
    }

    /// A camera `id` in `region`: `source` resolution at `fps`, sampled at `fps`, scaled by
    /// ingest to fit the `analytic` box.
    pub fn with_resolution(
        id: &str,
        region: &str,
        fps: u32,
        seed: u64,
        source: (u32, u32),
        analytic: (u32, u32),
    ) -> Self {
        let mut c = Self::small(id, region, fps, seed);
        c.sim.width = source.0;
        c.sim.height = source.1;
        c.analytic = analytic;
        c
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct StackSpec {
    /// Region names; one broker each. The first is the default.
    pub regions: Vec<String>,
    /// Cameras (registered with [`Stack::register_cameras`]).
    pub cameras: Vec<StackCamera>,
    /// Partitions of the frames and detections topics in every region.
    pub partitions: i32,
    /// Workers deliver exactly once (transactions) instead of at least once.
    pub exactly_once: bool,
    /// Coordinators to start.
    pub coordinators: usize,
    /// Members' lease TTL.
    pub lease_ttl: Duration,
    /// Extra TOML for coordinators (e.g. `[placement]`).
    pub coordinator_toml: String,
    /// Extra top-level TOML for workers.
    pub worker_toml: String,
    /// Brokers per region's mock cluster.
    pub brokers_per_region: u32,
}

impl StackSpec {
    /// One region `local`, exactly-once workers, one coordinator, 1 s leases.
    pub fn single_region(cameras: Vec<StackCamera>, partitions: i32) -> Self {
        Self {
            regions: vec!["local".into()],
            cameras,
            partitions,
            exactly_once: true,
            coordinators: 1,
            lease_ttl: Duration::from_secs(1),
            coordinator_toml: String::new(),
            worker_toml: String::new(),
            brokers_per_region: 1,
        }
    }
}

/// Topic names (the same in every region's broker).
#[derive(Debug, Clone)]
pub struct Topics {
    /// Frames.
    pub frames: String,
    /// Detections.
    pub detections: String,
    /// Dead letters.
    pub dlq: String,
}

/// A running ingest node or worker.
pub struct Node {
    /// Member id.
    pub id: String,
    /// Region.
    pub region: String,
    /// HTTP base URL.
    pub http: String,
    /// The process.
    pub proc: ChildProcess,
    _config: tempfile::NamedTempFile,
}

impl Node {
    /// `/metrics` text ("" if unreachable).
    pub fn metrics(&self) -> String {
        get_text(&format!("{}/metrics", self.http))
            .map(|(_, t)| t)
            .unwrap_or_default()
    }

    /// One metric series' value.
    pub fn metric(&self, series: &str) -> Option<f64> {
        metric_value(&self.metrics(), series)
    }
}

/// A running deployment.
pub struct Stack {
    /// What was asked for.
    pub spec: StackSpec,
    /// Redis.
    pub redis: RedisServer,
    /// Broker per region.
    pub brokers: BTreeMap<String, DevBroker>,
    /// The camera simulator.
    pub camsim: CamSim,
    /// Coordinators.
    pub coordinators: Vec<Coordinator>,
    /// Ingest nodes by id.
    pub ingest: BTreeMap<String, Node>,
    /// Workers by id.
    pub workers: BTreeMap<String, Node>,
    /// Topic names.
    pub topics: Topics,
    models: tempfile::TempDir,
}

impl Stack {
    /// Starts Redis, brokers (with topics), the simulator, the models and the coordinators.
    pub fn start(spec: StackSpec) -> Result<Self> {
        let redis = RedisServer::start()?;
        let topics = Topics {
            frames: unique_name("frames"),
            detections: unique_name("detections"),
            dlq: unique_name("dlq"),
        };
        let mut brokers = BTreeMap::new();
        for r in &spec.regions {
            let b = DevBroker::start(spec.brokers_per_region)?;
            b.create_topic(&topics.frames, spec.partitions as u32)?;
            b.create_topic(&topics.detections, spec.partitions as u32)?;
            b.create_topic(&topics.dlq, 1)?;
            brokers.insert(r.clone(), b);
        }
        let mut args = Vec::new();
        for c in &spec.cameras {
            let s = &c.sim;
            let mut a = format!(
                "id={},width={},height={},fps={},seed={},objects={}",
                s.id, s.width, s.height, s.fps, s.seed, s.objects
            );
            if let Some(cr) = &s.credentials {
                a.push_str(&format!(",user={},pass={}", cr.user, cr.pass));
            }
            args.push("--camera".to_string());
            args.push(a);
        }
        let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let camsim = CamSim::start(&arg_refs)?;
        let models = tempfile::tempdir()?;
        let out = std::process::Command::new(bin_path("panoptes-models"))
            .args(["--only", "reference", "--out"])
            .arg(models.path())
            .output()
            .context("running panoptes-models")?;
        if !out.status.success() {
            bail!(
                "panoptes-models failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut stack = Self {
            spec,
            redis,
            brokers,
            camsim,
            coordinators: Vec::new(),
            ingest: BTreeMap::new(),
            workers: BTreeMap::new(),
            topics,
            models,
        };
        for i in 0..stack.spec.coordinators {
            stack.start_coordinator(&format!("coord-{i}"))?;
        }
        Ok(stack)
    }

    /// Starts one more coordinator.
    pub fn start_coordinator(&mut self, id: &str) -> Result<()> {
        let mut cs = CoordinatorSpec::new(
            id,
            &self.redis.url,
            "",
            &self.topics.frames,
            self.spec.partitions,
        );
        cs.regions = self
            .spec
            .regions
            .iter()
            .map(|r| (r.clone(), self.brokers[r].bootstrap.clone()))
            .collect();
        cs.extra_toml = self.spec.coordinator_toml.clone();
        self.coordinators.push(Coordinator::start(&cs)?);
        Ok(())
    }

    /// A coordinator that answers (the leader if known).
    pub fn coordinator(&self) -> Result<&Coordinator> {
        self.coordinators
            .iter()
            .find(|c| c.is_leader())
            .or_else(|| self.coordinators.first())
            .context("no coordinator")
    }

    /// The URL of a camera as the simulator serves it (credentials included).
    pub fn camera_url(&self, c: &StackCamera) -> String {
        let creds = c
            .sim
            .credentials
            .as_ref()
            .map(|cr| (cr.user.as_str(), cr.pass.as_str()));
        self.camsim.url(&c.id, creds)
    }

    /// Registers every camera of the spec, camera i on partition i.
    pub fn register_cameras(&self) -> Result<()> {
        let coord = self.coordinator()?;
        for (i, c) in self.spec.cameras.iter().enumerate() {
            coord.add_camera(&serde_json::json!({
                "id": c.id,
                "url": self.camera_url(c),
                "region": c.region,
                "fps": c.sample_fps,
                "width": c.analytic.0,
                "height": c.analytic.1,
                "partition": i,
            }))?;
        }
        Ok(())
    }

    /// Starts a coordinated ingest node.
    pub fn start_ingest(&mut self, id: &str, region: &str) -> Result<()> {
        let toml = format!(
            "node_id = {id:?}\nregion = {region:?}\n[http]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = {:?}\ntopic = {:?}\n\
             [coordinator]\nenabled = true\nredis_url = {:?}\nlease_ttl = \"{}ms\"\n",
            self.brokers[region].bootstrap,
            self.topics.frames,
            self.redis.url,
            self.spec.lease_ttl.as_millis(),
        );
        let node = spawn_node("ingest", id, region, "panoptes-ingest", &toml)?;
        self.ingest.insert(id.into(), node);
        Ok(())
    }

    /// Starts a coordinated worker (reference detector, CPU, one thread) in `group`.
    pub fn start_worker(&mut self, id: &str, region: &str, group: &str) -> Result<()> {
        let model = self.models.path().join("reference-detector.pt");
        let manifest = self.models.path().join("reference-detector.json");
        let toml = format!(
            "worker_id = {id:?}\nregion = {region:?}\ngroup = {group:?}\ndelivery = {:?}\ncommit_interval = \"100ms\"\n{}\n\
             [http]\nlisten = \"127.0.0.1:0\"\n[kafka]\nbootstrap_servers = {:?}\nframes_topic = {:?}\ndetections_topic = {:?}\ndlq_topic = {:?}\ngroup_id = \"panoptes-workers\"\n\
             [model]\npath = {:?}\nmanifest = {:?}\ndevice = \"cpu\"\nintra_op_threads = 1\n\
             [assignment]\nsource = \"coordinator\"\nredis_url = {:?}\nlease_ttl = \"{}ms\"\n",
            if self.spec.exactly_once {
                "exactly_once"
            } else {
                "at_least_once"
            },
            self.spec.worker_toml,
            self.brokers[region].bootstrap,
            self.topics.frames,
            self.topics.detections,
            self.topics.dlq,
            model.display().to_string(),
            manifest.display().to_string(),
            self.redis.url,
            self.spec.lease_ttl.as_millis(),
        );
        let node = spawn_node("worker", id, region, "panoptes-worker", &toml)?;
        self.workers.insert(id.into(), node);
        Ok(())
    }

    /// Current assignment records: cameras by id, partitions by item (`<cluster>:<p>`).
    pub fn assignments(
        &self,
    ) -> Result<(
        BTreeMap<String, AssignRecord>,
        BTreeMap<String, AssignRecord>,
    )> {
        let mut c = self.redis.connection()?;
        let mut cams = BTreeMap::new();
        let mut parts = BTreeMap::new();
        for (i, cam) in self.spec.cameras.iter().enumerate() {
            let h: BTreeMap<String, String> = redis::cmd("HGETALL")
                .arg(keys::camera_assign(&cam.id))
                .query(&mut c)?;
            cams.insert(cam.id.clone(), AssignRecord::from_fields(&h)?);
            for r in &self.spec.regions {
                let h: BTreeMap<String, String> = redis::cmd("HGETALL")
                    .arg(keys::partition_assign(r, &self.topics.frames, i as i32))
                    .query(&mut c)?;
                if !h.is_empty() {
                    parts.insert(
                        keys::partition_item(r, i as i32),
                        AssignRecord::from_fields(&h)?,
                    );
                }
            }
        }
        Ok((cams, parts))
    }

    /// Partition items owned by each worker.
    pub fn partitions_by_worker(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let (_, parts) = self.assignments()?;
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (item, rec) in parts {
            if !rec.owner.is_empty() {
                out.entry(rec.owner).or_default().push(item);
            }
        }
        Ok(out)
    }

    /// Waits until every camera is owned by a running ingest node and every camera's current
    /// partition item by a running worker, with no handover pending.
    pub fn wait_settled(&self, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        wait_until("every camera and partition to be assigned", timeout, || {
            let (cams, parts) = self.assignments().ok()?;
            for (i, cam) in self.spec.cameras.iter().enumerate() {
                let a = cams.get(&cam.id)?;
                if !self.ingest.contains_key(&a.owner) || a.target.is_some() {
                    return None;
                }
                let cluster = a.cluster.clone()?;
                let p = parts.get(&keys::partition_item(&cluster, i as i32))?;
                if !self.workers.contains_key(&p.owner) || p.target.is_some() {
                    return None;
                }
            }
            Some(())
        })?;
        Ok(start.elapsed())
    }

    /// Kills (SIGKILL) a member process and forgets it; returns the moment of the kill.
    pub fn kill(&mut self, kind: MemberKind, id: &str) -> Result<Instant> {
        let node = match kind {
            MemberKind::Ingest => self.ingest.remove(id),
            MemberKind::Worker => self.workers.remove(id),
        }
        .with_context(|| format!("no {kind} {id}"))?;
        node.proc.signal("KILL")?;
        let t = Instant::now();
        drop(node);
        Ok(t)
    }

    /// Stops a member with SIGTERM (it drains first) and waits up to `timeout` for it to exit.
    pub fn stop(&mut self, kind: MemberKind, id: &str, timeout: Duration) -> Result<bool> {
        let mut node = match kind {
            MemberKind::Ingest => self.ingest.remove(id),
            MemberKind::Worker => self.workers.remove(id),
        }
        .with_context(|| format!("no {kind} {id}"))?;
        node.proc.terminate(timeout)
    }

    /// A checker reading `region`'s broker.
    pub fn checker(&self, region: &str) -> Result<Checker> {
        let mut config = ReaderConfig::new(self.brokers[region].bootstrap.clone());
        config.frames_topic = self.topics.frames.clone();
        config.detections_topic = self.topics.detections.clone();
        config.dlq_topic = self.topics.dlq.clone();
        config.accuracy = false;
        config.drain = Duration::from_secs(10);
        Ok(Checker::start(config)?)
    }
}

fn spawn_node(kind: &str, id: &str, region: &str, bin: &str, toml: &str) -> Result<Node> {
    let config = tempfile::Builder::new().suffix(".toml").tempfile()?;
    std::fs::write(config.path(), toml)?;
    let path = config.path().to_string_lossy().to_string();
    let mut proc = ChildProcess::spawn(
        &format!("{kind}-{id}"),
        &bin_path(bin),
        &["--config", &path],
        &[("RUST_LOG", "info")],
    )?;
    let http = proc
        .wait_for_line("HTTP=", Duration::from_secs(60))
        .with_context(|| format!("{kind} {id} did not start: {}", proc.log_text()))?;
    Ok(Node {
        id: id.into(),
        region: region.into(),
        http,
        proc,
        _config: config,
    })
}

/// Waits until `worker` owns at least one partition.
pub fn wait_owns(stack: &Stack, worker: &str, timeout: Duration) -> Result<()> {
    wait_until(&format!("{worker} to own a partition"), timeout, || {
        stack
            .partitions_by_worker()
            .ok()?
            .get(worker)
            .is_some_and(|v| !v.is_empty())
            .then_some(())
    })
}

/// Waits until every frame the checker read has a record or a dead letter and nothing has
/// changed for a second, then finishes the checker.
pub fn settle(checker: Checker, timeout: Duration) -> Result<crate::checker::Report> {
    let deadline = Instant::now() + timeout;
    let mut last = checker.progress();
    let mut stable_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let p = checker.progress();
        if p != last {
            last = p;
            stable_since = Instant::now();
        }
        let answered = p.detections + p.dead_letters;
        if p.frames > 0 && answered >= p.frames && stable_since.elapsed() > Duration::from_secs(2) {
            break;
        }
        if Instant::now() > deadline || checker.is_finished() {
            // Finish anyway: the report says what is missing.
            break;
        }
    }
    Ok(checker.finish()?)
}

impl Stack {
    /// Watches `region`'s detections topic from now on.
    pub fn watch_detections(
        &self,
        region: &str,
    ) -> Result<crate::watch::Watch<crate::watch::SeenDetection>> {
        crate::watch::detections(&self.brokers[region].bootstrap, &self.topics.detections)
    }

    /// Watches `region`'s frames topic from now on.
    pub fn watch_frames(
        &self,
        region: &str,
    ) -> Result<crate::watch::Watch<crate::watch::SeenFrame>> {
        crate::watch::frames(&self.brokers[region].bootstrap, &self.topics.frames)
    }

    /// Camera ids owned by each ingest node.
    pub fn cameras_by_ingest(&self) -> Result<BTreeMap<String, Vec<String>>> {
        let (cams, _) = self.assignments()?;
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, rec) in cams {
            if !rec.owner.is_empty() {
                out.entry(rec.owner).or_default().push(id);
            }
        }
        Ok(out)
    }

    /// Finishes the run: kills every ingest node (no more frames), then lets the workers
    /// answer what is in Kafka and returns the checker's report.
    pub fn stop_intake_and_settle(
        &mut self,
        checker: Checker,
        timeout: Duration,
    ) -> Result<crate::checker::Report> {
        let ids: Vec<String> = self.ingest.keys().cloned().collect();
        for id in ids {
            self.kill(MemberKind::Ingest, &id)?;
        }
        settle(checker, timeout)
    }
}
