//! The coordinator's metrics, in its own registry (served at `/metrics`).

use panoptes_runtime::metrics;
use prometheus::{
    Gauge, GaugeVec, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Metric handles. Cheap to clone.
#[derive(Clone)]
pub struct CoordinatorMetrics {
    /// The registry served at `/metrics`.
    pub registry: Registry,
    /// 1 while this coordinator leads.
    pub is_leader: IntGauge,
    /// Elections won by this coordinator.
    pub elections: IntCounter,
    /// Writes rejected because this coordinator's token was stale.
    pub fenced_writes: IntCounter,
    /// Placement actions applied, by member kind, action and reason.
    pub actions: IntCounterVec,
    /// Duration of one placement round (read, plan, write).
    pub round: Histogram,
    /// Redis commands the leader's rounds sent (a pipelined command or a script call
    /// counts one); over `round`'s count: commands per round.
    pub round_redis_commands: IntCounter,
    /// Members by kind and state (alive, draining, dead).
    pub members: IntGaugeVec,
    /// Desired worker replicas per group, from measured load and capacity.
    pub desired_replicas: IntGaugeVec,
    /// Load assigned to each worker group (load units).
    pub group_load: GaugeVec,
    /// Registered cameras.
    pub cameras: IntGauge,
    /// Seconds from a member's lease expiry being seen to its items being granted again.
    pub failover_seen: Gauge,
    /// Times this coordinator, leading, found that Redis had lost its writes (its fencing
    /// token missing or lower).
    pub redis_lost_writes: IntCounter,
    /// Grant holds after an election on an emptied Redis (waiting for members' reports).
    pub reseed_holds: IntCounter,
    /// Camera registry restores after Redis lost it, by source (`copy`, `camera_file`,
    /// `failed`).
    pub registry_restores: IntCounterVec,
    /// Degradation by priority (`crate::degrade`).
    pub degrade: crate::degrade::DegradeMetrics,
    /// Cost and packing per worker group (`crate::cost`).
    pub cost: crate::cost::CostMetrics,
    /// Canary verdicts and the leader's canary check errors (`crate::canary`).
    pub canary: crate::canary::leader::CanaryMetrics,
}

impl CoordinatorMetrics {
    /// Registers everything.
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registry::new();
        Ok(Self {
            is_leader: metrics::gauge(
                &r,
                "panoptes_coordinator_is_leader",
                "1 while this coordinator leads",
            )?,
            elections: metrics::counter(
                &r,
                "panoptes_coordinator_elections_total",
                "Elections won by this coordinator",
            )?,
            fenced_writes: metrics::counter(
                &r,
                "panoptes_coordinator_fenced_writes_total",
                "Writes rejected because this coordinator's leader token was stale",
            )?,
            actions: metrics::counter_vec(
                &r,
                "panoptes_coordinator_actions_total",
                "Placement actions applied",
                &["kind", "action", "reason"],
            )?,
            round: metrics::histogram(
                &r,
                "panoptes_coordinator_round_seconds",
                "One placement round",
                vec![
                    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05,
                    0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5,
                ],
            )?,
            round_redis_commands: metrics::counter(
                &r,
                "panoptes_coordinator_round_redis_commands_total",
                "Redis commands sent by placement rounds (pipelined commands and script calls count one each)",
            )?,
            members: metrics::gauge_vec(
                &r,
                "panoptes_coordinator_members",
                "Members by kind and state",
                &["kind", "state"],
            )?,
            desired_replicas: metrics::gauge_vec(
                &r,
                "panoptes_coordinator_desired_replicas",
                "Worker replicas each group needs for its measured load at the target utilisation",
                &["group"],
            )?,
            group_load: metrics::register(
                &r,
                GaugeVec::new(
                    Opts::new(
                        "panoptes_coordinator_group_load",
                        "Load assigned to a worker group (load units)",
                    ),
                    &["group"],
                )?,
            )?,
            cameras: metrics::gauge(&r, "panoptes_coordinator_cameras", "Registered cameras")?,
            failover_seen: metrics::register(
                &r,
                Gauge::new(
                    "panoptes_coordinator_last_failover_seconds",
                    "Seconds between a dead member's last renewal and its items' new grants (last failover)",
                )?,
            )?,
            redis_lost_writes: metrics::counter(
                &r,
                "panoptes_coordinator_redis_lost_writes_total",
                "Times the leader found that Redis had lost its writes (fencing token missing or lower)",
            )?,
            reseed_holds: metrics::counter(
                &r,
                "panoptes_coordinator_reseed_holds_total",
                "Grant holds after an election on an emptied Redis, waiting for members to report held epochs",
            )?,
            registry_restores: metrics::counter_vec(
                &r,
                "panoptes_coordinator_registry_restores_total",
                "Camera registry restores after Redis lost it, by source",
                &["source"],
            )?,
            degrade: crate::degrade::DegradeMetrics::new(&r)?,
            cost: crate::cost::CostMetrics::new(&r)?,
            canary: crate::canary::leader::CanaryMetrics::new(&r)?,
            registry: r,
        })
    }
}
