//! Degradation metrics: per-camera caps (series removed with the camera) and per-group
//! demand, capacity, degraded cameras and saturation (series removed with the group).

use std::collections::BTreeSet;

use panoptes_runtime::metrics;
use prometheus::{GaugeVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Metric handles. Cheap to clone.
#[derive(Clone)]
pub struct DegradeMetrics {
    /// The rate each camera is held to (its cap, or its registry fps when uncapped).
    pub camera_rate_cap: GaugeVec,
    /// Cameras capped per group.
    pub degraded_cameras: IntGaugeVec,
    /// Demand of each group's active cameras at their current rates (load units).
    pub group_demand: GaugeVec,
    /// Measured capacity of each group's live workers (load units).
    pub group_capacity: GaugeVec,
    /// 1 while every camera of the group at its minimum still exceeds the shed budget.
    pub saturated: IntGaugeVec,
    /// Decisions that changed caps, by group and step (`shed`, `restore`).
    pub steps: IntCounterVec,
}

fn gauge_vec(r: &Registry, name: &str, help: &str, label: &str) -> prometheus::Result<GaugeVec> {
    metrics::register(r, GaugeVec::new(Opts::new(name, help), &[label])?)
}

impl DegradeMetrics {
    /// Registers everything in `r`.
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        Ok(Self {
            camera_rate_cap: gauge_vec(
                r,
                "panoptes_coordinator_camera_rate_cap_fps",
                "Sampling rate a camera is held to: its degradation cap, or its registry fps",
                "camera",
            )?,
            degraded_cameras: metrics::gauge_vec(
                r,
                "panoptes_coordinator_degraded_cameras",
                "Cameras whose sampling rate is capped under overload, per worker group",
                &["group"],
            )?,
            group_demand: gauge_vec(
                r,
                "panoptes_coordinator_group_demand_load",
                "Load of a worker group's streaming cameras at their current rates (load units)",
                "group",
            )?,
            group_capacity: gauge_vec(
                r,
                "panoptes_coordinator_group_capacity_load",
                "Measured capacity of a worker group's live workers (load units)",
                "group",
            )?,
            saturated: metrics::gauge_vec(
                r,
                "panoptes_coordinator_degrade_saturated",
                "1 while a worker group is overloaded even with every camera at its minimum rate",
                &["group"],
            )?,
            steps: metrics::counter_vec(
                r,
                "panoptes_coordinator_degrade_steps_total",
                "Degradation decisions that changed caps, by worker group and step",
                &["group", "step"],
            )?,
        })
    }

    /// Removes the series of cameras and groups no longer in `cameras` / `groups`.
    pub fn forget(
        &self,
        seen_cams: &mut BTreeSet<String>,
        cameras: &BTreeSet<String>,
        seen_groups: &mut BTreeSet<String>,
        groups: &BTreeSet<String>,
    ) {
        for gone in seen_cams.difference(cameras) {
            let _ = self.camera_rate_cap.remove_label_values(&[gone]);
        }
        for gone in seen_groups.difference(groups) {
            let g: &[&str] = &[gone];
            let _ = self.degraded_cameras.remove_label_values(g);
            let _ = self.group_demand.remove_label_values(g);
            let _ = self.group_capacity.remove_label_values(g);
            let _ = self.saturated.remove_label_values(g);
        }
        seen_cams.clone_from(cameras);
        seen_groups.clone_from(groups);
    }
}
