//! Fixed-bin histograms over time: the reference (frozen), the current window (sliding), and
//! the population stability index between them.
//!
//! Contract: memory is fixed at creation ([`Hist`]: one `f64` per bin and a sample count;
//! [`SlidingHist`]: [`SLOTS`] such histograms). A sliding histogram covers the last `window`
//! at the resolution of one slot (`window / SLOTS`): a sample leaves it between
//! `window − window/SLOTS` and `window` after it arrived. Time is milliseconds on any
//! monotonic clock, passed in by the caller.

/// Slots of a sliding window.
pub const SLOTS: u64 = 6;

/// Probability floor of the epsilon smoothing in [`psi`].
pub const EPSILON: f64 = 1e-4;

/// A histogram of weights with the number of samples that made it.
#[derive(Debug, Clone, PartialEq)]
pub struct Hist {
    /// Weight per bin.
    pub bins: Vec<f64>,
    /// Samples added.
    pub samples: u64,
}

impl Hist {
    /// An empty histogram of `bins` bins.
    pub fn new(bins: usize) -> Self {
        Self {
            bins: vec![0.0; bins],
            samples: 0,
        }
    }

    /// Adds the weights of `samples` samples (bin by bin; extra weights are ignored).
    pub fn add(&mut self, weights: &[f32], samples: u64) {
        for (b, w) in self.bins.iter_mut().zip(weights) {
            *b += f64::from(*w);
        }
        self.samples += samples;
    }

    /// Adds `other` bin by bin.
    pub fn merge(&mut self, other: &Hist) {
        for (b, o) in self.bins.iter_mut().zip(&other.bins) {
            *b += o;
        }
        self.samples += other.samples;
    }

    fn clear(&mut self) {
        self.bins.fill(0.0);
        self.samples = 0;
    }
}

/// A histogram of the samples of the last `window` milliseconds, in [`SLOTS`] slots.
#[derive(Debug, Clone)]
pub struct SlidingHist {
    slot_ms: u64,
    /// `(slot number, histogram)`; slot number = time / `slot_ms`.
    slots: Vec<(u64, Hist)>,
}

impl SlidingHist {
    /// An empty window of `window_ms` over `bins` bins.
    pub fn new(bins: usize, window_ms: u64) -> Self {
        Self {
            slot_ms: (window_ms / SLOTS).max(1),
            slots: (0..SLOTS).map(|_| (u64::MAX, Hist::new(bins))).collect(),
        }
    }

    /// Adds the weights of `samples` samples at `now_ms`.
    pub fn add(&mut self, now_ms: u64, weights: &[f32], samples: u64) {
        let id = now_ms / self.slot_ms;
        let (slot_id, hist) = &mut self.slots[(id % SLOTS) as usize];
        if *slot_id != id {
            hist.clear();
            *slot_id = id;
        }
        hist.add(weights, samples);
    }

    /// The samples of the window ending at `now_ms`.
    pub fn sum(&self, now_ms: u64) -> Hist {
        let id = now_ms / self.slot_ms;
        let mut out = Hist::new(self.slots[0].1.bins.len());
        for (slot_id, hist) in &self.slots {
            if *slot_id != u64::MAX && *slot_id <= id && *slot_id + SLOTS > id {
                out.merge(hist);
            }
        }
        out
    }
}

/// Population stability index of `current` against `reference`:
/// `Σ (c_i − r_i) · ln(c_i / r_i)` over bins, each histogram normalised to 1 and smoothed
/// with [`EPSILON`] (`p_i = (x_i / Σx + ε) / (1 + ε · bins)`), so an empty bin costs a
/// large but finite amount. 0 for identical shapes; by the usual rule of thumb < 0.1 is
/// stable, 0.1–0.25 a moderate shift, > 0.25 a significant one. 0 when either is empty.
pub fn psi(reference: &[f64], current: &[f64]) -> f64 {
    let (rs, cs): (f64, f64) = (reference.iter().sum(), current.iter().sum());
    if rs <= 0.0 || cs <= 0.0 {
        return 0.0;
    }
    let norm = 1.0 + EPSILON * reference.len() as f64;
    reference
        .iter()
        .zip(current)
        .map(|(r, c)| {
            let r = (r / rs + EPSILON) / norm;
            let c = (c / cs + EPSILON) / norm;
            (c - r) * (c / r).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psi_is_zero_for_the_same_shape_and_large_for_a_move() {
        assert!(psi(&[1.0, 2.0, 3.0], &[10.0, 20.0, 30.0]).abs() < 1e-12);
        let moved = psi(&[1.0, 0.0, 0.0], &[0.0, 0.0, 1.0]);
        assert!(moved > 10.0, "{moved}");
        // Symmetric, and a 10 % shift of mass into an empty bin is already significant.
        assert!((moved - psi(&[0.0, 0.0, 1.0], &[1.0, 0.0, 0.0])).abs() < 1e-9);
        assert!(psi(&[1.0, 0.0], &[0.9, 0.1]) > 0.25);
        // 50/50 against 55/45: stable.
        assert!(psi(&[0.5, 0.5], &[0.55, 0.45]) < 0.1);
        assert_eq!(psi(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn sliding_window_forgets_old_slots() {
        let mut w = SlidingHist::new(2, 6000);
        w.add(0, &[1.0, 0.0], 1);
        w.add(2500, &[0.0, 1.0], 1);
        assert_eq!(w.sum(2500).bins, vec![1.0, 1.0]);
        assert_eq!(w.sum(2500).samples, 2);
        // Slot 0 (0..1 s) leaves the window at 6 s; slot 2 stays until 9 s.
        assert_eq!(w.sum(5999).bins, vec![1.0, 1.0]);
        assert_eq!(w.sum(6000).bins, vec![0.0, 1.0]);
        assert_eq!(w.sum(9000).samples, 0);
        // A slot reused after a full turn starts empty.
        w.add(6100, &[0.0, 1.0], 1);
        assert_eq!(w.sum(6100).bins, vec![0.0, 2.0]);
    }
}
