//! The whole-deployment harness, [`Stack`], lives in `panoptes_testkit_stack::stack` (one harness
//! for the cluster tests, the failover benchmark, and the load, demo and chaos runs). This
//! module re-exports it and adds what needs this crate's topic watchers ([`Watching`]).

use anyhow::Result;

pub use panoptes_testkit::Node;
pub use panoptes_testkit::settle::settle;
pub use panoptes_testkit_stack::stack::{Assignments, Stack, StackCamera, StackSpec, registration};

use crate::watch::{self, SeenDetection, SeenFrame, Watch};

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
