//! A member host: one process running many simulated members, each a real
//! [`MemberAgent`] under a real [`Driver`] (lease, renewals with a report, reads of the
//! assignments, releases on handover), with an [`ItemRunner`] that runs nothing: an item
//! "runs" the moment it is granted and is ready to release the moment it is asked to move.
//!
//! The fleet benchmark starts several hosts so that it can kill one with SIGKILL (a mass
//! failure: its members' leases simply expire, as a crashed node's would). A host prints
//! `READY=<n>` once every member registered, and ends every membership cleanly when its
//! stdin closes (the parent ended or dropped it).

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use panoptes_coordinator_client::driver::{
    Driver, DriverConfig, HandoverOutcome, ItemRunner, Prepared, Report,
};
use panoptes_coordinator_client::{Desired, Grant, MemberAgent, MemberConfig, MemberKind};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// One simulated member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SimMember {
    /// `ingest` or `worker`.
    pub kind: String,
    /// Member id.
    pub id: String,
    /// Region.
    pub region: String,
    /// Capacity in load units.
    pub capacity: f64,
}

/// What a host runs (its `--spec` file).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostSpec {
    /// Redis URL.
    pub redis: String,
    /// Frames topic (names the partition assignment keys).
    pub frames_topic: String,
    /// Members' lease TTL (ms).
    pub lease_ttl_ms: u64,
    /// Members' longest time between two reads of their assignments (ms).
    pub poll_ms: u64,
    /// The members.
    pub members: Vec<SimMember>,
}

/// Runs nothing, holds what it is granted; reports a per-item report the size of a real
/// node's (cameras: fps and next sequence number; partitions: lag).
#[derive(Default)]
pub struct SimRunner {
    kind: Option<MemberKind>,
    running: Mutex<BTreeMap<String, u64>>,
}

impl SimRunner {
    /// A runner for a member of `kind`.
    pub fn new(kind: MemberKind) -> Self {
        Self {
            kind: Some(kind),
            running: Mutex::new(BTreeMap::new()),
        }
    }
}

impl ItemRunner for SimRunner {
    fn running(&self) -> BTreeMap<String, u64> {
        self.running.lock().expect("runner lock").clone()
    }

    fn stop(&self, items: &[String]) {
        let mut r = self.running.lock().expect("runner lock");
        for i in items {
            r.remove(i);
        }
    }

    fn run(&self, grants: &[Grant], _desired: &Desired) {
        let mut r = self.running.lock().expect("runner lock");
        for g in grants {
            r.insert(g.item.clone(), g.epoch());
        }
    }

    fn hand_over(&self, grant: &Grant, _ran: bool, _timeout: Duration) -> Prepared {
        self.running
            .lock()
            .expect("runner lock")
            .remove(&grant.item);
        Prepared::Ready {
            next_seq: (self.kind == Some(MemberKind::Ingest)).then_some(0),
            complete: true,
        }
    }

    fn handed_over(&self, _grant: &Grant, _ran: bool, _outcome: HandoverOutcome) {}

    fn report(&self, _desired: &Desired) -> Report {
        let running = self.running.lock().expect("runner lock");
        let per_item: serde_json::Map<String, serde_json::Value> = running
            .keys()
            .map(|i| {
                let v = match self.kind {
                    Some(MemberKind::Ingest) => serde_json::json!({"fps": 5.0, "next_seq": 0}),
                    _ => serde_json::json!({"lag": 0}),
                };
                (i.clone(), v)
            })
            .collect();
        let field = match self.kind {
            Some(MemberKind::Ingest) => "cameras",
            _ => "partitions",
        };
        let mut report = serde_json::Map::new();
        report.insert(field.into(), serde_json::Value::Object(per_item));
        Report {
            load: 0.0,
            report: serde_json::Value::Object(report),
            broker_ok: Some(true),
        }
    }
}

/// Runs the members of the spec at `path` until stdin closes; then ends every membership.
pub fn run_host(path: &std::path::Path) -> Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path:?}"))?;
    let spec: HostSpec = serde_json::from_str(&text).context("parsing the host spec")?;
    let mut drivers = Vec::new();
    for m in &spec.members {
        let kind = MemberKind::parse(&m.kind).context("member kind")?;
        let mut cfg = MemberConfig::new(kind, &m.id, spec.redis.as_str())
            .placed(&m.region, "default", m.capacity)
            .timing(
                Duration::from_millis(spec.lease_ttl_ms),
                Duration::from_millis(spec.poll_ms),
            );
        cfg.frames_topic = spec.frames_topic.clone();
        let cancel = CancellationToken::new();
        let (agent, thread): (MemberAgent, _) = MemberAgent::start(cfg, cancel.clone())
            .with_context(|| format!("starting member {}", m.id))?;
        let driver = Driver::start(
            agent,
            cancel,
            thread,
            Arc::new(SimRunner::new(kind)),
            DriverConfig::new(Duration::from_secs(5)),
        )?;
        drivers.push(driver);
    }
    println!("READY={}", drivers.len());
    // Until the parent closes our stdin (or kills us).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    // Every membership ends at once (each agent takes up to a poll interval to notice).
    std::thread::scope(|s| {
        for d in &drivers {
            s.spawn(|| d.end_membership());
        }
    });
    Ok(())
}
