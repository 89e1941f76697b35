//! A whole Panoptes deployment as real processes on one machine: Redis, one development
//! broker per region, the camera simulator, coordinators, ingest nodes and workers, all in
//! coordinator mode. The cluster tests, the failover benchmark and the load,
//! demo and chaos runs start their systems through [`Stack`], so they exercise exactly what
//! operators run. Every node is started from its typed configuration.
//!
//! Every process dies with the [`Stack`] (see [`panoptes_testkit::ChildProcess`]). Topics get unique
//! names, so stacks can share brokers' machines and run side by side.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use panoptes_checker::{Checker, Report};
use panoptes_coordinator::config::{CoordinatorConfig, PlacementConfig, RegionConfig};
use panoptes_coordinator_client::{AssignRecord, MemberKind, keys};
use panoptes_scene::camera::CameraConfig;
use panoptes_workers::config::{AssignmentSource, DeliveryMode, WorkerConfig};

use panoptes_testkit::coordinator::Coordinator;
use panoptes_testkit::{
    CamSim, DevBroker, Node, RedisServer, Topics, bin_path, coordinator, ingest, settle, wait_until,
};

use crate::worker;

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

    /// `n` small cameras `cam0..cam<n>` in `region` at `fps`, camera i with seed i + 1.
    pub fn small_set(n: usize, region: &str, fps: u32) -> Vec<Self> {
        (0..n)
            .map(|i| Self::small(&format!("cam{i}"), region, fps, 1 + i as u64))
            .collect()
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
    /// The coordinators' `[placement]` tuning.
    pub placement: PlacementConfig,
    /// Brokers per region's mock cluster.
    pub brokers_per_region: u32,
    /// The frames topic may grow to this many partitions (the coordinators'
    /// `[frames_growth] max_partitions`; the brokers answer CreatePartitions); 0: fixed.
    pub frames_max_partitions: i32,
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
            placement: PlacementConfig::default(),
            brokers_per_region: 1,
            frames_max_partitions: 0,
        }
    }
}

/// Logs of the stack's nodes.
const NODE_LOGS: &[(&str, &str)] = &[("RUST_LOG", "info")];
/// A node loading models on a busy machine may take long to serve.
const NODE_START: Duration = Duration::from_secs(60);

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
    /// Extra environment of the coordinator, ingest node or worker with this id, used when it
    /// starts (e.g. `panoptes_testkit::process::faketime_env` for a skewed clock).
    pub node_env: BTreeMap<String, Vec<(&'static str, String)>>,
    models: tempfile::TempDir,
}

impl Stack {
    /// Starts Redis, brokers (with topics), the simulator, the models and the coordinators.
    pub fn start(spec: StackSpec) -> Result<Self> {
        Self::start_on(spec, RedisServer::start()?)
    }

    /// [`Stack::start`] with Redis as production runs it: TLS only and one ACL user per
    /// process (`coordinator` for the coordinators, each node's id for the `ingest` nodes and
    /// `workers` it may later start), so every node reaches Redis with least privilege.
    pub fn start_secured(spec: StackSpec, ingest: &[&str], workers: &[&str]) -> Result<Self> {
        use panoptes_coordinator_client::acl::Role;
        let member = |kind: MemberKind, id: &str| Role::Member {
            kind,
            id: Some(id.to_string()),
        };
        let mut users = vec![("coordinator", Role::Coordinator)];
        users.extend(
            ingest
                .iter()
                .map(|id| (*id, member(MemberKind::Ingest, id))),
        );
        users.extend(
            workers
                .iter()
                .map(|id| (*id, member(MemberKind::Worker, id))),
        );
        Self::start_on(spec, RedisServer::start_secured(&users, false)?)
    }

    fn start_on(spec: StackSpec, redis: RedisServer) -> Result<Self> {
        let topics = Topics::unique();
        let mut brokers = BTreeMap::new();
        let grows = spec.frames_max_partitions > spec.partitions;
        for r in &spec.regions {
            let b = if grows {
                DevBroker::start_growable(spec.brokers_per_region)?
            } else {
                DevBroker::start(spec.brokers_per_region)?
            };
            b.create_topics_growing(
                &topics,
                spec.partitions as u32,
                spec.frames_max_partitions.max(0) as u32,
            )?;
            brokers.insert(r.clone(), b);
        }
        let sims: Vec<CameraConfig> = spec.cameras.iter().map(|c| c.sim.clone()).collect();
        let camsim = CamSim::with_configs(&sims)?;
        let models = generate_models()?;
        let mut stack = Self {
            spec,
            redis,
            brokers,
            camsim,
            coordinators: Vec::new(),
            ingest: BTreeMap::new(),
            workers: BTreeMap::new(),
            topics,
            node_env: BTreeMap::new(),
            models,
        };
        for i in 0..stack.spec.coordinators {
            stack.start_coordinator(&format!("coord-{i}"))?;
        }
        Ok(stack)
    }

    /// Starts one more coordinator.
    pub fn start_coordinator(&mut self, id: &str) -> Result<()> {
        self.start_coordinator_with(id, |_| {})
    }

    /// [`Stack::start_coordinator`] with its configuration changed by `tweak` before it
    /// starts (a `[models]` section, API settings).
    pub fn start_coordinator_with(
        &mut self,
        id: &str,
        tweak: impl FnOnce(&mut CoordinatorConfig),
    ) -> Result<()> {
        let mut c = coordinator::config(
            id,
            &self.redis.url,
            "",
            &self.topics.frames,
            self.spec.partitions,
        );
        c.regions = self
            .spec
            .regions
            .iter()
            .map(|r| RegionConfig {
                name: r.clone(),
                bootstrap_servers: self.brokers[r].bootstrap.clone(),
            })
            .collect();
        c.placement = self.spec.placement.clone();
        if self.spec.frames_max_partitions > self.spec.partitions {
            c.frames_growth.max_partitions = self.spec.frames_max_partitions;
        }
        c.redis = self.redis.client_config("coordinator");
        tweak(&mut c);
        let coordinator = Coordinator::start_env(&c, &self.env_of(id, &[]))?;
        self.coordinators.push(coordinator);
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
            coord.add_camera(&registration(i, c, &self.camera_url(c)))?;
        }
        Ok(())
    }

    /// Starts a coordinated ingest node.
    pub fn start_ingest(&mut self, id: &str, region: &str) -> Result<()> {
        let mut c = ingest::coordinated_config(
            id,
            &self.brokers[region].bootstrap,
            &self.topics.frames,
            &self.redis.url,
        );
        c.region = region.into();
        c.coordinator.redis = self.redis.client_config(id);
        c.coordinator.lease_ttl = self.spec.lease_ttl;
        let node = ingest::start_within(&c, &self.env_of(id, NODE_LOGS), NODE_START)?;
        self.ingest.insert(id.into(), node);
        Ok(())
    }

    /// Starts a coordinated worker (reference detector, CPU, one thread) in `group`.
    pub fn start_worker(&mut self, id: &str, region: &str, group: &str) -> Result<()> {
        self.start_worker_with(id, region, group, |_| {})
    }

    /// [`Stack::start_worker`] with its configuration changed by `tweak` before it starts
    /// (another model, a fixed capacity).
    pub fn start_worker_with(
        &mut self,
        id: &str,
        region: &str,
        group: &str,
        tweak: impl FnOnce(&mut WorkerConfig),
    ) -> Result<()> {
        let mut c = worker::config(
            id,
            &self.brokers[region].bootstrap,
            &self.topics,
            "panoptes-workers",
            &self.models.path().join("reference-detector.pt"),
            &self.models.path().join("reference-detector.json"),
        );
        c.region = region.into();
        c.group = group.into();
        c.delivery = if self.spec.exactly_once {
            DeliveryMode::ExactlyOnce
        } else {
            DeliveryMode::AtLeastOnce
        };
        c.commit_interval = Duration::from_millis(100);
        c.assignment.source = AssignmentSource::Coordinator;
        c.assignment.redis = self.redis.client_config(id);
        c.assignment.lease_ttl = self.spec.lease_ttl;
        tweak(&mut c);
        let node = worker::start(&c, &self.env_of(id, NODE_LOGS), NODE_START)?;
        self.workers.insert(id.into(), node);
        Ok(())
    }

    /// Starts the `ingest` nodes and the `workers` (group `default`) in `region`.
    pub fn start_members(&mut self, region: &str, ingest: &[&str], workers: &[&str]) -> Result<()> {
        for id in ingest {
            self.start_ingest(id, region)?;
        }
        for id in workers {
            self.start_worker(id, region, "default")?;
        }
        Ok(())
    }

    /// `base` followed by the [`Stack::node_env`] of `id`.
    fn env_of<'a>(&'a self, id: &str, base: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
        let extra = self.node_env.get(id).into_iter().flatten();
        base.iter()
            .copied()
            .chain(extra.map(|(k, v)| (*k, v.as_str())))
            .collect()
    }

    /// The folder of the generated models (`reference-detector.pt` and `.json`).
    pub fn models_dir(&self) -> &std::path::Path {
        self.models.path()
    }

    /// Each camera's rate cap (`fps_cap` of its assignment record; `None`: uncapped, or the
    /// records could not be read).
    pub fn rate_caps(&self) -> BTreeMap<String, Option<u32>> {
        self.assignments()
            .map(|(cams, _)| cams.into_iter().map(|(id, r)| (id, r.fps_cap)).collect())
            .unwrap_or_default()
    }

    /// Current assignment records: cameras by id, partitions by item (`<cluster>:<p>`).
    pub fn assignments(&self) -> Result<Assignments> {
        let mut c = self.redis.connection()?;
        let mut cams = BTreeMap::new();
        let mut parts = BTreeMap::new();
        for (i, cam) in self.spec.cameras.iter().enumerate() {
            let h: BTreeMap<String, String> = ::redis::cmd("HGETALL")
                .arg(keys::camera_assign(&cam.id))
                .query(&mut c)?;
            cams.insert(cam.id.clone(), AssignRecord::from_fields(&h)?);
            for r in &self.spec.regions {
                let h: BTreeMap<String, String> = ::redis::cmd("HGETALL")
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
        Ok(by_owner(self.assignments()?.1))
    }

    /// Camera ids owned by each ingest node.
    pub fn cameras_by_ingest(&self) -> Result<BTreeMap<String, Vec<String>>> {
        Ok(by_owner(self.assignments()?.0))
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

    /// Waits until `worker` owns at least one partition.
    pub fn wait_owns(&self, worker: &str, timeout: Duration) -> Result<()> {
        wait_until(&format!("{worker} to own a partition"), timeout, || {
            self.partitions_by_worker()
                .ok()?
                .get(worker)
                .is_some_and(|v| !v.is_empty())
                .then_some(())
        })
    }

    /// Kills (SIGKILL) a member process and forgets it; returns the moment of the kill.
    pub fn kill(&mut self, kind: MemberKind, id: &str) -> Result<Instant> {
        let node = self.remove(kind, id)?;
        node.proc.signal("KILL")?;
        let t = Instant::now();
        drop(node);
        Ok(t)
    }

    /// Stops a member with SIGTERM (it drains first) and waits up to `timeout` for it to exit.
    pub fn stop(&mut self, kind: MemberKind, id: &str, timeout: Duration) -> Result<bool> {
        self.remove(kind, id)?.proc.terminate(timeout)
    }

    fn remove(&mut self, kind: MemberKind, id: &str) -> Result<Node> {
        match kind {
            MemberKind::Ingest => self.ingest.remove(id),
            MemberKind::Worker => self.workers.remove(id),
        }
        .with_context(|| format!("no {kind} {id}"))
    }

    /// A checker reading `region`'s broker (accounting only).
    pub fn checker(&self, region: &str) -> Result<Checker> {
        settle::checker(&self.brokers[region].bootstrap, &self.topics, Vec::new())
    }

    /// Finishes the run: kills every ingest node (no more frames), then lets the workers
    /// answer what is in Kafka and returns the checker's report.
    pub fn stop_intake_and_settle(
        &mut self,
        checker: Checker,
        timeout: Duration,
    ) -> Result<Report> {
        let ids: Vec<String> = self.ingest.keys().cloned().collect();
        for id in ids {
            self.kill(MemberKind::Ingest, &id)?;
        }
        settle::settle(checker, timeout)
    }
}

/// The operator API's body registering camera `c` (the `i`-th of the spec, on partition `i`)
/// at `url`.
pub fn registration(i: usize, c: &StackCamera, url: &str) -> serde_json::Value {
    serde_json::json!({
        "id": c.id,
        "url": url,
        "region": c.region,
        "fps": c.sample_fps,
        "width": c.analytic.0,
        "height": c.analytic.1,
        "partition": i,
    })
}

/// Camera records by camera id, partition records by partition item.
pub type Assignments = (
    BTreeMap<String, AssignRecord>,
    BTreeMap<String, AssignRecord>,
);

/// Items grouped by their (non-empty) owner.
fn by_owner(records: BTreeMap<String, AssignRecord>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (item, rec) in records {
        if !rec.owner.is_empty() {
            out.entry(rec.owner).or_default().push(item);
        }
    }
    out
}

/// The reference detector, generated by `panoptes-models` into a temporary folder.
pub fn generate_models() -> Result<tempfile::TempDir> {
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
    Ok(models)
}
