//! The cluster clock: one time base for every timestamp that crosses machines.
//!
//! Contract:
//! - The *cluster clock* is the Redis server's clock (`TIME`) as this process estimates it.
//!   Every node of a deployment talks to the same Redis, so stamps taken on different machines
//!   are comparable however far apart their wall clocks are: ingest stamps
//!   `capture_time_us` with [`now_us`], workers measure frame age and end-to-end latency
//!   with it, so staleness and latency are robust to a skew between ingest and worker
//!   machines (design brief, "Guarantees"; issue 10 item 9).
//! - Estimate (NTP-style, [`OffsetEstimator`], pure): a sample sends `TIME` at monotonic
//!   `t_send`, reads the server's time `s` and receives at `t_recv`; it says the server read
//!   `s` at the monotonic midpoint `(t_send + t_recv) / 2`, to within half the round trip.
//!   Of the last [`WINDOW`] samples the one with the smallest round trip is used. The estimate
//!   is anchored to the **monotonic** clock, so a step of the local wall clock (NTP, an
//!   operator, a VM resumed) changes nothing: the cluster clock reads
//!   `server_anchor + (mono_now − mono_anchor)`.
//! - [`ClockSync::start`] samples in a thread of its own: a burst of [`BURST`] samples at
//!   start, then one every [`REFRESH`]; a failed sample is counted and retried at the next
//!   refresh, keeping the last estimate. It exports `panoptes_<component>_clock_offset_seconds`
//!   (cluster clock − local wall clock), `panoptes_<component>_clock_round_trip_seconds` (of
//!   the sample in use: twice the error bound) and `panoptes_<component>_clock_sync_failures_total`,
//!   and logs a warning when the offset exceeds [`WARN_OFFSET`] (the machine's clock is not
//!   synchronised; Panoptes is unaffected, other tools reading its stamps may not be).
//! - Until the first sample succeeds, and in processes that never start a [`ClockSync`]
//!   (nodes without Redis: static-mode ingest and workers), [`now_us`] is the local wall clock.
//!   Such nodes compare clocks across machines as before: run them on synchronised machines.
//! - The clock is process-wide ([`cluster`]), like the wall clock it stands for: every
//!   timestamp of the process is on one base, whichever thread takes it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{LazyLock, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus::{Gauge, IntCounter, Registry};

use crate::{CoordError, RedisLink};

/// Samples compared; the one with the smallest round trip wins.
pub const WINDOW: usize = 8;
/// Samples taken back to back at start.
pub const BURST: usize = 4;
/// Time between two samples after the start.
pub const REFRESH: Duration = Duration::from_secs(2);
/// Offsets larger than this (either sign) are logged as a warning.
pub const WARN_OFFSET: Duration = Duration::from_secs(1);
/// Connect, read and write timeout of the sampling connection.
const TIMEOUT: Duration = Duration::from_secs(1);

/// One `TIME` exchange: monotonic send and receive times and the server's answer (µs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// Monotonic µs ([`mono_us`]) when the request was sent.
    pub sent_us: i64,
    /// Monotonic µs when the answer arrived.
    pub received_us: i64,
    /// The server's Unix µs.
    pub server_us: i64,
}

impl Sample {
    /// Round trip in µs (never negative).
    pub fn round_trip_us(&self) -> i64 {
        (self.received_us - self.sent_us).max(0)
    }

    /// Cluster time minus monotonic time: what to add to [`mono_us`] to read the cluster
    /// clock, taking the server's answer as read at the round trip's midpoint.
    pub fn base_us(&self) -> i64 {
        self.server_us - (self.sent_us + self.received_us) / 2
    }
}

/// The best of the last [`WINDOW`] samples (pure: no clock, no I/O).
#[derive(Debug, Default)]
pub struct OffsetEstimator {
    samples: VecDeque<Sample>,
}

impl OffsetEstimator {
    /// Adds a sample, forgetting the oldest beyond [`WINDOW`].
    pub fn add(&mut self, s: Sample) {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        self.samples.push_back(s);
    }

    /// The sample in use: smallest round trip, the newest among equals.
    pub fn best(&self) -> Option<Sample> {
        self.samples
            .iter()
            .rev()
            .min_by_key(|s| s.round_trip_us())
            .copied()
    }
}

/// A process's view of the cluster clock; cheap to clone (all clones share one estimate).
#[derive(Debug, Clone, Default)]
pub struct ClusterClock {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    synced: AtomicBool,
    base_us: AtomicI64,
}

impl ClusterClock {
    /// A clock not synchronised yet (it reads the wall clock).
    pub fn new() -> Self {
        Self::default()
    }

    /// Unix µs on the cluster clock (the local wall clock until the first estimate).
    pub fn now_us(&self) -> i64 {
        if self.shared.synced.load(Ordering::Acquire) {
            mono_us() + self.shared.base_us.load(Ordering::Acquire)
        } else {
            wall_us()
        }
    }

    /// Whether an estimate is in use.
    pub fn is_synced(&self) -> bool {
        self.shared.synced.load(Ordering::Acquire)
    }

    /// Cluster clock minus local wall clock, in µs (0 before the first estimate).
    pub fn offset_us(&self) -> i64 {
        self.now_us() - wall_us()
    }

    /// Uses `s` from now on.
    pub fn set(&self, s: &Sample) {
        self.shared.base_us.store(s.base_us(), Ordering::Release);
        self.shared.synced.store(true, Ordering::Release);
    }
}

/// The process's cluster clock (see the module doc).
pub fn cluster() -> &'static ClusterClock {
    static CLOCK: LazyLock<ClusterClock> = LazyLock::new(ClusterClock::new);
    &CLOCK
}

/// Unix µs on the process's cluster clock.
pub fn now_us() -> i64 {
    cluster().now_us()
}

/// Unix ms on the process's cluster clock.
pub fn now_ms() -> i64 {
    now_us().div_euclid(1000)
}

/// Monotonic µs since the first call in this process.
pub fn mono_us() -> i64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as i64
}

/// The local wall clock in Unix µs.
pub fn wall_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Metrics of a [`ClockSync`].
#[derive(Clone)]
struct SyncMetrics {
    offset: Gauge,
    round_trip: Gauge,
    failures: IntCounter,
}

impl SyncMetrics {
    fn register(registry: &Registry, component: &str) -> Result<Self, prometheus::Error> {
        let offset = Gauge::new(
            format!("panoptes_{component}_clock_offset_seconds"),
            "Cluster clock (the Redis server's, estimated) minus this machine's wall clock.",
        )?;
        let round_trip = Gauge::new(
            format!("panoptes_{component}_clock_round_trip_seconds"),
            "Round trip of the clock sample in use (twice the offset's error bound).",
        )?;
        let failures = IntCounter::new(
            format!("panoptes_{component}_clock_sync_failures_total"),
            "Clock samples that failed (Redis unreachable); the last estimate stays in use.",
        )?;
        registry.register(Box::new(offset.clone()))?;
        registry.register(Box::new(round_trip.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        Ok(Self {
            offset,
            round_trip,
            failures,
        })
    }
}

/// The thread keeping [`cluster`] synchronised with Redis; stops when dropped.
pub struct ClockSync {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ClockSync {
    /// Registers the clock metrics of `component` (`ingest`, `worker`) in `registry` and
    /// starts sampling the Redis of `link` into the process's [`cluster`] clock. Returns at
    /// once; the first estimate follows within a round trip when Redis answers.
    pub fn start(
        link: RedisLink,
        registry: &Registry,
        component: &str,
    ) -> Result<Self, CoordError> {
        let metrics = SyncMetrics::register(registry, component)
            .map_err(|e| CoordError::Invalid(format!("clock metrics: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cluster-clock".into())
            .spawn(move || run(&link, cluster(), &metrics, &s))
            .map_err(|e| CoordError::Invalid(format!("clock thread: {e}")))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Waits up to `timeout` for the first estimate; whether there is one. Blocks: call it
    /// off the async runtime.
    pub fn wait_synced(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !cluster().is_synced() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        cluster().is_synced()
    }
}

impl Drop for ClockSync {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The sampling loop: a burst, then one sample per [`REFRESH`], until `stop`.
fn run(link: &RedisLink, clock: &ClusterClock, metrics: &SyncMetrics, stop: &AtomicBool) {
    let mut est = OffsetEstimator::default();
    let mut conn: Option<redis::Connection> = None;
    let mut warned = false;
    let mut burst = BURST;
    while !stop.load(Ordering::Acquire) {
        match sample(link, &mut conn) {
            Ok(s) => {
                est.add(s);
                if let Some(best) = est.best() {
                    let first = !clock.is_synced();
                    clock.set(&best);
                    let offset_s = clock.offset_us() as f64 / 1e6;
                    metrics.offset.set(offset_s);
                    metrics.round_trip.set(best.round_trip_us() as f64 / 1e6);
                    let large = offset_s.abs() > WARN_OFFSET.as_secs_f64();
                    if large && !warned {
                        tracing::warn!(
                            offset_s,
                            round_trip_us = best.round_trip_us(),
                            "this machine's wall clock is far from the cluster clock (Redis); timestamps use the cluster clock"
                        );
                    } else if first {
                        tracing::info!(
                            offset_s,
                            round_trip_us = best.round_trip_us(),
                            "cluster clock synchronised with Redis"
                        );
                    }
                    warned = large;
                }
            }
            Err(e) => {
                conn = None;
                metrics.failures.inc();
                tracing::debug!(error = %e, "clock sample failed");
            }
        }
        burst = burst.saturating_sub(1);
        let pause = if burst > 0 && clock.is_synced() {
            Duration::from_millis(20)
        } else {
            REFRESH
        };
        sleep_unless_stopped(pause, stop);
    }
}

/// One `TIME` exchange on `conn` (opened first when `None`).
fn sample(link: &RedisLink, conn: &mut Option<redis::Connection>) -> Result<Sample, CoordError> {
    if conn.is_none() {
        *conn = Some(link.connect(TIMEOUT)?);
    }
    let c = conn.as_mut().expect("connected above");
    let sent_us = mono_us();
    let (secs, micros): (i64, i64) = redis::cmd("TIME").query(c)?;
    let received_us = mono_us();
    Ok(Sample {
        sent_us,
        received_us,
        server_us: secs * 1_000_000 + micros,
    })
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let deadline = Instant::now() + d;
    while !stop.load(Ordering::Acquire) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(sent_us: i64, received_us: i64, server_us: i64) -> Sample {
        Sample {
            sent_us,
            received_us,
            server_us,
        }
    }

    #[test]
    fn base_takes_the_round_trips_midpoint() {
        // Sent at mono 1000, answered at 1400: the server's 5_000_200 was read at mono 1200.
        let x = s(1000, 1400, 5_000_200);
        assert_eq!(x.round_trip_us(), 400);
        assert_eq!(x.base_us(), 5_000_200 - 1200);
    }

    #[test]
    fn the_smallest_round_trip_wins_and_old_samples_leave_the_window() {
        let mut e = OffsetEstimator::default();
        assert_eq!(e.best(), None);
        e.add(s(0, 100, 1_000));
        e.add(s(200, 1200, 9_999));
        assert_eq!(e.best(), Some(s(0, 100, 1_000)));
        for i in 0..WINDOW as i64 {
            e.add(s(10_000 + i * 1000, 10_000 + i * 1000 + 300, 7));
        }
        // The 100 µs sample left the window: among equal round trips the newest is used.
        let best = e.best().expect("samples");
        assert_eq!(best.round_trip_us(), 300);
        assert_eq!(best.sent_us, 10_000 + (WINDOW as i64 - 1) * 1000);
    }

    #[test]
    fn a_backwards_answer_counts_as_a_zero_round_trip() {
        assert_eq!(s(500, 400, 0).round_trip_us(), 0);
    }

    #[test]
    fn an_unsynchronised_clock_reads_the_wall_clock_and_a_set_one_follows_the_estimate() {
        let c = ClusterClock::new();
        assert!(!c.is_synced());
        assert!((c.now_us() - wall_us()).abs() < 1_000_000);
        // A server 5 s ahead of this machine, sampled now with a 2 ms round trip.
        let now = mono_us();
        c.set(&s(now - 2_000, now, wall_us() + 5_000_000 - 1_000));
        assert!(c.is_synced());
        let off = c.offset_us();
        assert!((off - 5_000_000).abs() < 200_000, "offset {off} µs");
        // Clones share the estimate.
        assert!((c.clone().offset_us() - 5_000_000).abs() < 200_000);
    }
}
