//! The whole-deployment harness, [`Stack`], lives in `panoptes_testkit_stack::stack` (one harness
//! for the cluster tests, the failover benchmark, and the load, demo and chaos runs). This
//! module re-exports it and adds what needs this crate's topic watchers ([`Watching`]) and a
//! wait on the assignment records ([`WaitAssignments`]).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use panoptes_coordinator_client::AssignRecord;
use panoptes_testkit::wait_until;

pub use panoptes_testkit::Node;
pub use panoptes_testkit::settle::settle;
pub use panoptes_testkit_stack::stack::{Assignments, Stack, StackCamera, StackSpec, registration};

use crate::watch::{self, SeenDetection, SeenFrame, Watch, wall_ms};

/// Watching a stack's topics from now on.
pub trait Watching {
    /// Watches `region`'s detections topic.
    fn watch_detections(&self, region: &str) -> Result<Watch<SeenDetection>>;
    /// Watches `region`'s frames topic.
    fn watch_frames(&self, region: &str) -> Result<Watch<SeenFrame>>;
}

impl Watching for Stack {
    fn watch_detections(&self, region: &str) -> Result<Watch<SeenDetection>> {
        watch::detections(&self.brokers[region].bootstrap, &self.topics.detections)
    }

    fn watch_frames(&self, region: &str) -> Result<Watch<SeenFrame>> {
        watch::frames(&self.brokers[region].bootstrap, &self.topics.frames)
    }
}

/// A settled one-region stack for the ingest failover tests: `cameras` cameras at 5 fps,
/// ingest nodes `in-a` and `in-b`, worker `w0`.
pub fn two_ingest_nodes(cameras: usize) -> Result<Stack> {
    let cameras = StackCamera::small_set(cameras, "local", 5);
    let mut stack = Stack::start(StackSpec::single_region(cameras, 4))?;
    stack.start_members("local", &["in-a", "in-b"], &["w0"])?;
    stack.register_cameras()?;
    stack.wait_settled(Duration::from_secs(60))?;
    Ok(stack)
}

/// In a [`two_ingest_nodes`] stack: the ingest node holding the most cameras, its cameras,
/// and the other node.
pub fn busiest_ingest(stack: &Stack) -> Result<(String, Vec<String>, &'static str)> {
    let by_node = stack.cameras_by_ingest()?;
    let (victim, cams) = by_node
        .iter()
        .max_by_key(|(_, c)| c.len())
        .map(|(n, c)| (n.clone(), c.clone()))
        .ok_or_else(|| anyhow::anyhow!("no ingest node owns a camera"))?;
    let survivor = if victim == "in-a" { "in-b" } else { "in-a" };
    Ok((victim, cams, survivor))
}

/// Assignment records by camera id, or by partition item (`<cluster>:<partition>`).
pub type Records = BTreeMap<String, AssignRecord>;

/// Waiting for a stack's assignment records to reach a state.
pub trait WaitAssignments {
    /// Polls the camera and partition records (as [`Stack::assignments`] reads them, by camera
    /// id and by partition item) until `done(cameras, partitions)` holds, for at most
    /// `timeout`; returns the wall-clock time ([`wall_ms`]) it was first seen to hold. The
    /// error names `what`.
    fn wait_assignments(
        &self,
        what: &str,
        timeout: Duration,
        done: impl FnMut(&Records, &Records) -> bool,
    ) -> Result<u64>;
}

impl WaitAssignments for Stack {
    fn wait_assignments(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&Records, &Records) -> bool,
    ) -> Result<u64> {
        wait_until(what, timeout, || {
            let (cameras, partitions) = self.assignments().ok()?;
            done(&cameras, &partitions).then(wall_ms)
        })
    }
}
