//! Batch, the third stage: dynamic batching. A batch closes when it holds `max_batch` frames
//! or when its oldest frame has waited `max_wait`, whichever comes first. Pure: no model, no
//! Kafka.
//!
//! [`next_batch`] blocks for the first item (there is nothing to wait for before that), then
//! collects more until the size or the oldest frame's wait budget runs out. Generic over the
//! item so the rule is unit-tested without tensors.

use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

/// Collects the next batch from `rx`; `ready_at` gives the instant an item became ready (its
/// wait budget starts then). Returns `None` when the channel is closed and empty.
pub fn next_batch<T>(
    rx: &Receiver<T>,
    max_batch: usize,
    max_wait: Duration,
    ready_at: impl Fn(&T) -> Instant,
) -> Option<Vec<T>> {
    let first = rx.recv().ok()?;
    let deadline = ready_at(&first) + max_wait;
    let mut batch = Vec::with_capacity(max_batch);
    batch.push(first);
    while batch.len() < max_batch {
        // Take what is already queued without waiting, even past the deadline.
        match rx.try_recv() {
            Ok(item) => {
                batch.push(item);
                continue;
            }
            Err(crossbeam_channel::TryRecvError::Disconnected) => break,
            Err(crossbeam_channel::TryRecvError::Empty) => {}
        }
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        match rx.recv_timeout(deadline - now) {
            Ok(item) => batch.push(item),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
        }
    }
    Some(batch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closes_at_max_batch() {
        let (tx, rx) = crossbeam_channel::bounded(32);
        for _ in 0..20 {
            tx.send(Instant::now()).unwrap();
        }
        let b = next_batch(&rx, 8, Duration::from_secs(10), |t| *t).unwrap();
        assert_eq!(b.len(), 8);
    }

    #[test]
    fn closes_when_the_oldest_frame_runs_out_of_time() {
        let (tx, rx) = crossbeam_channel::bounded(32);
        tx.send(Instant::now()).unwrap();
        let started = Instant::now();
        let b = next_batch(&rx, 8, Duration::from_millis(30), |t| *t).unwrap();
        assert_eq!(b.len(), 1);
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(25), "{waited:?}");
        assert!(waited < Duration::from_millis(500), "{waited:?}");
        // A frame that is already older than its budget goes alone, at once.
        tx.send(Instant::now() - Duration::from_secs(1)).unwrap();
        let started = Instant::now();
        assert_eq!(
            next_batch(&rx, 8, Duration::from_millis(30), |t| *t)
                .unwrap()
                .len(),
            1
        );
        assert!(started.elapsed() < Duration::from_millis(20));
        drop(tx);
        assert!(next_batch(&rx, 8, Duration::from_millis(30), |t| *t).is_none());
    }
}
