//! The member's lease as this process may rely on it: [`LeaseFence`].
//!
//! The coordinator moves a member's items once its lease hash has expired in Redis. Redis sets
//! that expiry when it executes a renewal, which is never before the member sent it; so a
//! member that counts from the moment it *sent* its last successful renewal, on its own
//! monotonic clock, knows a point in time before which Redis cannot have expired the lease:
//! `sent_at + lease_ttl − margin`. Past it, the items may be running elsewhere, whatever the
//! member has noticed: a process that was paused (SIGSTOP, a long GC-like stall, a frozen VM)
//! finds the fence closed the moment it resumes, before its agent had a chance to renew.
//! Ingest nodes check the fence before every frame they publish, so a zombie ingest node
//! stops publishing no later than its lease's expiry, not from when it notices.
//!
//! The margin (`lease_ttl / 20`, at most 50 ms) covers clock-rate differences between this
//! host and Redis over one TTL; it is not needed for the ordering argument above.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Largest safety margin taken off the lease.
const MAX_MARGIN: Duration = Duration::from_millis(50);

/// Until when the member's lease holds, on the monotonic clock. Shared (`Arc`) between the
/// member agent, which extends it after each successful renewal, and whoever must stop
/// acting for the member once it lapses. Lock-free: checked once per published frame.
#[derive(Debug)]
pub struct LeaseFence {
    /// Origin of the stored instants.
    base: Instant,
    /// Microseconds after `base` until which the lease holds; 0: not held.
    until_us: AtomicU64,
}

impl Default for LeaseFence {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            until_us: AtomicU64::new(0),
        }
    }
}

impl LeaseFence {
    /// A fence that is closed until the first successful renewal.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the lease still holds now.
    pub fn holds(&self) -> bool {
        self.remaining().is_some()
    }

    /// How long the lease still holds; `None` once it lapsed (or was never held).
    pub fn remaining(&self) -> Option<Duration> {
        let until = self.until_us.load(Ordering::Acquire);
        let now = self.base.elapsed().as_micros() as u64;
        (until > now).then(|| Duration::from_micros(until - now))
    }

    /// Records a successful renewal that was sent at `sent_at` with `ttl`: the lease holds
    /// until `sent_at + ttl − margin`. Never moves the fence backwards.
    pub fn renewed(&self, sent_at: Instant, ttl: Duration) {
        let margin = (ttl / 20).min(MAX_MARGIN);
        let until = sent_at.saturating_duration_since(self.base) + ttl.saturating_sub(margin);
        self.until_us
            .fetch_max(until.as_micros() as u64, Ordering::AcqRel);
    }

    /// Closes the fence for good (the member's session was replaced, or it left).
    pub fn revoke(&self) {
        self.until_us.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_counts_from_the_renewal_sent_time() {
        let f = LeaseFence::new();
        assert!(!f.holds(), "closed before the first renewal");
        let sent = Instant::now();
        f.renewed(sent, Duration::from_secs(10));
        let left = f.remaining().expect("held");
        assert!(left <= Duration::from_secs(10) - Duration::from_millis(50));
        assert!(left > Duration::from_secs(9));
        // A renewal sent long ago (e.g. its answer arrived after a pause) gives no lease.
        let g = LeaseFence::new();
        std::thread::sleep(Duration::from_millis(30));
        g.renewed(g.base, Duration::from_millis(20));
        assert!(!g.holds());
    }

    #[test]
    fn the_fence_never_moves_back_and_can_be_revoked() {
        let f = LeaseFence::new();
        let now = Instant::now();
        f.renewed(now, Duration::from_secs(5));
        f.renewed(now, Duration::from_millis(1));
        assert!(f.remaining().unwrap() > Duration::from_secs(4));
        f.revoke();
        assert!(!f.holds());
    }

    #[test]
    fn a_lapsed_lease_closes_without_anyone_noticing() {
        let f = LeaseFence::new();
        f.renewed(Instant::now(), Duration::from_millis(40));
        assert!(f.holds());
        std::thread::sleep(Duration::from_millis(45));
        assert!(!f.holds());
    }
}
