//! The driver's decision for one pass, as a pure function: what the coordinator grants
//! ([`Desired::grants`](crate::Desired)) against what the node runs, to what to stop, what
//! to run and what to hand over. No I/O and no clock, so every rule is unit-tested here.
//!
//! Rules, per item (a camera id or a `<cluster>:<partition>`):
//!
//! - an item with a handover in flight is left alone (its handover thread owns it);
//! - fail closed (`fenced`): nothing runs and nothing is handed over; every item runs
//!   stopped;
//! - a grant already released at its epoch is done: it does not run;
//! - a grant the coordinator asks to move (`target` set) is handed over, whether it runs
//!   here or not (a grant that does not run here has nothing to finish and is released at
//!   once); `ran` says whether it runs here at the grant's epoch;
//! - any other grant runs (the runner starts it, or keeps it running; a run at an older
//!   epoch is the runner's to restart or continue);
//! - a running item that is none of the above (no longer granted, released, fenced) stops.

use std::collections::{BTreeMap, BTreeSet};

use crate::member::Grant;

/// What one pass does.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Running items to stop at once, committing nothing more.
    pub stop: Vec<String>,
    /// Grants to run (started if they do not run yet).
    pub run: Vec<Grant>,
    /// Grants to hand over, each with whether it runs here at the grant's epoch.
    pub hand_over: Vec<(Grant, bool)>,
}

/// Decides one pass. `running`: item → epoch of what runs here; `busy`: items with a
/// handover in flight; `released`: `(item, epoch)` pairs already released; `fenced`: the
/// node fails closed (Redis unreachable for too long).
pub fn plan(
    grants: &BTreeMap<String, Grant>,
    running: &BTreeMap<String, u64>,
    busy: &BTreeSet<String>,
    released: &BTreeSet<(String, u64)>,
    fenced: bool,
) -> Plan {
    let mut out = Plan::default();
    if !fenced {
        for (item, g) in grants {
            if busy.contains(item) || released.contains(&(item.clone(), g.epoch())) {
                continue;
            }
            if g.moving() {
                let ran = running.get(item) == Some(&g.epoch());
                out.hand_over.push((g.clone(), ran));
            } else {
                out.run.push(g.clone());
            }
        }
    }
    let kept: BTreeSet<&str> = out
        .run
        .iter()
        .chain(out.hand_over.iter().map(|(g, _)| g))
        .map(|g| g.item.as_str())
        .collect();
    out.stop = running
        .keys()
        .filter(|item| !busy.contains(*item) && !kept.contains(item.as_str()))
        .cloned()
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::AssignRecord;

    fn grant(item: &str, epoch: u64, target: Option<&str>) -> Grant {
        Grant {
            item: item.into(),
            record: AssignRecord {
                owner: "me".into(),
                epoch,
                target: target.map(Into::into),
                ..Default::default()
            },
        }
    }

    fn grants(list: &[Grant]) -> BTreeMap<String, Grant> {
        list.iter().map(|g| (g.item.clone(), g.clone())).collect()
    }

    fn running(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
        list.iter().map(|(i, e)| (i.to_string(), *e)).collect()
    }

    fn items(gs: &[Grant]) -> Vec<&str> {
        gs.iter().map(|g| g.item.as_str()).collect()
    }

    #[test]
    fn new_and_running_grants_run_and_the_rest_stops() {
        let g = grants(&[grant("a", 3, None), grant("b", 1, None)]);
        let r = running(&[("b", 1), ("gone", 2)]);
        let p = plan(&g, &r, &BTreeSet::new(), &BTreeSet::new(), false);
        assert_eq!(items(&p.run), ["a", "b"]);
        assert_eq!(p.stop, ["gone"]);
        assert!(p.hand_over.is_empty());
    }

    #[test]
    fn a_grant_at_a_new_epoch_runs_and_the_runner_decides() {
        let g = grants(&[grant("a", 4, None)]);
        let p = plan(
            &g,
            &running(&[("a", 3)]),
            &BTreeSet::new(),
            &BTreeSet::new(),
            false,
        );
        assert_eq!(items(&p.run), ["a"]);
        assert!(p.stop.is_empty());
    }

    #[test]
    fn moving_grants_are_handed_over_whether_they_run_or_not() {
        let g = grants(&[
            grant("a", 2, Some("other")),
            grant("b", 5, Some("other")),
            grant("c", 7, Some("other")),
        ]);
        let r = running(&[("a", 2), ("c", 6)]);
        let p = plan(&g, &r, &BTreeSet::new(), &BTreeSet::new(), false);
        let h: Vec<(&str, bool)> = p
            .hand_over
            .iter()
            .map(|(g, ran)| (g.item.as_str(), *ran))
            .collect();
        assert_eq!(h, [("a", true), ("b", false), ("c", false)]);
        assert!(p.stop.is_empty(), "handed over, not stopped: {:?}", p.stop);
        assert!(p.run.is_empty());
    }

    #[test]
    fn a_target_already_released_is_not_a_move() {
        let mut g = grant("a", 2, Some("other"));
        g.record.released = Some(2);
        assert!(!g.moving());
        let p = plan(
            &grants(&[g]),
            &BTreeMap::new(),
            &BTreeSet::new(),
            &BTreeSet::new(),
            false,
        );
        assert_eq!(items(&p.run), ["a"]);
    }

    #[test]
    fn items_with_a_handover_in_flight_are_left_alone() {
        let g = grants(&[grant("a", 2, Some("other")), grant("b", 1, None)]);
        let busy: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        let p = plan(&g, &running(&[("a", 2)]), &busy, &BTreeSet::new(), false);
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn released_grants_neither_run_nor_move_again() {
        let g = grants(&[grant("a", 2, Some("other")), grant("b", 3, None)]);
        let released: BTreeSet<(String, u64)> = [("a".into(), 2), ("b".into(), 3)].into();
        let p = plan(
            &g,
            &running(&[("b", 3)]),
            &BTreeSet::new(),
            &released,
            false,
        );
        assert!(p.run.is_empty() && p.hand_over.is_empty());
        assert_eq!(p.stop, ["b"]);
        // Released at an older epoch only: granted again, it runs.
        let older: BTreeSet<(String, u64)> = [("b".into(), 2)].into();
        let p = plan(&g, &BTreeMap::new(), &BTreeSet::new(), &older, false);
        assert_eq!(items(&p.run), ["b"]);
    }

    #[test]
    fn fenced_stops_everything_but_handovers_in_flight() {
        let g = grants(&[grant("a", 1, None), grant("b", 1, Some("x"))]);
        let busy: BTreeSet<String> = ["c".to_string()].into();
        let r = running(&[("a", 1), ("b", 1), ("c", 1)]);
        let p = plan(&g, &r, &busy, &BTreeSet::new(), true);
        assert!(p.run.is_empty() && p.hand_over.is_empty());
        assert_eq!(p.stop, ["a", "b"]);
    }
}
