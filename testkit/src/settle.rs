//! The accounting checker on a test's topics, and the settle loop: wait until every frame
//! the checker read has an answer (a detection record or a dead letter) and nothing has
//! changed for a while, then finish the checker and return its report (feature `checker`).

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use panoptes_checker::{Checker, ReaderConfig, Report};
use panoptes_scene::camera::CameraConfig;

use crate::broker::Topics;

/// Starts the checker on `t` at `bootstrap`; with `cameras`, it also scores accuracy
/// against their ground truth. It drains for 10 s when finished.
pub fn checker(bootstrap: &str, t: &Topics, cameras: Vec<CameraConfig>) -> Result<Checker> {
    let mut config = ReaderConfig::new(bootstrap);
    config.frames_topic = t.frames.clone();
    config.detections_topic = t.detections.clone();
    config.dlq_topic = t.dlq.clone();
    config.accuracy = !cameras.is_empty();
    config.cameras = cameras;
    config.drain = Duration::from_secs(10);
    Ok(Checker::start(config)?)
}

/// What to do when the checker has not settled by the deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// Fail: the test expects everything answered.
    Fail,
    /// Finish anyway: the report says what is missing (load and chaos runs).
    Finish,
}

/// Waits until every frame read so far has a record or a dead letter and the counts have
/// not changed for `quiet`, then finishes the checker. At `timeout` (or if the checker
/// stopped by itself) it fails or finishes as `on_timeout` says.
pub fn settle_with(
    checker: Checker,
    timeout: Duration,
    quiet: Duration,
    on_timeout: OnTimeout,
) -> Result<Report> {
    let deadline = Instant::now() + timeout;
    let mut last = checker.progress();
    let mut stable_since = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let p = checker.progress();
        if p != last {
            last = p;
            stable_since = Instant::now();
        }
        let answered = p.detections + p.dead_letters;
        if p.frames > 0 && answered >= p.frames && stable_since.elapsed() > quiet {
            break;
        }
        if Instant::now() > deadline || checker.is_finished() {
            if on_timeout == OnTimeout::Fail {
                bail!("checker did not settle: {p:?}");
            }
            break;
        }
    }
    Ok(checker.finish()?)
}

/// Tests: everything must be answered and quiet for a second within `timeout`.
pub fn finish_when_settled(checker: Checker, timeout: Duration) -> Result<Report> {
    settle_with(checker, timeout, Duration::from_secs(1), OnTimeout::Fail)
}

/// Runs: quiet for two seconds, or whatever the report says at `timeout`.
pub fn settle(checker: Checker, timeout: Duration) -> Result<Report> {
    settle_with(checker, timeout, Duration::from_secs(2), OnTimeout::Finish)
}
