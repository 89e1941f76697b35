//! The coordinator's metrics, in its own registry (served at `/metrics`).

use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
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
}

impl CoordinatorMetrics {
    /// Registers everything.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let m = Self {
            is_leader: IntGauge::new(
                "panoptes_coordinator_is_leader",
                "1 while this coordinator leads",
            )?,
            elections: IntCounter::new(
                "panoptes_coordinator_elections_total",
                "Elections won by this coordinator",
            )?,
            fenced_writes: IntCounter::new(
                "panoptes_coordinator_fenced_writes_total",
                "Writes rejected because this coordinator's leader token was stale",
            )?,
            actions: IntCounterVec::new(
                Opts::new(
                    "panoptes_coordinator_actions_total",
                    "Placement actions applied",
                ),
                &["kind", "action", "reason"],
            )?,
            round: Histogram::with_opts(
                HistogramOpts::new("panoptes_coordinator_round_seconds", "One placement round")
                    .buckets(vec![
                        0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
                    ]),
            )?,
            members: IntGaugeVec::new(
                Opts::new("panoptes_coordinator_members", "Members by kind and state"),
                &["kind", "state"],
            )?,
            desired_replicas: IntGaugeVec::new(
                Opts::new(
                    "panoptes_coordinator_desired_replicas",
                    "Worker replicas each group needs for its measured load at the target utilisation",
                ),
                &["group"],
            )?,
            group_load: GaugeVec::new(
                Opts::new(
                    "panoptes_coordinator_group_load",
                    "Load assigned to a worker group (load units)",
                ),
                &["group"],
            )?,
            cameras: IntGauge::new("panoptes_coordinator_cameras", "Registered cameras")?,
            failover_seen: Gauge::new(
                "panoptes_coordinator_last_failover_seconds",
                "Seconds between a dead member's last renewal and its items' new grants (last failover)",
            )?,
            registry,
        };
        m.registry.register(Box::new(m.is_leader.clone()))?;
        m.registry.register(Box::new(m.elections.clone()))?;
        m.registry.register(Box::new(m.fenced_writes.clone()))?;
        m.registry.register(Box::new(m.actions.clone()))?;
        m.registry.register(Box::new(m.round.clone()))?;
        m.registry.register(Box::new(m.members.clone()))?;
        m.registry.register(Box::new(m.desired_replicas.clone()))?;
        m.registry.register(Box::new(m.group_load.clone()))?;
        m.registry.register(Box::new(m.cameras.clone()))?;
        m.registry.register(Box::new(m.failover_seen.clone()))?;
        Ok(m)
    }
}
