//! Placement: pure decisions, no I/O. Given the members of one kind and the items they can
//! own, [`Planner::plan`] returns the grants and handover requests that bring the
//! assignment closer to what it should be. The leader applies them with fenced scripts.
//!
//! Rules, in order, per item (see `docs/coordinator.md`):
//! 1. an item that should not exist any more is unassigned;
//! 2. an item without a live owner is granted at once to the best candidate (or unassigned at
//!    a new epoch when there is none, so that a zombie owner is fenced by the epoch);
//! 3. an item its owner released is granted to the requested target (or the best candidate);
//! 4. a handover whose target is no longer a candidate is redirected; one not released within
//!    `handover_timeout` is forced;
//! 5. an item whose owner no longer accepts work (draining, broker unreachable, wrong group)
//!    or that sits outside its region while its region has a candidate gets a handover
//!    request;
//! 6. when utilisation (assigned load over capacity) of a group's members differs by more
//!    than the threshold: rebalancing handovers, at most `rebalance_moves` in flight at once
//!    (counting every move under way) and new ones started at most once per cooldown, each
//!    chosen on the loads as they will be once the moves under way complete.
//!
//! Candidates: alive, accepting members of the item's group; those in the item's region when
//! there are any, otherwise any region. The best has the lowest utilisation after taking it.
//!
//! Cost: a plan indexes the candidates once ([`index`]: by item group, then region), so
//! placing, checking and rebalancing an item costs in proportion to its candidates, not to
//! every member; the whole plan is O(I log I + I × candidates per item) for I items, with
//! no per-item scan of the items or of the members.

mod index;

use std::collections::{BTreeMap, BTreeSet};

use panoptes_coordinator_client::AssignRecord;

use index::CandidateIndex;

/// A member as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Member id.
    pub id: String,
    /// Region.
    pub region: String,
    /// Group (`None`: accepts any group, e.g. ingest nodes).
    pub group: Option<String>,
    /// Capacity in load units.
    pub capacity: f64,
    /// Lease alive.
    pub alive: bool,
    /// Takes new work (alive, not draining, broker reachable).
    pub accepting: bool,
}

/// An item as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Item id.
    pub id: String,
    /// Region it belongs in (a partition's cluster, a camera's home region).
    pub region: String,
    /// Group that must process it (`None`: any).
    pub group: Option<String>,
    /// Load in load units.
    pub load: f64,
    /// Whether the item should exist (registered camera, used cluster).
    pub active: bool,
    /// Its assignment record now.
    pub record: AssignRecord,
}

/// A decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Grant `item` to `owner` at a new epoch (`owner` empty: unassign).
    Grant {
        /// Item id.
        item: String,
        /// New owner, or empty.
        owner: String,
        /// Why (metric label).
        reason: &'static str,
    },
    /// Ask `owner` (at `epoch`) to hand `item` over to `target` (empty: cancel the request).
    Retarget {
        /// Item id.
        item: String,
        /// Current owner.
        owner: String,
        /// Current epoch.
        epoch: u64,
        /// Requested new owner, or empty.
        target: String,
        /// Why (metric label).
        reason: &'static str,
    },
}

/// Tuning.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    /// Least narrowing of a utilisation gap (fraction of it) worth a rebalancing move.
    pub rebalance_threshold: f64,
    /// Minimum time between two rounds that start rebalancing moves (ms).
    pub rebalance_cooldown_ms: u64,
    /// Most handovers in flight at once for a round to start rebalancing moves (at least 1;
    /// 1: one move at a time).
    pub rebalance_moves: usize,
    /// Handovers are forced after this long (ms).
    pub handover_timeout_ms: u64,
}

/// Placement for one kind of member; remembers when handovers started and the last
/// rebalancing move.
#[derive(Debug)]
pub struct Planner {
    opts: PlanOptions,
    last_rebalance_ms: u64,
    handover_since: BTreeMap<String, (u64, u64)>,
}

impl Planner {
    /// A planner with no history.
    pub fn new(opts: PlanOptions) -> Self {
        Self {
            opts,
            last_rebalance_ms: 0,
            handover_since: BTreeMap::new(),
        }
    }

    /// Decides what to change now: items in decreasing load order, each either retired,
    /// placed (no live owner), handed over (released), followed (moving) or sent home
    /// (misplaced); then, when nothing else changes and fewer than `rebalance_moves` items
    /// are moving, rebalancing moves up to that many in flight.
    pub fn plan(&mut self, nodes: &[Node], items: &[Item], now_ms: u64) -> Vec<Action> {
        let index = CandidateIndex::new(nodes, items);
        let mut round = Round::new(nodes, items, &index);
        self.forget_finished_handovers(items);
        let mut order: Vec<&Item> = items.iter().collect();
        order.sort_by(|a, b| b.load.total_cmp(&a.load).then(a.id.cmp(&b.id)));
        for it in order {
            let rec = &it.record;
            if !it.active {
                round.retire(it);
            } else if rec.owner.is_empty() || !round.alive(&rec.owner) {
                round.place(it);
            } else if rec.released == Some(rec.epoch) {
                round.complete_handover(it);
            } else if let Some(target) = &rec.target {
                let since = self.handover_started(it, now_ms);
                let timed_out = now_ms.saturating_sub(since) > self.opts.handover_timeout_ms;
                round.follow_move(it, target, timed_out);
            } else {
                round.send_home_if_misplaced(it);
            }
        }
        let room = self
            .opts
            .rebalance_moves
            .max(1)
            .saturating_sub(round.moving);
        if room > 0
            && round.actions.is_empty()
            && now_ms.saturating_sub(self.last_rebalance_ms) >= self.opts.rebalance_cooldown_ms
        {
            let moves = self.rebalance(&round, items, room);
            if !moves.is_empty() {
                self.last_rebalance_ms = now_ms;
                round.actions.extend(moves);
            }
        }
        round.actions
    }

    /// Forgets the handover clocks of items no longer moving.
    fn forget_finished_handovers(&mut self, items: &[Item]) {
        if self.handover_since.is_empty() {
            return;
        }
        let moving: BTreeMap<&str, u64> = items
            .iter()
            .filter(|i| i.record.target.is_some())
            .map(|i| (i.id.as_str(), i.record.epoch))
            .collect();
        self.handover_since
            .retain(|id, (epoch, _)| moving.get(id.as_str()) == Some(epoch));
    }

    /// When the item's current move (at its current epoch) was first seen.
    fn handover_started(&mut self, it: &Item, now_ms: u64) -> u64 {
        self.handover_since
            .entry(it.id.clone())
            .or_insert((it.record.epoch, now_ms))
            .1
    }

    /// Up to `room` rebalancing moves, chosen one after the other on the loads as they will
    /// be: the moves under way counted at their targets, then each chosen move.
    fn rebalance<'a>(&self, round: &Round<'a>, items: &'a [Item], room: usize) -> Vec<Action> {
        let mut load = round.load.clone();
        for it in items.iter().filter(|i| i.active) {
            let rec = &it.record;
            if let Some(t) = &rec.target
                && rec.released != Some(rec.epoch)
                && round.alive(&rec.owner)
                && round.by_id.contains_key(t.as_str())
            {
                shift(&mut load, &rec.owner, t, it.load);
            }
        }
        let mut chosen: Vec<Action> = Vec::new();
        let mut taken = BTreeSet::new();
        while chosen.len() < room {
            let Some((it, from, to)) = self.best_move(round, items, &load, &taken) else {
                break;
            };
            shift(&mut load, from, to, it.load);
            taken.insert(it.id.as_str());
            chosen.push(retarget(it, to, "rebalance"));
        }
        chosen
    }

    /// The best move between two members of the item's candidates (items in `taken` are
    /// already moving) that narrows the gap of their utilisations by at least
    /// `rebalance_threshold` of the most one item can narrow it (twice its utilisation): 8–0
    /// and 3–1 items move, 2–1 does not (it would only mirror the gap).
    fn best_move<'a>(
        &self,
        round: &Round<'a>,
        items: &'a [Item],
        load: &BTreeMap<String, f64>,
        taken: &BTreeSet<&str>,
    ) -> Option<(&'a Item, &'a str, &'a str)> {
        let util = |n: &Node| load.get(&n.id).copied().unwrap_or(0.0) / n.capacity.max(1e-9);
        let mut best_move: Option<(f64, &Item, &Node, &Node)> = None;
        for it in items
            .iter()
            .filter(|i| i.active && i.record.target.is_none() && !taken.contains(i.id.as_str()))
        {
            let Some(from) = round
                .by_id
                .get(it.record.owner.as_str())
                .filter(|n| n.alive && n.accepting)
            else {
                continue;
            };
            for to in round
                .index
                .candidates(it, Some(&from.id))
                .filter(|to| to.region == from.region)
            {
                let before = util(from) - util(to);
                if before <= 1e-12 {
                    continue;
                }
                let after = ((util(from) - it.load / from.capacity.max(1e-9))
                    - (util(to) + it.load / to.capacity.max(1e-9)))
                .abs();
                let step = it.load / from.capacity.max(1e-9) + it.load / to.capacity.max(1e-9);
                let gain = if step > 0.0 {
                    (before - after) / step
                } else {
                    0.0
                };
                if gain >= self.opts.rebalance_threshold
                    && best_move.as_ref().is_none_or(|(g, ..)| gain > *g)
                {
                    best_move = Some((gain, it, from, to));
                }
            }
        }
        best_move.map(|(_, it, from, to)| (it, from.id.as_str(), to.id.as_str()))
    }
}

/// One planning pass: the members, their candidate index, the load each carries as decided
/// so far, the actions decided and how many items are moving.
struct Round<'a> {
    index: &'a CandidateIndex<'a>,
    by_id: BTreeMap<&'a str, &'a Node>,
    load: BTreeMap<String, f64>,
    actions: Vec<Action>,
    moving: usize,
}

impl<'a> Round<'a> {
    /// Starts from the load of the active items on live owners.
    fn new(nodes: &'a [Node], items: &[Item], index: &'a CandidateIndex<'a>) -> Self {
        let mut round = Self {
            index,
            by_id: nodes.iter().map(|n| (n.id.as_str(), n)).collect(),
            load: nodes.iter().map(|n| (n.id.clone(), 0.0)).collect(),
            actions: Vec::new(),
            moving: 0,
        };
        let carried: Vec<&Item> = items
            .iter()
            .filter(|i| i.active && round.alive(&i.record.owner))
            .collect();
        for it in carried {
            round.add(&it.record.owner, it.load);
        }
        round
    }

    fn alive(&self, id: &str) -> bool {
        self.by_id.get(id).is_some_and(|n| n.alive)
    }

    fn add(&mut self, id: &str, l: f64) {
        *self.load.entry(id.to_string()).or_default() += l;
    }

    fn best(&self, it: &Item, except: Option<&str>) -> Option<String> {
        best(self.index, &self.load, it, except)
    }

    /// A removed item loses its owner.
    fn retire(&mut self, it: &Item) {
        let owner = it.record.owner.as_str();
        if owner.is_empty() {
            return;
        }
        self.actions.push(grant(it, "", "removed"));
        if self.alive(owner) {
            sub(&mut self.load, owner, it.load);
        }
    }

    /// An item without a live owner goes to the best candidate.
    fn place(&mut self, it: &Item) {
        let unowned = it.record.owner.is_empty();
        match self.best(it, None) {
            Some(n) => {
                let reason = if unowned { "unassigned" } else { "owner_dead" };
                self.actions.push(grant(it, &n, reason));
                self.add(&n, it.load);
            }
            None if !unowned => self.actions.push(grant(it, "", "owner_dead_no_candidate")),
            None => {}
        }
    }

    /// The owner released the item: it goes to its target, or the best other candidate.
    fn complete_handover(&mut self, it: &Item) {
        let owner = it.record.owner.as_str();
        let target = it
            .record
            .target
            .clone()
            .filter(|t| self.index.contains(it, t))
            .or_else(|| self.best(it, Some(owner)));
        sub(&mut self.load, owner, it.load);
        match target {
            Some(t) => {
                self.add(&t, it.load);
                self.actions.push(grant(it, &t, "handover"));
            }
            None => self.actions.push(grant(it, "", "released_no_candidate")),
        }
    }

    /// A moving item: a target that can no longer take it is replaced; a handover that
    /// took too long is forced.
    fn follow_move(&mut self, it: &Item, target: &str, timed_out: bool) {
        let owner = it.record.owner.as_str();
        self.moving += 1;
        if !self.index.contains(it, target) {
            let next = self.best(it, Some(owner)).unwrap_or_default();
            if next != target {
                self.actions.push(retarget(it, &next, "target_gone"));
            }
        } else if timed_out {
            sub(&mut self.load, owner, it.load);
            self.add(target, it.load);
            self.actions.push(grant(it, target, "handover_timeout"));
        }
    }

    /// An item on a leaving member, on a member of another group, or away from its home
    /// region while a candidate there exists, starts moving to the best candidate.
    fn send_home_if_misplaced(&mut self, it: &Item) {
        let owner = it.record.owner.as_str();
        let owner_node = self.by_id[owner];
        let misplaced = !owner_node.accepting
            || it
                .group
                .as_ref()
                .is_some_and(|g| owner_node.group.as_ref().is_some_and(|og| og != g))
            || (owner_node.region != it.region && self.index.any_in_region(it, Some(owner)));
        if misplaced && let Some(t) = self.best(it, Some(owner)) {
            let reason = if owner_node.accepting {
                "region_home"
            } else {
                "owner_leaving"
            };
            self.actions.push(retarget(it, &t, reason));
            self.moving += 1;
        }
    }
}

fn sub(load: &mut BTreeMap<String, f64>, id: &str, l: f64) {
    if let Some(v) = load.get_mut(id) {
        *v -= l;
    }
}

/// Moves `l` of load from `from` to `to`.
fn shift(load: &mut BTreeMap<String, f64>, from: &str, to: &str, l: f64) {
    sub(load, from, l);
    *load.entry(to.to_string()).or_default() += l;
}

fn grant(it: &Item, owner: &str, reason: &'static str) -> Action {
    Action::Grant {
        item: it.id.clone(),
        owner: owner.into(),
        reason,
    }
}

fn retarget(it: &Item, target: &str, reason: &'static str) -> Action {
    Action::Retarget {
        item: it.id.clone(),
        owner: it.record.owner.clone(),
        epoch: it.record.epoch,
        target: target.into(),
        reason,
    }
}

/// The candidate of `it` (minus `except`) with the lowest utilisation after taking it.
fn best(
    index: &CandidateIndex<'_>,
    load: &BTreeMap<String, f64>,
    it: &Item,
    except: Option<&str>,
) -> Option<String> {
    index
        .candidates(it, except)
        .min_by(|a, b| {
            let ua = (load.get(&a.id).copied().unwrap_or(0.0) + it.load) / a.capacity.max(1e-9);
            let ub = (load.get(&b.id).copied().unwrap_or(0.0) + it.load) / b.capacity.max(1e-9);
            ua.total_cmp(&ub).then(a.id.cmp(&b.id))
        })
        .map(|n| n.id.clone())
}

#[cfg(test)]
mod tests;
