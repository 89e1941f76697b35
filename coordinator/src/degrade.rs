//! Degradation by priority: when a worker group's demand exceeds its measured capacity, the
//! sampling rate of its lower-priority cameras is capped at the ingest nodes (never below
//! their `min_fps`), and restored when capacity returns. Pure decisions, no I/O: the leader
//! ([`crate::reconcile`], through [`Degradation`]) feeds [`Degrader::decide`] each round and writes
//! the caps that changed into the cameras' assignment records (`fps_cap`).
//!
//! Contract of one decision, per group (`docs/coordinator.md`, "Degradation by priority"):
//! - **demand** is the load (load units/s: fps × width×height / 640×360) of the group's
//!   active cameras (streaming, as their ingest node reports) at their current rates (the
//!   cap, or the registry fps); **capacity** is the sum of the group's live workers'
//!   measured capacity. Without capacity (no live worker) nothing changes;
//! - **shed** at once when demand > `shed_above` × capacity: the budget `shed_above` ×
//!   capacity is allocated from scratch ([`allocate`]): every camera gets its minimum, then
//!   priority classes from the highest down get their full rate, the first class that does
//!   not fit shares what is left in proportion to its cameras' headroom, and lower classes
//!   stay at their minimum. When even every camera at its minimum exceeds the budget, the
//!   group is **saturated**: all at minimum, never below;
//! - **restore** when demand < `restore_below` × capacity has held for `restore_hold` (a
//!   step, then the hold again): rates rise towards the allocation of `restore_below` ×
//!   capacity, highest priority first, never falling. Between the two thresholds nothing
//!   changes (hysteresis), and a restore lands below the shed threshold, so the two do not
//!   alternate while capacity and demand stay;
//! - a cap is never below the camera's `min_fps`, and a cap at or above its fps is no cap.

mod apply;
mod metrics;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use apply::{Degradation, GroupFigures};
pub use metrics::DegradeMetrics;

/// `[degrade]` in the coordinator's configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DegradeConfig {
    /// Whether the leader caps cameras at all (`false`: every cap is removed).
    pub enabled: bool,
    /// Shed when demand exceeds this fraction of the group's capacity, down to it.
    pub shed_above: f64,
    /// Restore when demand stays below this fraction of capacity, up to it.
    pub restore_below: f64,
    /// How long demand must stay below `restore_below` before each restore step.
    #[serde(with = "humantime_serde")]
    pub restore_hold: Duration,
}

impl Default for DegradeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            shed_above: 0.75,
            restore_below: 0.6,
            restore_hold: Duration::from_secs(3),
        }
    }
}

impl DegradeConfig {
    /// Checks the thresholds: `0 < restore_below < shed_above ≤ 1`.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.restore_below > 0.0
            && self.restore_below < self.shed_above
            && self.shed_above <= 1.0)
        {
            return Err(format!(
                "degrade: need 0 < restore_below ({}) < shed_above ({}) <= 1",
                self.restore_below, self.shed_above
            ));
        }
        Ok(())
    }
}

/// A camera as degradation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Cam {
    /// Camera id.
    pub id: String,
    /// Priority, 0 (shed first) ..= 9 (shed last).
    pub priority: u8,
    /// Registry rate (frames/s).
    pub fps: u32,
    /// Lowest rate it may be capped to.
    pub min_fps: u32,
    /// Load units of one frame per second (width×height / 640×360).
    pub unit: f64,
    /// Whether it streams now (only active cameras load the workers).
    pub active: bool,
    /// Current cap (as written in its assignment record).
    pub cap: Option<u32>,
}

impl Cam {
    /// The current rate: the cap (at least the minimum) or the registry rate.
    pub fn rate(&self) -> u32 {
        normalize(self, self.cap).unwrap_or(self.fps)
    }
}

/// A cap as stored: `None` at or above the camera's fps, never below its minimum.
fn normalize(c: &Cam, cap: Option<u32>) -> Option<u32> {
    let min = c.min_fps.min(c.fps);
    cap.map(|v| v.max(min)).filter(|v| *v < c.fps)
}

/// What a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to change.
    Hold,
    /// Rates lowered to fit the shed budget.
    Shed,
    /// Rates raised.
    Restore,
    /// No capacity measured: caps left as they are.
    Unmeasured,
    /// Degradation disabled: caps removed.
    Disabled,
}

/// One group's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The new cap of every camera (`None`: full rate).
    pub caps: BTreeMap<String, Option<u32>>,
    /// Demand at the current rates, before the decision (load units).
    pub demand: f64,
    /// Demand at the new rates.
    pub demand_after: f64,
    /// Demand with every camera at full rate.
    pub full_demand: f64,
    /// Capacity (load units).
    pub capacity: f64,
    /// Every active camera at its minimum still exceeds the shed budget.
    pub saturated: bool,
    /// What was done.
    pub step: Step,
}

impl Decision {
    /// Cameras with a cap.
    pub fn degraded(&self) -> usize {
        self.caps.values().filter(|c| c.is_some()).count()
    }
}

/// Demand of the active cameras at the given rates.
fn demand(cams: &[Cam], rates: impl Fn(&Cam) -> u32) -> f64 {
    cams.iter()
        .filter(|c| c.active)
        .map(|c| c.unit * f64::from(rates(c)))
        .sum()
}

/// The rates that fit `budget` (see the module doc), and whether even the minimums did not.
/// Inactive cameras keep their current rate and use no budget.
pub fn allocate(cams: &[Cam], budget: f64) -> (BTreeMap<String, u32>, bool) {
    let mut rates: BTreeMap<String, u32> = cams
        .iter()
        .map(|c| {
            let r = if c.active {
                c.min_fps.min(c.fps)
            } else {
                c.rate()
            };
            (c.id.clone(), r)
        })
        .collect();
    let mut left = budget - demand(cams, |c| rates[&c.id]);
    let saturated = left < -1e-9;
    let mut classes: Vec<u8> = cams
        .iter()
        .filter(|c| c.active)
        .map(|c| c.priority)
        .collect();
    classes.sort_unstable_by(|a, b| b.cmp(a));
    classes.dedup();
    for p in classes {
        if left <= 1e-9 {
            break;
        }
        let class: Vec<&Cam> = cams
            .iter()
            .filter(|c| c.active && c.priority == p)
            .collect();
        let headroom = |c: &Cam| f64::from(c.fps - c.min_fps.min(c.fps));
        let wanted: f64 = class.iter().map(|c| c.unit * headroom(c)).sum();
        let share = if wanted <= left { 1.0 } else { left / wanted };
        for c in &class {
            let extra = (share * headroom(c) + 1e-9).floor() as u32;
            let r = rates.get_mut(&c.id).expect("every camera has a rate");
            *r += extra;
            left -= c.unit * f64::from(extra);
        }
        if share < 1.0 {
            break;
        }
    }
    (rates, saturated)
}

/// Decides the groups' caps round after round; remembers since when each group's demand has
/// been low enough to restore.
#[derive(Debug, Clone)]
pub struct Degrader {
    cfg: DegradeConfig,
    low_since: BTreeMap<String, u64>,
}

impl Degrader {
    /// A degrader without history.
    pub fn new(cfg: DegradeConfig) -> Self {
        Self {
            cfg,
            low_since: BTreeMap::new(),
        }
    }

    /// Forgets groups that are gone.
    pub fn retain_groups(&mut self, keep: impl Fn(&str) -> bool) {
        self.low_since.retain(|g, _| keep(g));
    }

    /// One decision for `group` at `now_ms` (a monotonic clock), with `capacity` measured
    /// and the group's cameras with their current caps.
    pub fn decide(&mut self, group: &str, capacity: f64, cams: &[Cam], now_ms: u64) -> Decision {
        let current: BTreeMap<String, Option<u32>> = cams
            .iter()
            .map(|c| (c.id.clone(), normalize(c, c.cap)))
            .collect();
        let now_demand = demand(cams, Cam::rate);
        let full_demand = demand(cams, |c| c.fps);
        let mut d = Decision {
            caps: current.clone(),
            demand: now_demand,
            demand_after: now_demand,
            full_demand,
            capacity,
            saturated: false,
            step: Step::Hold,
        };
        if !self.cfg.enabled {
            self.low_since.remove(group);
            d.caps.values_mut().for_each(|c| *c = None);
            d.demand_after = full_demand;
            d.step = Step::Disabled;
            return d;
        }
        if capacity <= 0.0 {
            self.low_since.remove(group);
            d.step = Step::Unmeasured;
            return d;
        }
        let shed_budget = self.cfg.shed_above * capacity;
        let restore_budget = self.cfg.restore_below * capacity;
        let (_, saturated) = allocate(cams, shed_budget);
        d.saturated = saturated;
        let capped = current.values().any(Option::is_some);
        let rates: BTreeMap<String, u32> = if now_demand > shed_budget + 1e-9 {
            self.low_since.remove(group);
            d.step = Step::Shed;
            allocate(cams, shed_budget).0
        } else if capped && now_demand < restore_budget - 1e-9 {
            let since = *self.low_since.entry(group.to_string()).or_insert(now_ms);
            if now_ms.saturating_sub(since) < self.cfg.restore_hold.as_millis() as u64 {
                return d;
            }
            self.low_since.insert(group.to_string(), now_ms);
            d.step = Step::Restore;
            let target = allocate(cams, restore_budget).0;
            let raised: BTreeMap<String, u32> = cams
                .iter()
                .map(|c| (c.id.clone(), c.rate().max(target[&c.id])))
                .collect();
            if demand(cams, |c| raised[&c.id]) <= restore_budget + 1e-9 {
                raised
            } else {
                target
            }
        } else {
            self.low_since.remove(group);
            return d;
        };
        d.caps = cams
            .iter()
            .map(|c| (c.id.clone(), normalize(c, Some(rates[&c.id]))))
            .collect();
        d.demand_after = demand(cams, |c| normalize(c, d.caps[&c.id]).unwrap_or(c.fps));
        if d.caps == current {
            d.step = Step::Hold;
        }
        d
    }
}
