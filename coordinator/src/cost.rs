//! Cost you can see: from a price per node class (`[cost] price_per_hour`), what each worker
//! group costs per hour and per camera-hour, and how tightly placement packed it. Pure: the
//! leader ([`crate::reconcile`], through [`CostBook`]) builds [`Inputs`] from the round's
//! snapshot and degradation's figures, calls [`compute`], sets the metrics and publishes each
//! group's [`GroupCost`] in `panoptes:groups` (field `cost`) for `panoptes status`.
//!
//! Contract (`docs/coordinator.md`, "Cost and packing"):
//! - a member's **price** is its node class's `price_per_hour` (currency-neutral units per
//!   hour); a class without a price is *unpriced*: every figure it would enter is `None` and
//!   the class is named, never counted as free. Without any price configured no cost figure
//!   exists at all (packing still does);
//! - every **live** member costs (draining ones too: the machine still runs); dead ones not;
//! - a **worker** costs its own group;
//! - an **ingest node** is shared by the groups of the cameras it streams, in proportion to
//!   their number (an ingest node streaming 3 cameras of `a` and 1 of `b` puts ¾ of its price
//!   on `a`); an ingest node streaming nothing costs no group: its price is
//!   `idle_ingest_per_hour`, fleet-wide;
//! - **cost per camera-hour** = the group's cost per hour / its streaming cameras (`None`
//!   without one);
//! - **packing** = demand / capacity, both exactly as degradation measures them (the load of
//!   the streaming cameras at their current rates, after this round's caps, over the sum of
//!   the live workers' measured capacity; `None` without capacity). Degradation keeps it at
//!   or below `degrade.shed_above` unless the group is saturated.

mod book;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use book::{CostBook, CostMetrics};

/// `[cost]` in the coordinator's configuration.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CostConfig {
    /// Price of one node of each class per hour (currency-neutral units), e.g.
    /// `{ cpu = 0.2, cuda = 2.5, ingest = 0.1 }`. Empty: no cost figures.
    pub price_per_hour: BTreeMap<String, f64>,
}

impl CostConfig {
    /// Checks the prices: finite, not negative, named classes.
    pub fn validate(&self) -> Result<(), String> {
        for (class, p) in &self.price_per_hour {
            if class.trim().is_empty() || !(p.is_finite() && *p >= 0.0) {
                return Err(format!(
                    "cost.price_per_hour: class {class:?} needs a name and a finite price >= 0, \
                     got {p}"
                ));
            }
        }
        Ok(())
    }

    /// Whether any price is configured.
    pub fn priced(&self) -> bool {
        !self.price_per_hour.is_empty()
    }
}

/// A worker group's load as degradation measured it this round.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Load {
    /// Load of the streaming cameras at their current rates (load units).
    pub demand: f64,
    /// Sum of the live workers' measured capacity (load units).
    pub capacity: f64,
    /// Streaming cameras.
    pub cameras: usize,
}

/// What one computation needs.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Live workers: `(group, node class)`.
    pub workers: Vec<(String, String)>,
    /// Live ingest nodes: `(node class, streaming cameras by worker group)`.
    pub ingest: Vec<(String, BTreeMap<String, usize>)>,
    /// Each group's load.
    pub loads: BTreeMap<String, Load>,
}

/// One worker group's cost and packing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupCost {
    /// Whether any price is configured (`false`: every cost figure is `None`).
    pub priced: bool,
    /// Streaming cameras.
    pub cameras: usize,
    /// Live workers.
    pub workers: usize,
    /// Demand / capacity (`None` without capacity).
    pub packing: Option<f64>,
    /// The group's workers per hour.
    pub workers_per_hour: Option<f64>,
    /// The group's share of the ingest nodes per hour.
    pub ingest_per_hour: Option<f64>,
    /// Workers + ingest share, per hour.
    pub per_hour: Option<f64>,
    /// Per hour / streaming cameras.
    pub per_camera_hour: Option<f64>,
    /// Node classes of the group's members without a price.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub unpriced: BTreeSet<String>,
}

/// The whole fleet's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CostReport {
    /// Per worker group.
    pub groups: BTreeMap<String, GroupCost>,
    /// Ingest nodes streaming nothing, per hour (attributed to no group).
    pub idle_ingest_per_hour: Option<f64>,
    /// Every live member, per hour.
    pub total_per_hour: Option<f64>,
}

/// A sum that turns `None` once an unpriced class enters it.
#[derive(Debug, Clone, Copy)]
struct Sum(Option<f64>);

impl Default for Sum {
    fn default() -> Self {
        Sum(Some(0.0))
    }
}

impl Sum {
    fn add(&mut self, v: Option<f64>) {
        self.0 = match (self.0, v) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
}

/// The figures of `inputs` at `cfg`'s prices (see the module doc).
pub fn compute(cfg: &CostConfig, inputs: &Inputs) -> CostReport {
    let priced = cfg.priced();
    let price = |class: &str| cfg.price_per_hour.get(class).copied();
    #[derive(Default)]
    struct Acc {
        workers: usize,
        workers_cost: Sum,
        ingest_cost: Sum,
        unpriced: BTreeSet<String>,
    }
    let mut acc: BTreeMap<String, Acc> = inputs
        .loads
        .keys()
        .map(|g| (g.clone(), Acc::default()))
        .collect();
    let (mut idle, mut total) = (Sum::default(), Sum::default());
    for (group, class) in &inputs.workers {
        let a = acc.entry(group.clone()).or_default();
        a.workers += 1;
        a.workers_cost.add(price(class));
        total.add(price(class));
        if price(class).is_none() {
            a.unpriced.insert(class.clone());
        }
    }
    for (class, streaming) in &inputs.ingest {
        let p = price(class);
        total.add(p);
        let n: usize = streaming.values().sum();
        if n == 0 {
            idle.add(p);
            continue;
        }
        for (group, k) in streaming.iter().filter(|(_, k)| **k > 0) {
            let a = acc.entry(group.clone()).or_default();
            a.ingest_cost.add(p.map(|p| p * *k as f64 / n as f64));
            if p.is_none() {
                a.unpriced.insert(class.clone());
            }
        }
    }
    let only_priced = |s: Sum| if priced { s.0 } else { None };
    let groups = acc
        .into_iter()
        .map(|(name, a)| {
            let load = inputs.loads.get(&name).copied().unwrap_or_default();
            let mut per_hour = a.workers_cost;
            per_hour.add(a.ingest_cost.0);
            let per_hour = only_priced(per_hour);
            let g = GroupCost {
                priced,
                cameras: load.cameras,
                workers: a.workers,
                packing: if load.capacity > 0.0 {
                    Some(load.demand / load.capacity)
                } else {
                    None
                },
                workers_per_hour: only_priced(a.workers_cost),
                ingest_per_hour: only_priced(a.ingest_cost),
                per_hour,
                per_camera_hour: per_hour
                    .filter(|_| load.cameras > 0)
                    .map(|c| c / load.cameras as f64),
                unpriced: if priced { a.unpriced } else { BTreeSet::new() },
            };
            (name, g)
        })
        .collect();
    CostReport {
        groups,
        idle_ingest_per_hour: only_priced(idle),
        total_per_hour: only_priced(total),
    }
}
