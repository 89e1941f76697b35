//! One run of an owned partition: the state its stages share, and the at-least-once commit
//! bookkeeping.
//!
//! A [`PartitionState`] is created when a partition starts and shared by the consumer thread
//! (in-flight bound, lag, load), the partition's publisher (done, commits) and whoever starts
//! and stops partitions (abort, release, failure). A partition stopped and started again gets
//! a fresh state with a new `instance`, so outcomes of the earlier run still travelling
//! through the stages are recognised and dropped. Pure bookkeeping: no I/O here.
//!
//! Intake back-pressure: the consumer thread stops reading a partition whose in-flight count
//! reached its bound ([`PartitionState::hold`]); whoever finishes frames
//! ([`PartitionState::done`]) lifts the hold once the count fell to the resume level and
//! calls the consumer's wake-up, so no wake-up is lost and none is sent per frame.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;

/// Sent-but-unacknowledged records of one partition, in send order (at-least-once mode).
#[derive(Debug, Default)]
pub struct CommitTracker {
    /// `(idx, offset, acknowledged)` in idx order.
    pending: VecDeque<(u64, i64, bool)>,
}

impl CommitTracker {
    /// Registers a send (call before the record is handed to the producer, in idx order).
    pub fn push(&mut self, idx: u64, offset: i64) {
        self.pending.push_back((idx, offset, false));
    }

    /// Marks `idx` acknowledged.
    pub fn ack(&mut self, idx: u64) {
        let Some(&(front, _, _)) = self.pending.front() else {
            return;
        };
        if let Some(e) = idx
            .checked_sub(front)
            .and_then(|i| self.pending.get_mut(i as usize))
        {
            debug_assert_eq!(e.0, idx);
            e.2 = true;
        }
    }

    /// Pops the acknowledged prefix: the offset to commit (last offset + 1) and how many
    /// frames completed, or `None` if the oldest record is not acknowledged yet.
    pub fn take_committable(&mut self) -> Option<(i64, usize)> {
        let mut last = None;
        let mut n = 0;
        while let Some(&(_, offset, true)) = self.pending.front() {
            last = Some(offset);
            n += 1;
            self.pending.pop_front();
        }
        last.map(|o| (o + 1, n))
    }
}

/// Shared state of one owned partition (one run of it: a partition stopped and started
/// again gets a fresh state with a new `instance`).
pub struct PartitionState {
    /// The partition.
    pub partition: i32,
    /// Unique per run of a partition in this process (see
    /// [`crate::pipeline::work::Position::instance`]).
    pub instance: u64,
    /// The assignment epoch this run holds the partition at (0: not tracked).
    pub epoch: u64,
    /// Set to stop this run at once (taken away or superseded): the publisher aborts what is
    /// open and commits nothing more.
    pub abort: AtomicBool,
    /// Frame records consumed by this run.
    pub consumed: AtomicU64,
    /// Load consumed by this run, in thousandths of a load unit (one 640×360 frame = 1000).
    pub load_milli: AtomicU64,
    /// Last measured lag (records behind the end offset), -1 until measured.
    pub lag: AtomicI64,
    /// Frames consumed and not yet done (acknowledged by the broker in at-least-once mode,
    /// handed to the transactional producer in exactly-once mode). The consumer stops
    /// reading the partition at its bound ([`PartitionState::hold`]).
    pub in_flight: AtomicUsize,
    /// At-least-once bookkeeping.
    pub tracker: Mutex<CommitTracker>,
    /// Set when the partition was released (superseded epoch); the consumer unassigns it.
    pub released: AtomicBool,
    /// Set when this run's publisher failed (coordinator mode restarts the partition).
    pub failed: AtomicBool,
    /// When the exactly-once publisher began its current librdkafka transaction call
    /// (monotonic ms, see [`PartitionState::bounded_call`]), 0 when in none: a call stuck
    /// far past its own timeout gets the run restarted with a fresh producer.
    pub commit_started_ms: AtomicU64,
    /// Which bounded call runs now (for the watchdog's log).
    call: Mutex<&'static str>,
    /// Set while the consumer does not read the partition (in-flight bound reached).
    held: AtomicBool,
    /// In-flight count at or below which a hold is lifted.
    resume_at: AtomicUsize,
    /// Wakes the consumer thread when a hold is lifted (set once by the consumer).
    wake: std::sync::OnceLock<Box<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for PartitionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionState")
            .field("partition", &self.partition)
            .field("instance", &self.instance)
            .field("epoch", &self.epoch)
            .field("in_flight", &self.in_flight)
            .field("held", &self.held)
            .finish_non_exhaustive()
    }
}

impl PartitionState {
    /// A fresh state (epoch not tracked).
    pub fn new(partition: i32) -> Arc<Self> {
        Self::with_epoch(partition, 0)
    }

    /// A fresh state holding `partition` at `epoch`.
    pub fn with_epoch(partition: i32, epoch: u64) -> Arc<Self> {
        static INSTANCES: AtomicU64 = AtomicU64::new(1);
        Arc::new(Self {
            partition,
            instance: INSTANCES.fetch_add(1, Ordering::Relaxed),
            epoch,
            abort: AtomicBool::new(false),
            consumed: AtomicU64::new(0),
            load_milli: AtomicU64::new(0),
            lag: AtomicI64::new(-1),
            in_flight: AtomicUsize::new(0),
            tracker: Mutex::new(CommitTracker::default()),
            released: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            commit_started_ms: AtomicU64::new(0),
            call: Mutex::new("none"),
            held: AtomicBool::new(false),
            resume_at: AtomicUsize::new(0),
            wake: std::sync::OnceLock::new(),
        })
    }

    /// `n` frames of this run are done (the in-flight bound frees up); lifts a hold whose
    /// resume level is reached and wakes the consumer.
    pub(crate) fn done(&self, n: usize) {
        let left = self
            .in_flight
            .fetch_sub(n, Ordering::SeqCst)
            .saturating_sub(n);
        if left <= self.resume_at.load(Ordering::SeqCst)
            && self.held.swap(false, Ordering::SeqCst)
            && let Some(wake) = self.wake.get()
        {
            wake();
        }
    }

    /// Sets the consumer's wake-up (the first call wins).
    pub fn set_wake(&self, wake: impl Fn() + Send + Sync + 'static) {
        let _ = self.wake.set(Box::new(wake));
    }

    /// The consumer stops reading this partition until the in-flight count falls to
    /// `resume_at`. Returns `false` when it already has (no hold).
    pub fn hold(&self, resume_at: usize) -> bool {
        self.resume_at.store(resume_at, Ordering::SeqCst);
        self.held.store(true, Ordering::SeqCst);
        // `done` may have run between the caller's count and the flag: look again.
        if self.in_flight.load(Ordering::SeqCst) <= resume_at {
            return !self.held.swap(false, Ordering::SeqCst);
        }
        true
    }

    /// Whether the consumer holds (does not read) this partition.
    pub fn held(&self) -> bool {
        self.held.load(Ordering::SeqCst)
    }

    /// Whether this run was told to stop at once.
    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::Acquire)
    }

    /// Runs one blocking client call that has a timeout of its own, with its start time in
    /// `commit_started_ms` for the watchdog ([`PartitionState::stuck_for`]).
    pub fn bounded_call<T>(&self, what: &'static str, call: impl FnOnce() -> T) -> T {
        let started = now_ms();
        *self.call.lock() = what;
        self.commit_started_ms.store(started, Ordering::Release);
        let r = call();
        self.commit_started_ms.store(0, Ordering::Release);
        let took = now_ms().saturating_sub(started);
        if took >= 3000 {
            tracing::warn!(
                partition = self.partition,
                call = what,
                took_ms = took,
                "slow transaction call"
            );
        }
        r
    }

    /// The bounded call running now (or the last one).
    pub fn current_call(&self) -> &'static str {
        *self.call.lock()
    }

    /// How long the current bounded call has been running (`None`: in none).
    pub fn stuck_for(&self) -> Option<std::time::Duration> {
        let started = self.commit_started_ms.load(Ordering::Acquire);
        (started > 0).then(|| std::time::Duration::from_millis(now_ms().saturating_sub(started)))
    }
}

/// Monotonic milliseconds since the first call in this process, plus one (0 means "none").
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let ms = START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1
}

/// The acknowledged prefix of every partition (at-least-once): the offsets to commit, taken
/// out of the trackers. Called by the consumer thread.
pub fn collect_commits(states: &[Arc<PartitionState>]) -> Vec<(i32, i64)> {
    let mut out = Vec::new();
    for s in states {
        if let Some((offset, _)) = s.tracker.lock().take_committable() {
            out.push((s.partition, offset));
        }
    }
    out
}

/// Epoch per running partition, shared by the stages (written into records) and updated by
/// whoever starts and stops partitions.
pub type PartitionEpochs = Arc<parking_lot::RwLock<BTreeMap<i32, u64>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_commits_only_the_acknowledged_prefix() {
        let mut t = CommitTracker::default();
        for i in 0..4 {
            t.push(i, 10 + i as i64 * 3);
        }
        t.ack(1);
        t.ack(3);
        assert_eq!(t.take_committable(), None);
        t.ack(0);
        assert_eq!(t.take_committable(), Some((14, 2)));
        t.ack(2);
        assert_eq!(t.take_committable(), Some((20, 2)));
        assert_eq!(t.take_committable(), None);
    }

    #[test]
    fn states_are_distinct_runs() {
        let (a, b) = (PartitionState::with_epoch(3, 7), PartitionState::new(3));
        assert_ne!(a.instance, b.instance);
        assert_eq!((a.epoch, b.epoch), (7, 0));
        assert!(!a.aborted());
        a.abort.store(true, Ordering::Release);
        assert!(a.aborted());
    }

    #[test]
    fn a_hold_is_lifted_once_at_the_resume_level_and_wakes_the_consumer() {
        let s = PartitionState::new(1);
        let wakes = Arc::new(AtomicUsize::new(0));
        let w = wakes.clone();
        s.set_wake(move || {
            w.fetch_add(1, Ordering::SeqCst);
        });
        s.in_flight.store(8, Ordering::SeqCst);
        assert!(s.hold(4));
        assert!(s.held());
        s.done(3);
        assert!(s.held(), "5 in flight: still above the resume level");
        assert_eq!(wakes.load(Ordering::SeqCst), 0);
        s.done(1);
        assert!(!s.held());
        s.done(2);
        assert_eq!(wakes.load(Ordering::SeqCst), 1, "one wake-up per hold");
        // Already at the resume level when the hold is asked for: no hold, no wake-up.
        assert!(!s.hold(2));
        assert!(!s.held());
        assert_eq!(wakes.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn bounded_calls_are_timed_while_they_run() {
        let s = PartitionState::new(1);
        assert_eq!(s.stuck_for(), None);
        let inside = s.bounded_call("test", || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            s.stuck_for()
        });
        assert!(
            inside.is_some_and(|d| d >= std::time::Duration::from_millis(15)),
            "{inside:?}"
        );
        assert_eq!(s.stuck_for(), None, "cleared after the call");
    }
}
