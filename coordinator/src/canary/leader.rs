//! The leader's automatic canary verdicts, run from its placement round.
//!
//! Contract: at most once per second, for the groups of the round's snapshot (cameras' and
//! live workers' groups), the leader reads each rollout record (one pipelined `GET`); for
//! those with a running canary it reads the workers' report hashes (one pipelined
//! `HGETALL`), merges them and [`judge`]s. A promote or roll back is written with the shared
//! fenced compare-and-set ([`record::compare_and_set`]), audited by `coordinator`
//! (`model.canary.promoted` / `model.canary.rolled_back`), logged and counted in
//! `panoptes_coordinator_canary_verdicts_total{verdict, by="coordinator"}`. A lost race is
//! simply judged again next second. Errors never fail the round: they are logged and counted
//! in `panoptes_coordinator_canary_errors_total`.
//!
//! Time: a canary's age is the smaller of the wall-clock age (`started_ms`, written by the
//! coordinator that started it) and how long this leader has seen it on its monotonic
//! clock, so a skewed clock can never promote before `observe` really elapsed here (after a
//! leader change, the new leader's observation starts again).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use panoptes_coordinator_client::keys;
use panoptes_schemas::model::ModelRollout;
use prometheus::{IntCounter, IntCounterVec, Registry};
use redis::Connection;
use serde_json::json;

use super::{CanaryCriteria, Verdict, end, judge, merge_reports, record};
use crate::api::audit::{self, AuditEntry};
use crate::api::auth::Caller;
use crate::config::Role;

/// How often the leader judges running canaries.
pub const CHECK_EVERY_MS: u64 = 1000;

/// The worker groups of a round's snapshot: the cameras' and the live workers'.
pub fn groups_of(snap: &crate::state::Snapshot) -> BTreeSet<String> {
    let workers = snap
        .members
        .get(&panoptes_coordinator_client::MemberKind::Worker)
        .into_iter()
        .flat_map(|m| m.values())
        .filter_map(|v| v.record.as_ref().map(|r| r.group.clone()));
    snap.cameras
        .values()
        .map(|c| c.group.clone())
        .chain(workers)
        .collect()
}

/// The canary counters (shared by the operator API and the leader).
#[derive(Clone)]
pub struct CanaryMetrics {
    /// Canaries ended, by `verdict` (`promoted`, `rolled_back`) and `by` (`coordinator`:
    /// the automatic criteria; `operator`: a promote or rollback through the API).
    pub verdicts: IntCounterVec,
    /// Failed reads or writes of the leader's canary checks.
    pub errors: IntCounter,
}

impl CanaryMetrics {
    /// Registers both counters in `r`.
    pub fn new(r: &Registry) -> Result<Self, prometheus::Error> {
        Ok(Self {
            verdicts: panoptes_runtime::metrics::counter_vec(
                r,
                "panoptes_coordinator_canary_verdicts_total",
                "Canaries ended, by verdict (promoted, rolled_back) and by whom (coordinator, operator)",
                &["verdict", "by"],
            )?,
            errors: panoptes_runtime::metrics::counter(
                r,
                "panoptes_coordinator_canary_errors_total",
                "Failed Redis reads or writes of the leader's canary checks",
            )?,
        })
    }
}

/// The leader's canary state between rounds.
pub struct CanaryLeader {
    criteria: CanaryCriteria,
    metrics: CanaryMetrics,
    last_check_ms: Option<u64>,
    /// `(group, since_generation)` → when this leader first saw the canary (monotonic ms).
    first_seen: BTreeMap<(String, u64), u64>,
}

impl CanaryLeader {
    /// A leader side with no history.
    pub fn new(criteria: CanaryCriteria, metrics: CanaryMetrics) -> Self {
        Self {
            criteria,
            metrics,
            last_check_ms: None,
            first_seen: BTreeMap::new(),
        }
    }

    /// Forgets what this leader observed (after an election).
    pub fn reset(&mut self) {
        self.last_check_ms = None;
        self.first_seen.clear();
    }

    /// Judges the canaries of the snapshot's groups ([`groups_of`]) if the last check is a
    /// second old; `now_ms` is the leader's monotonic clock. Returns the Redis commands sent.
    pub fn round(
        &mut self,
        c: &mut Connection,
        token: u64,
        snap: &crate::state::Snapshot,
        now_ms: u64,
    ) -> u64 {
        if self
            .last_check_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < CHECK_EVERY_MS)
        {
            return 0;
        }
        let groups = groups_of(snap);
        if groups.is_empty() {
            return 0;
        }
        self.last_check_ms = Some(now_ms);
        let (mut sent, wall_ms) = (0, panoptes_coordinator_client::now_ms());
        if let Err(e) = self.check(c, token, &groups, now_ms, wall_ms, &mut sent) {
            self.metrics.errors.inc();
            tracing::warn!(error = %e, "canary check failed; retried next second");
        }
        sent
    }

    fn check(
        &mut self,
        c: &mut Connection,
        token: u64,
        groups: &BTreeSet<String>,
        now_ms: u64,
        wall_ms: u64,
        sent: &mut u64,
    ) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        for g in groups {
            pipe.cmd("GET").arg(keys::rollout(g));
        }
        *sent += 1;
        let raw: Vec<Option<String>> = pipe.query(c)?;
        let mut running: Vec<(&String, ModelRollout)> = Vec::new();
        for (g, r) in groups.iter().zip(raw) {
            match r.map(|r| ModelRollout::from_json(r.as_bytes())) {
                Some(Ok(rec)) if rec.canary.is_some() => running.push((g, rec)),
                Some(Err(e)) => {
                    self.metrics.errors.inc();
                    tracing::warn!(group = %g, error = %e, "unreadable rollout record");
                }
                _ => {}
            }
        }
        self.first_seen.retain(|(g, since), _| {
            running.iter().any(|(rg, r)| {
                *rg == g && r.canary.as_ref().map(|k| k.since_generation) == Some(*since)
            })
        });
        if running.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (g, r) in &running {
            let since = r.canary.as_ref().map_or(0, |k| k.since_generation);
            pipe.cmd("HGETALL").arg(keys::canary_report(g, since));
        }
        *sent += 1;
        let reports: Vec<BTreeMap<String, String>> = pipe.query(c)?;
        for ((group, cur), report) in running.into_iter().zip(reports) {
            let Some(canary) = cur.canary.as_ref() else {
                continue;
            };
            let seen = *self
                .first_seen
                .entry((group.clone(), canary.since_generation))
                .or_insert(now_ms);
            let elapsed_ms = wall_ms
                .saturating_sub(canary.started_ms)
                .min(now_ms.saturating_sub(seen));
            let m = merge_reports(&report, &cur.active, &canary.version);
            if m.unreadable > 0 {
                tracing::warn!(group = %group, fields = m.unreadable, "unreadable canary reports skipped");
            }
            let verdict = judge(
                &self.criteria,
                &m.baseline,
                &m.candidate,
                m.refused.as_deref(),
                Duration::from_millis(elapsed_ms),
            );
            let (promote, reason) = match verdict {
                Verdict::Hold(_) => continue,
                Verdict::Promote(r) => (true, r),
                Verdict::Rollback(r) => (false, r),
            };
            let next = end(
                &cur,
                canary,
                promote,
                format!("coordinator: {reason}"),
                wall_ms,
            );
            self.conclude(c, token, group, &cur, next, reason, sent)?;
        }
        Ok(())
    }

    /// Writes `next`, the end of `cur`'s canary, then audits, logs and counts it.
    #[allow(clippy::too_many_arguments)]
    fn conclude(
        &mut self,
        c: &mut Connection,
        token: u64,
        group: &str,
        cur: &ModelRollout,
        next: ModelRollout,
        reason: String,
        sent: &mut u64,
    ) -> redis::RedisResult<()> {
        *sent += record::CAS_COMMANDS;
        if !record::compare_and_set(c, group, Some(cur), &next, Some(token))? {
            tracing::debug!(
                group,
                "rollout changed while judging its canary; judged again next second"
            );
            return Ok(());
        }
        let outcome = next
            .last_canary
            .as_ref()
            .map(|o| o.verdict.clone())
            .unwrap_or_default();
        let candidate = cur
            .canary
            .as_ref()
            .map(|k| k.version.clone())
            .unwrap_or_default();
        let coordinator = Caller {
            name: "coordinator".into(),
            role: Role::Operator,
        };
        let entry = AuditEntry::change(&coordinator, &format!("model.canary.{outcome}"), group)
            .details(json!({
                "model": next.model,
                "candidate": candidate,
                "active": next.active,
                "previous": next.previous,
                "generation": next.generation,
                "reason": reason,
            }));
        *sent += 1;
        if let Err(e) = audit::append(c, &entry) {
            self.metrics.errors.inc();
            tracing::error!(error = %e, audit = ?entry, "audit entry of a canary verdict could not be stored; logged here instead");
        }
        self.metrics
            .verdicts
            .with_label_values(&[outcome.as_str(), "coordinator"])
            .inc();
        tracing::info!(group, model = %next.model, candidate = %candidate, verdict = %outcome, %reason, generation = next.generation, "canary ended by the coordinator");
        Ok(())
    }
}
