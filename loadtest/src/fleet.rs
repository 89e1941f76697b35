//! The fleet benchmark (`panoptes-bench-fleet`): a coordinator holding a large fleet, with no
//! media. Real `redis-server`, real `panoptes-coordinator` processes (three by default), and
//! simulated members in member-host processes ([`host`]): each member a real `MemberAgent`
//! under a real `Driver` speaking the lease / report / grant / handover protocol, running
//! nothing.
//!
//! A run ([`run::run`]): registers `cameras_per_region` cameras in each region (one frames
//! partition each), starts the members and then the coordinators, and measures
//! - the time until every camera and its partition are granted to a live member;
//! - over a steady-state window: the leader's round time (p50/p99, from its
//!   `panoptes_coordinator_round_seconds` histogram), Redis commands per round
//!   (`panoptes_coordinator_round_redis_commands_total` over the rounds), the leader's CPU
//!   and Redis's CPU and operations per second, Redis memory and the leader's RSS;
//! - a mass failure: the host of `kill_fraction` of the workers is killed with SIGKILL; the
//!   time until every partition they held is granted to a live worker (bound: the usual
//!   failover bound, 2 s), and the time until the dead members are pruned from the member
//!   set (when the coordinator prunes).
//!
//! The report is pure data ([`FleetReport`]); the run is in [`run`]; the parsers in
//! [`probe`].

pub mod host;
pub mod probe;
pub mod run;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::bench::scaffold::{self, BenchReport, RunInfo, Table};
use crate::bench::sys::MachineInfo;

/// The regions a fleet spreads over, in order.
pub const REGION_NAMES: [&str; 5] = ["eu", "us", "ap", "sa", "af"];

/// What a fleet run does.
#[derive(Debug, Clone, Serialize)]
pub struct FleetParams {
    /// Regions (at most [`REGION_NAMES`]).
    pub regions: usize,
    /// Cameras per region.
    pub cameras_per_region: usize,
    /// Ingest members, spread over the regions.
    pub ingest: usize,
    /// Worker members, spread over the regions.
    pub workers: usize,
    /// Coordinator processes.
    pub coordinators: usize,
    /// Fraction of the workers killed at once.
    pub kill_fraction: f64,
    /// Steady-state measurement window.
    #[serde(serialize_with = "secs")]
    pub window: Duration,
    /// Members' lease TTL.
    #[serde(serialize_with = "secs")]
    pub lease_ttl: Duration,
    /// Members' longest time between reads of their assignments.
    #[serde(serialize_with = "secs")]
    pub poll: Duration,
    /// Re-grant bound after the mass failure.
    #[serde(serialize_with = "secs")]
    pub failover_bound: Duration,
    /// How long to wait for the dead members to be pruned (`None`: do not wait).
    #[serde(serialize_with = "opt_secs")]
    pub prune_wait: Option<Duration>,
    /// The coordinators' `placement.prune_dead_after` (`None`: their default).
    #[serde(serialize_with = "opt_secs")]
    pub prune_dead_after: Option<Duration>,
    /// The executable that hosts members (`<exe> host --spec <file>`).
    #[serde(skip)]
    pub host_exe: PathBuf,
}

impl FleetParams {
    /// The fleet: 3 regions × 1000 cameras, 50 ingest nodes, 100 workers, 3
    /// coordinators, 10 % of the workers killed.
    pub fn full(host_exe: PathBuf) -> Self {
        Self {
            regions: 3,
            cameras_per_region: 1000,
            ingest: 50,
            workers: 100,
            coordinators: 3,
            kill_fraction: 0.1,
            window: Duration::from_secs(20),
            lease_ttl: Duration::from_secs(1),
            poll: Duration::from_millis(500),
            failover_bound: Duration::from_secs(2),
            prune_wait: Some(Duration::from_secs(30)),
            prune_dead_after: Some(Duration::from_secs(5)),
            host_exe,
        }
    }

    /// CI size: 3 regions × 100 cameras, 8 ingest nodes, 12 workers.
    pub fn quick(host_exe: PathBuf) -> Self {
        Self {
            cameras_per_region: 100,
            ingest: 8,
            workers: 12,
            window: Duration::from_secs(4),
            ..Self::full(host_exe)
        }
    }

    /// Total cameras.
    pub fn cameras(&self) -> usize {
        self.regions * self.cameras_per_region
    }

    /// How many workers the mass failure kills (at least one).
    pub fn victims(&self) -> usize {
        ((self.workers as f64 * self.kill_fraction).ceil() as usize).clamp(1, self.workers)
    }
}

/// The figures of a fleet run.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    /// The run.
    pub run: RunInfo,
    /// The machine.
    pub machine: MachineInfo,
    /// What was run.
    pub params: FleetParams,
    /// From the coordinators' start until every camera and its partition were granted (s).
    pub all_granted_s: f64,
    /// Leader rounds in the window, per second.
    pub rounds_per_s: f64,
    /// Round time p50 (ms), from the histogram.
    pub round_p50_ms: Option<f64>,
    /// Round time p99 (ms), from the histogram.
    pub round_p99_ms: Option<f64>,
    /// Redis commands the leader's rounds sent, per round.
    pub commands_per_round: Option<f64>,
    /// The leader's CPU in the window (% of one core).
    pub leader_cpu_percent: Option<f64>,
    /// Redis's CPU in the window (% of one core), members included.
    pub redis_cpu_percent: f64,
    /// Redis commands processed per second in the window, members included.
    pub redis_ops_per_s: f64,
    /// Redis `used_memory` at the end of the window (MiB).
    pub redis_memory_mib: f64,
    /// The leader's resident memory at the end of the window (MiB).
    pub leader_rss_mib: Option<f64>,
    /// Workers killed at once.
    pub killed: usize,
    /// Partition items they held.
    pub killed_items: usize,
    /// From the kill until every one of those items was granted to a live worker (s).
    pub regrant_s: Option<f64>,
    /// From the kill until the dead workers were gone from the member set (s).
    pub pruned_s: Option<f64>,
}

impl FleetReport {
    /// Every item re-granted within the failover bound.
    pub fn regrant_within_bound(&self) -> bool {
        self.regrant_s
            .is_some_and(|s| s <= self.params.failover_bound.as_secs_f64())
    }
}

/// A duration as seconds in the JSON report.
fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

impl BenchReport for FleetReport {
    const STEM: &'static str = "fleet-bench";

    fn summary_table(&self) -> String {
        let mut t = Table::new(&[
            ">cameras",
            ">members",
            ">all granted s",
            ">round p50 ms",
            ">round p99 ms",
            ">cmds/round",
            ">leader CPU %",
            ">Redis CPU %",
            ">Redis MiB",
            ">re-grant s",
            ">pruned s",
        ]);
        t.row(&[
            self.params.cameras().to_string(),
            (self.params.ingest + self.params.workers).to_string(),
            format!("{:.2}", self.all_granted_s),
            opt(self.round_p50_ms, 2),
            opt(self.round_p99_ms, 2),
            opt(self.commands_per_round, 0),
            opt(self.leader_cpu_percent, 1),
            format!("{:.1}", self.redis_cpu_percent),
            format!("{:.1}", self.redis_memory_mib),
            opt(self.regrant_s, 2),
            opt(self.pruned_s, 2),
        ]);
        t.finish()
    }

    fn to_markdown(&self) -> String {
        let p = &self.params;
        let mut s = scaffold::markdown_header(
            "Fleet scale: the coordinator with simulated members",
            &self.run,
            &self.machine,
            "",
        );
        let _ = writeln!(
            s,
            "- Fleet: {} regions × {} cameras, {} ingest members, {} workers, {} coordinators; \
             leases {:?}, polls {:?}\n",
            p.regions,
            p.cameras_per_region,
            p.ingest,
            p.workers,
            p.coordinators,
            p.lease_ttl,
            p.poll
        );
        let mut more = String::new();
        let _ = writeln!(
            more,
            "- Window: {:?}, {:.1} rounds/s; Redis {:.0} commands/s (members included), leader \
             RSS {} MiB",
            p.window,
            self.rounds_per_s,
            self.redis_ops_per_s,
            opt(self.leader_rss_mib, 1)
        );
        let _ = writeln!(
            more,
            "- Mass failure: {} workers killed (SIGKILL) holding {} partitions; re-granted \
             within the {:?} bound: {}",
            self.killed,
            self.killed_items,
            p.failover_bound,
            self.regrant_within_bound()
        );
        s + &scaffold::result_sections(&self.summary_table(), &more)
    }
}
