//! `GET /v1/assignments` and `GET /v1/status`: what the cluster does now, read from the
//! assignment records (with the owners' release entries applied, as the leader reads
//! them), the members' reports and the leader's group figures.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::State;
use axum::http::StatusCode;
use panoptes_coordinator_client::{AssignRecord, MemberKind, keys};
use redis::Connection;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::common::{ApiResult, ApiState, Shared, ok, redis_call};
use super::nodes::{NodeView, read_nodes};
use crate::registry::{self, RegistryError, Snapshot};

/// A camera's assignment as `GET /v1/assignments` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CameraAssignment {
    /// Camera id.
    pub camera: String,
    /// The record.
    #[serde(flatten)]
    pub assign: AssignRecord,
}

/// A partition's assignment as `GET /v1/assignments` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionAssignment {
    /// Region whose Kafka holds this copy of the partition.
    pub cluster: String,
    /// Frames topic.
    pub topic: String,
    /// Partition number.
    pub partition: i32,
    /// Owning worker; empty when unassigned.
    pub owner: String,
    /// Epoch of the grant.
    pub epoch: u64,
    /// Worker the coordinator is moving it to.
    pub target: Option<String>,
    /// Epoch the owner released it at.
    pub released: Option<u64>,
}

/// `GET /v1/assignments` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Assignments {
    /// Camera → ingest node.
    pub cameras: Vec<CameraAssignment>,
    /// Partition → worker.
    pub partitions: Vec<PartitionAssignment>,
}

fn scan(c: &mut Connection, pattern: &str) -> Result<Vec<String>, RegistryError> {
    let mut cursor: u64 = 0;
    let mut out = BTreeSet::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(c)?;
        out.extend(batch);
        if next == 0 {
            return Ok(out.into_iter().collect());
        }
        cursor = next;
    }
}

fn hgetall_many(
    c: &mut Connection,
    keys: &[String],
) -> Result<Vec<BTreeMap<String, String>>, RegistryError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("HGETALL").arg(k);
    }
    Ok(pipe.query(c)?)
}

fn read_assignments(c: &mut Connection) -> Result<Assignments, RegistryError> {
    let mut out = Assignments::default();
    let cam_keys = scan(c, "panoptes:camassign:*")?;
    for (k, h) in cam_keys.iter().zip(hgetall_many(c, &cam_keys)?) {
        let Some(camera) = k.strip_prefix("panoptes:camassign:") else {
            continue;
        };
        if h.is_empty() {
            continue;
        }
        let assign = AssignRecord::from_fields(&h)
            .map_err(|e| RegistryError::Internal(format!("{k}: {e}")))?;
        out.cameras.push(CameraAssignment {
            camera: camera.to_string(),
            assign,
        });
    }
    let part_keys = scan(c, "panoptes:assign:*")?;
    let mut parts_read = Vec::new();
    for (k, h) in part_keys.iter().zip(hgetall_many(c, &part_keys)?) {
        // panoptes:assign:<cluster>:<topic>:<partition>; the topic may hold dots, not colons.
        let Some(rest) = k.strip_prefix("panoptes:assign:") else {
            continue;
        };
        let mut parts = rest.rsplitn(3, ':');
        let (Some(p), Some(topic), Some(cluster)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let Ok(partition) = p.parse::<i32>() else {
            continue;
        };
        if h.is_empty() {
            continue;
        }
        let assign = AssignRecord::from_fields(&h)
            .map_err(|e| RegistryError::Internal(format!("{k}: {e}")))?;
        parts_read.push((cluster.to_string(), topic.to_string(), partition, assign));
    }
    let mut recs: Vec<(MemberKind, String, &mut AssignRecord)> =
        out.cameras
            .iter_mut()
            .map(|a| (MemberKind::Ingest, a.camera.clone(), &mut a.assign))
            .chain(parts_read.iter_mut().map(|(cluster, _, p, a)| {
                (MemberKind::Worker, keys::partition_item(cluster, *p), a)
            }))
            .collect();
    apply_releases(c, &mut recs)?;
    for (cluster, topic, partition, assign) in parts_read {
        out.partitions.push(PartitionAssignment {
            cluster,
            topic,
            partition,
            owner: assign.owner,
            epoch: assign.epoch,
            target: assign.target,
            released: assign.released,
        });
    }
    out.partitions.sort_by(|a, b| {
        (&a.cluster, &a.topic, a.partition).cmp(&(&b.cluster, &b.topic, b.partition))
    });
    Ok(out)
}

/// Applies each owner's release entry (`HGET panoptes:released:<kind>:<owner> <item>`) to
/// the records, as the leader reads them: members record releases in their own hash, never
/// in the assignment record.
fn apply_releases(
    c: &mut Connection,
    recs: &mut [(MemberKind, String, &mut AssignRecord)],
) -> Result<(), RegistryError> {
    let mut pipe = redis::pipe();
    let mut asked = Vec::new();
    for (i, (kind, item, r)) in recs.iter().enumerate() {
        if !r.owner.is_empty() {
            pipe.cmd("HGET")
                .arg(keys::released(*kind, &r.owner))
                .arg(item);
            asked.push(i);
        }
    }
    if asked.is_empty() {
        return Ok(());
    }
    let replies: Vec<Option<String>> = pipe.query(c)?;
    for (i, entry) in asked.into_iter().zip(replies) {
        recs[i].2.apply_release(entry.as_deref());
    }
    Ok(())
}

pub(super) async fn assignments(State(st): State<Shared>) -> ApiResult {
    let a = redis_call(&st, |c, _| read_assignments(c)).await?;
    ok(StatusCode::OK, a)
}

/// The leader as `GET /v1/status` shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LeaderView {
    /// Coordinator id.
    pub id: String,
    /// Its HTTP base URL.
    pub http: String,
    /// Fencing token of its term.
    pub token: u64,
    /// Leading since (ms since the epoch).
    pub since_ms: u64,
    /// Last tick (ms since the epoch).
    pub tick_ms: u64,
    /// Whether it still holds the lease (`panoptes:leader` names it).
    pub holds_lease: bool,
}

/// One worker group in `GET /v1/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GroupView {
    /// Group name.
    pub group: String,
    /// Alive workers in the group.
    pub workers: u64,
    /// Sum of their capacities.
    pub capacity: f64,
    /// Sum of their loads.
    pub load: f64,
    /// Load of the group's cameras (what the registry asks for).
    pub camera_load: f64,
    /// Replicas the reconciler wants (absent until it has written its view).
    pub desired_replicas: Option<u64>,
    /// The reconciler's own view of the group: `{"desired_replicas", "load", "capacity"}`.
    pub reconciler: Value,
    /// Degradation: demand of its streaming cameras at their current rates (load units).
    #[serde(default)]
    pub demand: Option<f64>,
    /// Degradation: capped cameras and their caps (fps).
    #[serde(default)]
    pub degraded: BTreeMap<String, u32>,
    /// Degradation: overloaded even with every camera at its minimum rate.
    #[serde(default)]
    pub saturated: bool,
    /// Cost per hour and per camera-hour at the `[cost]` prices, and packing (demand over
    /// capacity), as the leader computed them (`crate::cost`; absent until it has).
    #[serde(default)]
    pub cost: Option<crate::cost::GroupCost>,
}

/// One camera in `GET /v1/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CameraStatus {
    /// Camera id.
    pub id: String,
    /// Home region.
    pub region: String,
    /// Worker group.
    pub group: String,
    /// Frames partition.
    pub partition: i32,
    /// Configured fps.
    pub fps_target: u32,
    /// Owning ingest node (empty when unassigned).
    pub owner: String,
    /// Region whose Kafka gets its frames now.
    pub cluster: Option<String>,
    /// Epoch of the grant.
    pub epoch: u64,
    /// Node it is being moved to.
    pub target: Option<String>,
    /// Measured fps, as the owner reports it.
    pub fps: Option<f64>,
    /// State, as the owner reports it.
    pub state: Option<String>,
    /// Degradation priority (0 capped first).
    #[serde(default)]
    pub priority: u8,
    /// The sampling rate cap the leader set under overload (`None`: its fps).
    #[serde(default)]
    pub fps_cap: Option<u32>,
}

/// One partition copy in `GET /v1/status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PartitionStatus {
    /// Region whose Kafka holds it.
    pub cluster: String,
    /// Partition number.
    pub partition: i32,
    /// Owning worker (empty when unassigned).
    pub owner: String,
    /// Epoch of the grant.
    pub epoch: u64,
    /// Worker it is being moved to.
    pub target: Option<String>,
    /// Consumer lag (records), as the owner reports it.
    pub lag: Option<i64>,
    /// Frames consumed per second, as the owner reports it.
    pub fps: Option<f64>,
    /// Cameras whose frames go to this partition.
    pub cameras: Vec<String>,
}

/// `GET /v1/status` answer.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatusView {
    /// The leader, if one has ever been elected.
    pub leader: Option<LeaderView>,
    /// Registry version.
    pub registry_version: u64,
    /// All members.
    pub nodes: Vec<NodeView>,
    /// Worker groups.
    pub groups: Vec<GroupView>,
    /// Every registered camera.
    pub cameras: Vec<CameraStatus>,
    /// Every partition copy with an assignment record (of the frames topic).
    pub partitions: Vec<PartitionStatus>,
    /// Partitions of the frames topic cameras are allocated in now (`frames_partitions`, or
    /// what growth recorded).
    #[serde(default)]
    pub frames_partitions: i32,
    /// How far the coordinator may grow the frames topic (`[frames_growth] max_partitions`;
    /// 0: it does not grow it).
    #[serde(default)]
    pub frames_partitions_max: i32,
}

/// Everything `GET /v1/status` shows: the records are read first, then joined in memory.
fn read_status(c: &mut Connection, st: &ApiState) -> Result<StatusView, RegistryError> {
    let frames_topic = st.frames_topic.as_str();
    let (leader, groups_raw) = read_leader_and_groups(c)?;
    let snap = registry::read(c)?;
    let nodes = read_nodes(c)?;
    let assigns = read_assignments(c)?;
    Ok(StatusView {
        leader,
        registry_version: snap.version,
        groups: group_views(&nodes, &snap, &groups_raw),
        cameras: camera_statuses(&snap, &assigns.cameras, &nodes),
        partitions: partition_statuses(assigns.partitions, frames_topic, &snap, &nodes),
        nodes,
        frames_partitions: st.growth.current(c)?,
        frames_partitions_max: st.growth.max_partitions(),
    })
}

/// The leader's record (and whether it still holds the lease) and the leader's per-group
/// figures (raw JSON by group).
fn read_leader_and_groups(
    c: &mut Connection,
) -> Result<(Option<LeaderView>, BTreeMap<String, String>), RegistryError> {
    let (info, holder, groups_raw): (
        BTreeMap<String, String>,
        Option<String>,
        BTreeMap<String, String>,
    ) = redis::pipe()
        .cmd("HGETALL")
        .arg(keys::LEADER_INFO)
        .cmd("GET")
        .arg(keys::LEADER)
        .cmd("HGETALL")
        .arg(keys::GROUPS)
        .query(c)?;
    let num = |k: &str| info.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    let leader = info.get("id").map(|id| LeaderView {
        id: id.clone(),
        http: info.get("http").cloned().unwrap_or_default(),
        token: num("token"),
        since_ms: num("since_ms"),
        tick_ms: num("tick_ms"),
        holds_lease: holder.as_deref() == Some(id.as_str()),
    });
    Ok((leader, groups_raw))
}

/// The last report of a live member.
fn report_of<'a>(nodes: &'a [NodeView], kind: MemberKind, id: &str) -> Option<&'a Value> {
    nodes
        .iter()
        .find(|n| n.kind == kind && n.id == id && n.alive)
        .map(|n| &n.report)
}

/// Per worker group: live workers' capacity and load, its cameras' load and the leader's
/// figures.
fn group_views(
    nodes: &[NodeView],
    snap: &Snapshot,
    groups_raw: &BTreeMap<String, String>,
) -> Vec<GroupView> {
    let mut groups: BTreeMap<String, GroupView> = BTreeMap::new();
    fn group<'a>(groups: &'a mut BTreeMap<String, GroupView>, name: &str) -> &'a mut GroupView {
        groups.entry(name.to_string()).or_insert_with(|| GroupView {
            group: name.to_string(),
            reconciler: Value::Null,
            ..Default::default()
        })
    }
    for n in nodes
        .iter()
        .filter(|n| n.kind == MemberKind::Worker && n.alive)
    {
        let g = group(&mut groups, &n.group);
        g.workers += 1;
        g.capacity += n.capacity;
        g.load += n.load;
    }
    for cam in snap.cameras.values() {
        group(&mut groups, &cam.group).camera_load += cam.load();
    }
    for (name, raw) in groups_raw {
        let v: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
        let g = group(&mut groups, name);
        g.desired_replicas = v.get("desired_replicas").and_then(Value::as_u64);
        if let Some(d) = v.get("degrade").filter(|d| !d.is_null()) {
            g.demand = d.get("demand").and_then(Value::as_f64);
            g.degraded = serde_json::from_value(d["degraded"].clone()).unwrap_or_default();
            g.saturated = d.get("saturated").and_then(Value::as_bool) == Some(true);
        }
        g.cost = v
            .get("cost")
            .filter(|c| !c.is_null())
            .and_then(|c| serde_json::from_value(c.clone()).ok());
        g.reconciler = v;
    }
    groups.into_values().collect()
}

/// Every registered camera with its assignment and its ingest node's report of it.
fn camera_statuses(
    snap: &Snapshot,
    assigns: &[CameraAssignment],
    nodes: &[NodeView],
) -> Vec<CameraStatus> {
    let cam_assign: BTreeMap<&str, &AssignRecord> = assigns
        .iter()
        .map(|a| (a.camera.as_str(), &a.assign))
        .collect();
    snap.cameras
        .values()
        .map(|cam| {
            let a = cam_assign
                .get(cam.id.as_str())
                .copied()
                .cloned()
                .unwrap_or_default();
            let rep = (!a.owner.is_empty())
                .then(|| report_of(nodes, MemberKind::Ingest, &a.owner))
                .flatten()
                .and_then(|r| r.get("cameras"))
                .and_then(|cs| cs.get(&cam.id));
            CameraStatus {
                id: cam.id.clone(),
                region: cam.region.clone(),
                group: cam.group.clone(),
                partition: cam.partition,
                fps_target: cam.fps,
                priority: cam.priority,
                fps_cap: a.fps_cap,
                owner: a.owner,
                cluster: a.cluster,
                epoch: a.epoch,
                target: a.target,
                fps: rep.and_then(|r| r.get("fps")).and_then(Value::as_f64),
                state: rep.and_then(|r| r.get("state")).map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
            }
        })
        .collect()
}

/// Every assigned copy of a frames partition with its worker's report of it.
fn partition_statuses(
    assigns: Vec<PartitionAssignment>,
    frames_topic: &str,
    snap: &Snapshot,
    nodes: &[NodeView],
) -> Vec<PartitionStatus> {
    assigns
        .into_iter()
        .filter(|p| p.topic == frames_topic)
        .map(|p| {
            let item = keys::partition_item(&p.cluster, p.partition);
            let rep = (!p.owner.is_empty())
                .then(|| report_of(nodes, MemberKind::Worker, &p.owner))
                .flatten()
                .and_then(|r| r.get("items"))
                .and_then(|i| i.get(&item));
            let lag = rep.and_then(|i| i.get("lag")).and_then(Value::as_i64);
            let fps = rep.and_then(|i| i.get("fps")).and_then(Value::as_f64);
            PartitionStatus {
                cameras: snap
                    .cameras
                    .values()
                    .filter(|c| c.partition == p.partition)
                    .map(|c| c.id.clone())
                    .collect(),
                cluster: p.cluster,
                partition: p.partition,
                owner: p.owner,
                epoch: p.epoch,
                target: p.target,
                lag,
                fps,
            }
        })
        .collect()
}

pub(super) async fn status(State(st): State<Shared>) -> ApiResult {
    let s = redis_call(&st, read_status).await?;
    ok(StatusCode::OK, s)
}
