//! Recovery as a downstream consumer sees it: each region's detections topic watched from the
//! host (`panoptes_loadtest::watch`), and, per fault step, the time from the fault (or the
//! reconnect) to the first detection of each moved partition or camera.
//!
//! Contract:
//! - A partition counts as recovered at the first `ok` detection its new owner wrote for it
//!   at an epoch above the one recorded before the step (so an old owner's late records, or
//!   the same worker id's previous container, never count).
//! - A camera counts as recovered at the first `ok` detection of one of its frames captured
//!   after the step began, in the region whose Kafka it now streams into (frames buffered
//!   before the fault never count).
//! - Times are wall-clock arrival at the watcher minus the step's start (one host, one clock).
//!   The development broker has no read-committed isolation: a record is seen when it is
//!   produced, which is at most the worker's `commit_interval` (100 ms in the compose
//!   configs) before its transaction commits.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use panoptes_loadtest::watch::{self, SeenDetection, Watch};

/// Detections topic of every region (the nodes' default).
pub const DETECTIONS: &str = "panoptes.detections";

/// What a step moved, and where its recovery shows.
pub enum Moved<'a> {
    /// Frames partitions of `region`, now owned by `owner`; each with the epoch recorded
    /// before the step (recovered: a detection above it).
    Partitions {
        region: &'a str,
        owner: &'a str,
        epochs: BTreeMap<i32, u64>,
    },
    /// Cameras now streaming into region `into`.
    Cameras { into: &'a str, cameras: Vec<String> },
}

/// The fastest and the slowest of a step's moved items.
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub fastest: Duration,
    pub slowest: Duration,
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1}–{:.1} s",
            self.fastest.as_secs_f64(),
            self.slowest.as_secs_f64()
        )
    }
}

/// One watcher per region's detections topic.
pub struct Detections {
    watches: BTreeMap<String, Watch<SeenDetection>>,
}

impl Detections {
    /// Watches each `(region, bootstrap)` from now on, and waits until every watcher has
    /// seen a detection (so a later step cannot miss records while a watcher connects).
    pub fn start(regions: &[(String, String)]) -> Result<Self> {
        let mut watches = BTreeMap::new();
        for (region, bootstrap) in regions {
            let w = watch::detections(bootstrap, DETECTIONS)
                .with_context(|| format!("watching region {region}'s detections"))?;
            watches.insert(region.clone(), w);
        }
        let d = Self { watches };
        for (region, w) in &d.watches {
            panoptes_testkit::wait_until(
                &format!("a detection in region {region}"),
                Duration::from_secs(30),
                || (!w.seen().is_empty()).then_some(()),
            )?;
        }
        Ok(d)
    }

    /// Waits (at most `timeout`) until every item of `moved` has its first detection after
    /// `since_ms` (wall clock, ms); returns the fastest and slowest delay.
    pub fn first_after(&self, since_ms: u64, moved: &Moved<'_>, timeout: Duration) -> Result<Span> {
        let (region, items): (&str, Vec<String>) = match moved {
            Moved::Partitions { region, epochs, .. } => (
                *region,
                epochs.keys().map(|p| format!("partition {p}")).collect(),
            ),
            Moved::Cameras { into, cameras } => (*into, cameras.clone()),
        };
        let w = self
            .watches
            .get(region)
            .with_context(|| format!("no watcher for region {region}"))?;
        let since_us = i64::try_from(since_ms)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        let what = format!("first detections in region {region} of {items:?}");
        let firsts = panoptes_testkit::wait_until(&what, timeout, || {
            let seen = w.seen();
            let first = |pred: &dyn Fn(&SeenDetection) -> bool| {
                seen.iter()
                    .filter(|d| d.arrived_ms > since_ms && d.status == "ok" && pred(d))
                    .map(|d| d.arrived_ms)
                    .min()
            };
            match moved {
                Moved::Partitions { owner, epochs, .. } => epochs
                    .iter()
                    .map(|(p, before)| {
                        first(&|d: &SeenDetection| {
                            d.partition == *p && d.worker_id == *owner && d.epoch > *before
                        })
                    })
                    .collect::<Option<Vec<u64>>>(),
                Moved::Cameras { cameras, .. } => cameras
                    .iter()
                    .map(|c| {
                        first(&|d: &SeenDetection| {
                            d.camera_id == *c && d.capture_time_us >= since_us
                        })
                    })
                    .collect::<Option<Vec<u64>>>(),
            }
        })?;
        let delay = |ms: u64| Duration::from_millis(ms.saturating_sub(since_ms));
        Ok(Span {
            fastest: delay(firsts.iter().copied().min().unwrap_or(since_ms)),
            slowest: delay(firsts.iter().copied().max().unwrap_or(since_ms)),
        })
    }
}
