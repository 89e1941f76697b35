//! The leader's side of cost: builds [`Inputs`] from the round's [`Snapshot`] (live members
//! and their node classes) and [`Degradation`]'s figures (demand, capacity, streaming
//! cameras, which ingest node streams what: measured once, there), computes the figures,
//! sets the metrics (a group's series removed when the group is gone or the figure became
//! unknown) and keeps the figures for `panoptes:groups`.

use std::collections::BTreeSet;

use panoptes_coordinator_client::MemberKind;
use panoptes_runtime::metrics;
use prometheus::{GaugeVec, Opts, Registry};

use super::{CostConfig, CostReport, GroupCost, Inputs, Load, compute};
use crate::degrade::Degradation;
use crate::state::Snapshot;

/// Metric handles. Cheap to clone.
#[derive(Clone)]
pub struct CostMetrics {
    /// What a worker group costs per hour (its workers and its share of the ingest nodes).
    pub per_hour: GaugeVec,
    /// Per hour / streaming cameras.
    pub per_camera_hour: GaugeVec,
    /// Demand / measured capacity.
    pub packing: GaugeVec,
    /// Fleet-wide per hour, `part` = `total` or `idle_ingest` (ingest nodes streaming nothing).
    pub fleet: GaugeVec,
}

fn gauge_vec(r: &Registry, name: &str, help: &str, label: &str) -> prometheus::Result<GaugeVec> {
    metrics::register(r, GaugeVec::new(Opts::new(name, help), &[label])?)
}

impl CostMetrics {
    /// Registers everything in `r`.
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            per_hour: gauge_vec(
                r,
                "panoptes_coordinator_group_cost_per_hour",
                "What a worker group costs per hour at the [cost] prices: its live workers and its share of the ingest nodes",
                "group",
            )?,
            per_camera_hour: gauge_vec(
                r,
                "panoptes_coordinator_group_cost_per_camera_hour",
                "A worker group's cost per hour divided by its streaming cameras",
                "group",
            )?,
            packing: gauge_vec(
                r,
                "panoptes_coordinator_group_packing_ratio",
                "A worker group's demand over its measured capacity (the load degradation measures)",
                "group",
            )?,
            fleet: gauge_vec(
                r,
                "panoptes_coordinator_fleet_cost_per_hour",
                "Fleet cost per hour at the [cost] prices: every live member (total) and the ingest nodes streaming nothing (idle_ingest)",
                "part",
            )?,
        })
    }

    fn set(v: &GaugeVec, label: &str, value: Option<f64>) {
        match value {
            Some(x) => v.with_label_values(&[label]).set(x),
            None => {
                let _ = v.remove_label_values(&[label]);
            }
        }
    }
}

/// Cost state kept by the leader between rounds.
pub struct CostBook {
    cfg: CostConfig,
    metrics: CostMetrics,
    seen: BTreeSet<String>,
    last: CostReport,
}

/// `v` rounded to 6 decimals (what is published).
fn round6(v: f64) -> f64 {
    (v * 1e6).round() / 1e6
}

impl CostBook {
    /// No history.
    pub fn new(cfg: CostConfig, metrics: CostMetrics) -> Self {
        Self {
            cfg,
            metrics,
            seen: BTreeSet::new(),
            last: CostReport::default(),
        }
    }

    /// The last figures of `group`.
    pub fn group(&self, group: &str) -> Option<&GroupCost> {
        self.last.groups.get(group)
    }

    /// The last report.
    pub fn last(&self) -> &CostReport {
        &self.last
    }

    /// The inputs of one round: live members from `snap`, loads and streaming cameras from
    /// `deg` (which ran this round).
    pub fn inputs(snap: &Snapshot, deg: &Degradation) -> Inputs {
        let live = |kind: MemberKind| {
            snap.members
                .get(&kind)
                .into_iter()
                .flat_map(|m| m.values())
                .filter_map(|v| v.record.as_ref().map(|r| (v.id.as_str(), r)))
        };
        Inputs {
            workers: live(MemberKind::Worker)
                .map(|(_, r)| (r.group.clone(), r.node_class.clone()))
                .collect(),
            ingest: live(MemberKind::Ingest)
                .map(|(id, r)| {
                    let streaming = deg.streaming(id).cloned().unwrap_or_default();
                    (r.node_class.clone(), streaming)
                })
                .collect(),
            loads: deg
                .all_figures()
                .iter()
                .map(|(g, f)| {
                    let load = Load {
                        demand: f.demand,
                        capacity: f.capacity,
                        cameras: f.active,
                    };
                    (g.clone(), load)
                })
                .collect(),
        }
    }

    /// One round: computes, sets the metrics, keeps the figures (rounded) for publication.
    pub fn round(&mut self, snap: &Snapshot, deg: &Degradation) {
        let mut report = compute(&self.cfg, &Self::inputs(snap, deg));
        let m = &self.metrics;
        for (group, g) in &mut report.groups {
            for v in [
                &mut g.packing,
                &mut g.workers_per_hour,
                &mut g.ingest_per_hour,
                &mut g.per_hour,
                &mut g.per_camera_hour,
            ] {
                *v = v.map(round6);
            }
            CostMetrics::set(&m.per_hour, group, g.per_hour);
            CostMetrics::set(&m.per_camera_hour, group, g.per_camera_hour);
            CostMetrics::set(&m.packing, group, g.packing);
        }
        CostMetrics::set(&m.fleet, "total", report.total_per_hour);
        CostMetrics::set(&m.fleet, "idle_ingest", report.idle_ingest_per_hour);
        let groups: BTreeSet<String> = report.groups.keys().cloned().collect();
        for gone in self.seen.difference(&groups) {
            for v in [&m.per_hour, &m.per_camera_hour, &m.packing] {
                let _ = v.remove_label_values(&[gone]);
            }
        }
        self.seen = groups;
        self.last = report;
    }
}
