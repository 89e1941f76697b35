//! The leader's side of degradation: builds each group's input from the round's
//! [`Snapshot`] (capacity from the live workers' member records, cameras from the registry,
//! their current caps from their assignment records, whether they stream from their ingest
//! node's report), runs [`Degrader::decide`], and writes the caps that differ from the
//! records in one fenced batch: `HSET`/`HDEL panoptes:camassign:<cam> fps_cap` plus a
//! `PUBLISH` on the owner's notify channel, so the owner reads only what changed. A camera
//! without an owner gets its cap once granted (a grant rewrites the record without one).

use std::collections::{BTreeMap, BTreeSet};

use panoptes_coordinator_client::{CoordError, MemberKind, keys, scripts};
use redis::Connection;
use serde::Serialize;

use super::{Cam, DegradeConfig, DegradeMetrics, Degrader, Step};
use crate::state::Snapshot;

/// One group's figures, as the leader publishes them in `panoptes:groups` (field
/// `degrade`) for `panoptes status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GroupFigures {
    /// Demand of the streaming cameras at their current rates (load units).
    pub demand: f64,
    /// Demand with every camera at its registry fps.
    pub full_demand: f64,
    /// Measured capacity of the live workers.
    pub capacity: f64,
    /// Streaming cameras (those whose load counts).
    pub active: usize,
    /// Even every camera at its minimum exceeds the shed budget.
    pub saturated: bool,
    /// Capped cameras and their caps (fps).
    pub degraded: BTreeMap<String, u32>,
}

/// Degradation state kept by the leader between rounds.
pub struct Degradation {
    degrader: Degrader,
    metrics: DegradeMetrics,
    seen_cams: BTreeSet<String>,
    seen_groups: BTreeSet<String>,
    figures: BTreeMap<String, GroupFigures>,
    saturated: BTreeSet<String>,
    /// Per ingest node: its streaming cameras by worker group (this round).
    streaming: BTreeMap<String, BTreeMap<String, usize>>,
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Whether the camera's owner reports it streaming.
fn streaming(snap: &Snapshot, cam: &str, owner: &str) -> bool {
    snap.members
        .get(&MemberKind::Ingest)
        .and_then(|m| m.get(owner))
        .and_then(|v| v.record.as_ref())
        .and_then(|r| r.report.get("cameras")?.get(cam)?.get("state")?.as_str())
        == Some("streaming")
}

impl Degradation {
    /// No history.
    pub fn new(cfg: DegradeConfig, metrics: DegradeMetrics) -> Self {
        Self {
            degrader: Degrader::new(cfg),
            metrics,
            seen_cams: BTreeSet::new(),
            seen_groups: BTreeSet::new(),
            figures: BTreeMap::new(),
            saturated: BTreeSet::new(),
            streaming: BTreeMap::new(),
        }
    }

    /// The last figures of `group`.
    pub fn figures(&self, group: &str) -> Option<&GroupFigures> {
        self.figures.get(group)
    }

    /// The last figures of every group.
    pub fn all_figures(&self) -> &BTreeMap<String, GroupFigures> {
        &self.figures
    }

    /// The cameras ingest node `owner` streamed last round, by worker group (`None`: none).
    pub fn streaming(&self, owner: &str) -> Option<&BTreeMap<String, usize>> {
        self.streaming.get(owner)
    }

    /// One round: decides every group and writes the changed caps (`written` is called for
    /// every camera whose record was written, so that it is read again). Returns the Redis
    /// commands sent.
    pub fn round(
        &mut self,
        c: &mut Connection,
        token: u64,
        snap: &Snapshot,
        now_ms: u64,
        mut written: impl FnMut(&str),
    ) -> Result<u64, CoordError> {
        let mut capacity: BTreeMap<String, f64> = BTreeMap::new();
        for v in snap.members.get(&MemberKind::Worker).into_iter().flatten() {
            if let Some(r) = v.1.record.as_ref() {
                *capacity.entry(r.group.clone()).or_default() += r.capacity;
            }
        }
        let mut groups: BTreeMap<String, Vec<Cam>> = BTreeMap::new();
        let mut owners: BTreeMap<&str, (&str, Option<u32>)> = BTreeMap::new();
        self.streaming.clear();
        for (id, rec) in &snap.cameras {
            let a = snap.camera_assign.get(id);
            let owner = a.map_or("", |a| a.owner.as_str());
            let cap = a.and_then(|a| a.fps_cap);
            owners.insert(id, (owner, cap));
            let active = !owner.is_empty() && streaming(snap, id, owner);
            if active {
                *self
                    .streaming
                    .entry(owner.to_string())
                    .or_default()
                    .entry(rec.group.clone())
                    .or_default() += 1;
            }
            groups.entry(rec.group.clone()).or_default().push(Cam {
                id: id.clone(),
                priority: rec.priority,
                fps: rec.fps,
                min_fps: rec.min_fps,
                unit: f64::from(rec.width) * f64::from(rec.height) / (640.0 * 360.0),
                active,
                cap,
            });
        }
        for g in capacity.keys() {
            groups.entry(g.clone()).or_default();
        }
        let mut cmds: Vec<Vec<String>> = Vec::new();
        let mut notify: BTreeSet<&str> = BTreeSet::new();
        self.figures.clear();
        for (group, cams) in &groups {
            let cap_load = capacity.get(group).copied().unwrap_or(0.0);
            let d = self.degrader.decide(group, cap_load, cams, now_ms);
            for cam in cams {
                let new = d.caps[&cam.id];
                let rate = new.unwrap_or(cam.fps);
                self.metrics
                    .camera_rate_cap
                    .with_label_values(&[&cam.id])
                    .set(f64::from(rate));
                let (owner, stored) = owners[cam.id.as_str()];
                if new == stored || owner.is_empty() {
                    continue;
                }
                let key = keys::camera_assign(&cam.id);
                cmds.push(match new {
                    Some(v) => vec!["HSET".into(), key, "fps_cap".into(), v.to_string()],
                    None => vec!["HDEL".into(), key, "fps_cap".into()],
                });
                notify.insert(owner);
                written(&cam.id);
            }
            self.note(group, &d, cams.iter().filter(|c| c.active).count());
        }
        for owner in notify {
            cmds.push(vec![
                "PUBLISH".into(),
                keys::notify(MemberKind::Ingest, owner),
                "fps_cap".into(),
            ]);
        }
        let cams: BTreeSet<String> = snap.cameras.keys().cloned().collect();
        let names: BTreeSet<String> = groups.keys().cloned().collect();
        self.metrics
            .forget(&mut self.seen_cams, &cams, &mut self.seen_groups, &names);
        self.degrader.retain_groups(|g| names.contains(g));
        self.saturated.retain(|g| names.contains(g));
        if cmds.is_empty() {
            return Ok(0);
        }
        scripts::fenced_batch(c, token, &cmds)?;
        Ok(1)
    }

    /// Metrics, logs and figures of one group's decision.
    fn note(&mut self, group: &str, d: &super::Decision, active: usize) {
        let m = &self.metrics;
        m.degraded_cameras
            .with_label_values(&[group])
            .set(d.degraded() as i64);
        m.group_demand
            .with_label_values(&[group])
            .set(d.demand_after);
        m.group_capacity.with_label_values(&[group]).set(d.capacity);
        m.saturated
            .with_label_values(&[group])
            .set(i64::from(d.saturated));
        let step = match d.step {
            Step::Shed => Some("shed"),
            Step::Restore => Some("restore"),
            _ => None,
        };
        if let Some(step) = step {
            m.steps.with_label_values(&[group, step]).inc();
            tracing::info!(
                group,
                step,
                demand = round2(d.demand),
                demand_after = round2(d.demand_after),
                capacity = round2(d.capacity),
                degraded = d.degraded(),
                "degradation step"
            );
        }
        if d.saturated && self.saturated.insert(group.to_string()) {
            tracing::warn!(
                group,
                capacity = round2(d.capacity),
                full_demand = round2(d.full_demand),
                "worker group overloaded even with every camera at its minimum rate"
            );
        } else if !d.saturated {
            self.saturated.remove(group);
        }
        self.figures.insert(
            group.to_string(),
            GroupFigures {
                demand: round2(d.demand_after),
                full_demand: round2(d.full_demand),
                capacity: round2(d.capacity),
                active,
                saturated: d.saturated,
                degraded: d
                    .caps
                    .iter()
                    .filter_map(|(k, v)| v.map(|v| (k.clone(), v)))
                    .collect(),
            },
        );
    }
}
