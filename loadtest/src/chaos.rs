//! `panoptes-loadtest chaos --scenario NAME`: a whole coordinated deployment as real processes
//! ([`crate::stack::Stack`]), one kind of fault injected into it, the time it took to recover
//! measured against a bound, and the checker's accounting of every region. A run writes
//! `report.json` and `report.md` to its output folder and fails (non-zero exit) when the
//! checker finds loss, reordering or duplicates that the fault does not explain, or when a
//! recovery took longer than its bound.
//!
//! Scenarios ([`SCENARIOS`]; what each does is in `docs/loadtest.md`, "Chaos scenarios"):
//! `worker-kill`, `worker-pause`, `ingest-kill`, `leader-kill`, `redis-restart`,
//! `redis-restart-empty`, `broker-down`, `broker-down-coordinator`, `camera-flap`, `network`.
//!
//! Duplicates: on the development broker a killed or paused worker's uncommitted transaction
//! is visible to `read_committed` readers, so frames it had processed are seen again when its
//! successor processes them at a higher epoch. The checker counts those by the worker that
//! wrote the first record (`duplicated_across_epochs`); they are accepted only for the workers
//! the scenario killed or paused (its culprits; in the broker outages, the workers that gave
//! a partition run up with its transaction open, which their coordinator re-granted at a
//! higher epoch), and every other duplicate fails the run.

mod harness;
pub mod proxy;
mod scenarios;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use panoptes_checker::Report;
use serde::{Deserialize, Serialize};

/// Every scenario, in the order `--scenario all` runs them.
pub const SCENARIOS: &[&str] = &[
    "worker-kill",
    "worker-pause",
    "ingest-kill",
    "leader-kill",
    "redis-restart",
    "redis-restart-empty",
    "broker-down",
    "broker-down-coordinator",
    "camera-flap",
    "network",
];

/// Scenarios that exist but are not part of `all` (nor of CI) because they fail today; each
/// is documented in `docs/loadtest.md` with its evidence.
pub const KNOWN_FAILING: &[&str] = &[];

/// Size of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    /// Small and short (CI): 4 cameras, 2 workers, well under a minute.
    Ci,
    /// Longer observation windows, more cameras and workers, repeated faults.
    Full,
}

/// Arguments of `panoptes-loadtest chaos`.
#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Scenario to run (see the list in `docs/loadtest.md`), or `all`.
    #[arg(long)]
    pub scenario: String,
    /// Output folder (default `loadtest/reports/chaos-<scenario>-<timestamp>`; with `all`,
    /// one subfolder per scenario).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// `ci` (small and short) or `full`.
    #[arg(long, value_enum, default_value = "ci")]
    pub scale: Scale,
}

/// Outcome of a scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Clean accounting and every recovery within its bound.
    Passed,
    /// See [`ScenarioReport::failures`].
    Failed,
    /// Not run on this machine; the reason is in [`ScenarioReport::skipped`].
    Skipped,
}

/// A fault (or another marked moment) of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultEvent {
    /// Seconds since the stack was settled (the start of the observed run).
    pub at_s: f64,
    /// Wall clock (ms since the epoch).
    pub wall_ms: u64,
    /// What happened, e.g. `kill -9 worker w1`.
    pub label: String,
}

/// One measured recovery.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recovery {
    /// What recovered, e.g. `partition 3 (w1 killed)`.
    pub what: String,
    /// Fault → recovered (ms); `None` when it did not recover within the scenario's wait.
    pub ms: Option<u64>,
    /// The bound it is judged against (ms).
    pub bound_ms: u64,
}

impl Recovery {
    /// Recovered within the bound.
    pub fn ok(&self) -> bool {
        self.ms.is_some_and(|m| m <= self.bound_ms)
    }
}

/// The checker's figures of one region, with the scenario's judgement of its duplicates.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionAccounting {
    /// Duplicates explained by the culprits' uncommitted transactions.
    pub explained_duplicates: u64,
    /// Duplicates nothing explains (must be 0).
    pub unexplained_duplicates: u64,
    /// The checker's report.
    pub checker: Report,
}

/// The result of one scenario run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub scenario: String,
    /// Scale.
    pub scale: Scale,
    /// Start (UTC).
    pub started_utc: String,
    /// Outcome.
    pub verdict: Verdict,
    /// Why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// What the scenario does, in a sentence or two.
    pub description: String,
    /// The deployment (cameras, nodes, leases).
    pub setup: String,
    /// Faults and other marked moments, in order.
    pub faults: Vec<FaultEvent>,
    /// Measured recoveries.
    pub recoveries: Vec<Recovery>,
    /// Workers killed or paused, or whose transactions the fault left open (see the
    /// scenarios): the only ones whose cross-epoch duplicates are accepted.
    pub culprits: BTreeSet<String>,
    /// Per camera, the longest time between two consecutive detection records arriving,
    /// from the first fault to the end of intake (ms).
    pub longest_detection_gap_ms: BTreeMap<String, u64>,
    /// Per region, the checker's accounting.
    pub regions: BTreeMap<String, RegionAccounting>,
    /// Observations (restarts by the supervisor, probes, counters read from nodes).
    pub notes: Vec<String>,
    /// Why it failed (empty when it passed).
    pub failures: Vec<String>,
    /// Files written beside the report (charts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub charts: Vec<String>,
    /// Wall time of the whole run, setup included (s).
    pub seconds: f64,
    /// The error budget the run burned against the fleet's objectives ([`crate::slo`]).
    #[serde(default)]
    pub slo: Option<crate::slo::SloBurn>,
}

impl ScenarioReport {
    pub(crate) fn new(scenario: &str, scale: Scale) -> Self {
        Self {
            scenario: scenario.into(),
            scale,
            started_utc: panoptes_testkit::sys::utc_timestamp(std::time::SystemTime::now()),
            verdict: Verdict::Failed,
            skipped: None,
            description: String::new(),
            setup: String::new(),
            faults: Vec::new(),
            recoveries: Vec::new(),
            culprits: BTreeSet::new(),
            longest_detection_gap_ms: BTreeMap::new(),
            regions: BTreeMap::new(),
            notes: Vec::new(),
            failures: Vec::new(),
            charts: Vec::new(),
            seconds: 0.0,
            slo: None,
        }
    }

    /// Passed.
    pub fn passed(&self) -> bool {
        self.verdict == Verdict::Passed
    }

    /// Sets the verdict from the recoveries, the accounting and the failures noted so far.
    pub(crate) fn judge(&mut self) {
        if self.skipped.is_some() {
            self.verdict = Verdict::Skipped;
            return;
        }
        for r in &self.recoveries {
            if !r.ok() {
                let took =
                    r.ms.map_or("never (within the wait)".into(), |m| format!("{m} ms"));
                self.failures.push(format!(
                    "recovery of {} took {took}, bound {} ms",
                    r.what, r.bound_ms
                ));
            }
        }
        if self.regions.is_empty() {
            self.failures.push("no checker report".into());
        }
        for (name, acc) in &mut self.regions {
            let t = &acc.checker.total;
            let explained: u64 = t
                .duplicated_across_epochs
                .iter()
                .filter(|(w, _)| self.culprits.contains(*w))
                .map(|(_, n)| n)
                .sum();
            acc.explained_duplicates = explained.min(t.duplicated);
            acc.unexplained_duplicates = t.duplicated.saturating_sub(explained);
            if t.frames == 0 {
                self.failures
                    .push(format!("region {name}: no frames were read"));
            }
            if t.lost > 0 || acc.checker.malformed_lost > 0 {
                self.failures.push(format!(
                    "region {name}: {} frames lost, {} malformed frames lost (examples: {:?})",
                    t.lost,
                    acc.checker.malformed_lost,
                    acc.checker
                        .cameras
                        .iter()
                        .filter(|(_, c)| !c.lost_examples.is_empty())
                        .map(|(id, c)| format!("{id}: {:?}", c.lost_examples))
                        .collect::<Vec<_>>()
                ));
            }
            if t.reordered > 0 {
                self.failures
                    .push(format!("region {name}: {} records reordered", t.reordered));
            }
            if acc.unexplained_duplicates > 0 {
                self.failures.push(format!(
                    "region {name}: {} duplicates not explained by a culprit (a killed or \
                     paused worker, or one whose transaction the fault left open) (across \
                     epochs by first writer: {:?}; culprits {:?})",
                    acc.unexplained_duplicates, t.duplicated_across_epochs, self.culprits
                ));
            }
        }
        self.verdict = if self.failures.is_empty() {
            Verdict::Passed
        } else {
            Verdict::Failed
        };
    }

    /// A Markdown report.
    pub fn to_markdown(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "# Chaos scenario `{}` ({:?} scale)\n",
            self.scenario, self.scale
        );
        let verdict = match self.verdict {
            Verdict::Passed => "**passed**".to_string(),
            Verdict::Failed => "**FAILED**".to_string(),
            Verdict::Skipped => format!(
                "**skipped**: {}",
                self.skipped.as_deref().unwrap_or_default()
            ),
        };
        let _ = writeln!(
            s,
            "Started {}, {:.0} s in all. Verdict: {verdict}.\n",
            self.started_utc, self.seconds
        );
        let _ = writeln!(s, "{}\n\nSetup: {}\n", self.description, self.setup);
        md_bullets(&mut s, "Failures", &self.failures);
        if !self.faults.is_empty() {
            s.push_str("## Faults\n\n| t (s) | event |\n| ---: | --- |\n");
            for f in &self.faults {
                let _ = writeln!(s, "| {:.1} | {} |", f.at_s, f.label);
            }
            s.push('\n');
        }
        if !self.recoveries.is_empty() {
            s.push_str(
                "## Recovery\n\n| what | took | bound | ok |\n| --- | ---: | ---: | --- |\n",
            );
            for r in &self.recoveries {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} ms | {} |",
                    r.what,
                    r.ms.map_or("never".into(), |m| format!("{m} ms")),
                    r.bound_ms,
                    if r.ok() { "yes" } else { "**no**" }
                );
            }
            s.push('\n');
        }
        if !self.longest_detection_gap_ms.is_empty() {
            s.push_str(
                "Longest time between two detection records of a camera, from the first fault \
                 to the end of intake: ",
            );
            let parts: Vec<String> = self
                .longest_detection_gap_ms
                .iter()
                .map(|(c, g)| format!("`{c}` {g} ms"))
                .collect();
            let _ = writeln!(s, "{}.\n", parts.join(", "));
        }
        if let Some(slo) = &self.slo {
            s.push_str(&slo.to_markdown(&crate::slo::Objectives::default()));
        }
        for (name, acc) in &self.regions {
            let t = &acc.checker.total;
            let _ = writeln!(s, "## Checker, region `{name}`\n");
            s.push_str(&acc.checker.to_markdown());
            let _ = writeln!(
                s,
                "\nDuplicated {}: {} across epochs by first writer {:?} ({} explained by the \
                 culprits {:?}, {} unexplained). Skipped by reason {:?}; dead-lettered \
                 {:?}; superseded (zombie output discarded by the epoch rule) {}; gaps (frames never \
                 published) {}.\n",
                t.duplicated,
                t.duplicated_across_epochs_total(),
                t.duplicated_across_epochs,
                acc.explained_duplicates,
                self.culprits,
                acc.unexplained_duplicates,
                t.skipped,
                t.dead_lettered,
                t.superseded,
                t.gaps
            );
        }
        md_bullets(&mut s, "Notes", &self.notes);
        if !self.charts.is_empty() {
            s.push_str("## Charts\n\n");
            for c in &self.charts {
                let _ = writeln!(s, "![{c}]({c})");
            }
        }
        s
    }

    /// Writes `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(self)?)?;
        std::fs::write(dir.join("report.md"), self.to_markdown())?;
        Ok(())
    }
}

/// A Markdown section `title` listing `items` (nothing when there are none).
fn md_bullets(s: &mut String, title: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    s.push_str(&format!("## {title}\n\n"));
    for i in items {
        s.push_str(&format!("- {i}\n"));
    }
    s.push('\n');
}

/// Runs one scenario at `scale`, writes its report into `out` and returns it. `Err` only when
/// the run could not be carried out at all (the stack did not start); a fault the system did
/// not survive is a report with [`Verdict::Failed`].
pub fn run_scenario(name: &str, scale: Scale, out: &Path) -> Result<ScenarioReport> {
    if !SCENARIOS.contains(&name) && !KNOWN_FAILING.contains(&name) {
        bail!(
            "unknown scenario {name:?}; known: {} (and, failing today: {})",
            SCENARIOS.join(", "),
            KNOWN_FAILING.join(", ")
        );
    }
    let started = Instant::now();
    let mut report = ScenarioReport::new(name, scale);
    let result = scenarios::run(name, scale, out, &mut report);
    if let Err(e) = result {
        report.failures.push(format!("scenario aborted: {e:#}"));
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.judge();
    report.write(out)?;
    Ok(report)
}

fn default_out(scenario: &str) -> PathBuf {
    let ts = panoptes_testkit::sys::utc_timestamp(std::time::SystemTime::now()).replace(':', "-");
    PathBuf::from("loadtest/reports").join(format!("chaos-{scenario}-{ts}"))
}

/// Runs `panoptes-loadtest chaos`.
pub fn main(args: ChaosArgs) -> Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    let names: Vec<&str> = if args.scenario == "all" {
        SCENARIOS.to_vec()
    } else {
        vec![args.scenario.as_str()]
    };
    let base = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.scenario));
    let mut failed = Vec::new();
    for name in &names {
        let out = if names.len() > 1 {
            base.join(name)
        } else {
            base.clone()
        };
        eprintln!(
            "chaos {name} ({:?}): report in {}",
            args.scale,
            out.display()
        );
        let report = run_scenario(name, args.scale, &out)?;
        println!("{}", report.to_markdown());
        if let Some(slo) = &report.slo {
            eprintln!("chaos {name}: {}", slo.summary());
        }
        match report.verdict {
            Verdict::Passed => eprintln!("chaos {name}: passed"),
            Verdict::Skipped => eprintln!(
                "chaos {name}: skipped: {}",
                report.skipped.as_deref().unwrap_or_default()
            ),
            Verdict::Failed => {
                eprintln!("chaos {name}: FAILED: {}", report.failures.join("; "));
                failed.push(*name);
            }
        }
    }
    if !failed.is_empty() {
        bail!("chaos scenarios failed: {}", failed.join(", "));
    }
    Ok(())
}
