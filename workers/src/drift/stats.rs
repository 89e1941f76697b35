//! Per-frame image statistics for drift, computed on a cheap thumbnail of the decoded frame.
//!
//! Contract: [`ImageStats::compute`] reads at most [`THUMB_W`] × [`THUMB_H`] pixels of a
//! packed RGB24 frame (nearest-neighbour sampling, so the cost does not grow with the frame)
//! and returns four normalised histograms (each sums to 1), one per image signal:
//!
//! - `brightness`: luma of the thumbnail's pixels, [`LUMA_BINS`] bins of 16 levels;
//! - `contrast`: absolute deviation of each pixel's luma from the frame's mean luma,
//!   [`CONTRAST_BINS`] bins of 8 levels (the last bin holds everything from 120 up);
//! - `sharpness`: magnitude of the 4-neighbour Laplacian of the luma thumbnail on a
//!   logarithmic scale ([`SHARP_BINS`] bins); its variance is the classic focus measure, its
//!   distribution is what PSI compares (defocus moves mass from high to low bins);
//! - `colour`: a coarse RGB histogram, 4 levels per channel ([`COLOUR_BINS`] bins).
//!
//! Pure arithmetic, no allocation beyond the returned value and one thumbnail buffer.

/// Thumbnail width (at most).
pub const THUMB_W: usize = 96;
/// Thumbnail height (at most).
pub const THUMB_H: usize = 54;
/// Bins of the brightness histogram.
pub const LUMA_BINS: usize = 16;
/// Bins of the contrast histogram.
pub const CONTRAST_BINS: usize = 16;
/// Bins of the sharpness histogram.
pub const SHARP_BINS: usize = 16;
/// Bins of the colour histogram (4 × 4 × 4).
pub const COLOUR_BINS: usize = 64;

/// One frame's image statistics: normalised histograms.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageStats {
    /// Luma histogram.
    pub brightness: [f32; LUMA_BINS],
    /// Histogram of |luma − mean luma|.
    pub contrast: [f32; CONTRAST_BINS],
    /// Histogram of |Laplacian| (log scale).
    pub sharpness: [f32; SHARP_BINS],
    /// Coarse RGB histogram.
    pub colour: [f32; COLOUR_BINS],
    /// Variance of the Laplacian over the thumbnail (the scalar focus measure, for logs).
    pub laplacian_variance: f32,
}

/// Sharpness bin of a Laplacian magnitude: `1.6 × log2(1 + |lap|)` (|lap| ≤ 1020 fills
/// the 16 bins).
fn sharp_bin(lap: i32) -> usize {
    let v = (1.0 + lap.unsigned_abs() as f32).log2() * 1.6;
    (v as usize).min(SHARP_BINS - 1)
}

impl ImageStats {
    /// Statistics of a packed RGB24 frame of `w × h` pixels; `None` when `rgb` is not
    /// `w × h × 3` bytes or the frame is smaller than 3 × 3.
    pub fn compute(rgb: &[u8], w: u32, h: u32) -> Option<Self> {
        let (w, h) = (w as usize, h as usize);
        if w < 3 || h < 3 || rgb.len() != w * h * 3 {
            return None;
        }
        let (tw, th) = (w.min(THUMB_W), h.min(THUMB_H));
        let mut grey = Vec::with_capacity(tw * th);
        let mut stats = Self {
            brightness: [0.0; LUMA_BINS],
            contrast: [0.0; CONTRAST_BINS],
            sharpness: [0.0; SHARP_BINS],
            colour: [0.0; COLOUR_BINS],
            laplacian_variance: 0.0,
        };
        let mut luma_sum = 0u64;
        for ty in 0..th {
            let y = ty * h / th;
            let row = &rgb[y * w * 3..(y + 1) * w * 3];
            for tx in 0..tw {
                let x = tx * w / tw;
                let (r, g, b) = (row[x * 3], row[x * 3 + 1], row[x * 3 + 2]);
                let l = ((77 * u32::from(r) + 150 * u32::from(g) + 29 * u32::from(b)) >> 8) as u8;
                grey.push(l);
                luma_sum += u64::from(l);
                stats.brightness[usize::from(l >> 4)] += 1.0;
                let c = usize::from(r >> 6) * 16 + usize::from(g >> 6) * 4 + usize::from(b >> 6);
                stats.colour[c] += 1.0;
            }
        }
        let n = (tw * th) as f32;
        let mean = luma_sum as f32 / n;
        for &l in &grey {
            let d = (f32::from(l) - mean).abs() as usize / 8;
            stats.contrast[d.min(CONTRAST_BINS - 1)] += 1.0;
        }
        let (mut lap_n, mut lap_sum, mut lap_sq) = (0f32, 0f64, 0f64);
        for y in 1..th - 1 {
            for x in 1..tw - 1 {
                let at = |xx: usize, yy: usize| i32::from(grey[yy * tw + xx]);
                let lap = 4 * at(x, y) - at(x - 1, y) - at(x + 1, y) - at(x, y - 1) - at(x, y + 1);
                stats.sharpness[sharp_bin(lap)] += 1.0;
                lap_n += 1.0;
                lap_sum += f64::from(lap);
                lap_sq += f64::from(lap) * f64::from(lap);
            }
        }
        let m = lap_sum / f64::from(lap_n);
        stats.laplacian_variance = (lap_sq / f64::from(lap_n) - m * m) as f32;
        for v in stats.brightness.iter_mut().chain(&mut stats.contrast) {
            *v /= n;
        }
        for v in &mut stats.colour {
            *v /= n;
        }
        for v in &mut stats.sharpness {
            *v /= lap_n;
        }
        Some(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 320×180 grey frame with a sharp-edged checkerboard of `cell` pixels.
    fn checker(cell: usize, lo: u8, hi: u8) -> Vec<u8> {
        let (w, h) = (320, 180);
        let mut out = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                let v = if (x / cell + y / cell).is_multiple_of(2) {
                    lo
                } else {
                    hi
                };
                out.extend_from_slice(&[v, v, v]);
            }
        }
        out
    }

    fn sum(v: &[f32]) -> f32 {
        v.iter().sum()
    }

    #[test]
    fn histograms_are_normalised_and_wrong_sizes_refused() {
        let s = ImageStats::compute(&checker(8, 60, 200), 320, 180).unwrap();
        for h in [&s.brightness[..], &s.contrast, &s.sharpness, &s.colour] {
            assert!((sum(h) - 1.0).abs() < 1e-4, "{h:?}");
        }
        assert!(ImageStats::compute(&[0; 10], 320, 180).is_none());
        assert!(ImageStats::compute(&[0; 12], 2, 2).is_none());
    }

    #[test]
    fn dark_flat_and_blurred_frames_read_as_such() {
        let sharp = ImageStats::compute(&checker(8, 60, 200), 320, 180).unwrap();
        let dark = ImageStats::compute(&checker(8, 2, 6), 320, 180).unwrap();
        assert_eq!(dark.brightness[0], 1.0, "all dark");
        assert!(dark.contrast[0] > 0.99, "no contrast: {:?}", dark.contrast);
        let around_70 = sharp.contrast[8] + sharp.contrast[9];
        assert!(around_70 > 0.9, "±70 around the mean: {:?}", sharp.contrast);
        // A flat frame has a zero Laplacian everywhere; the checkerboard has strong edges.
        let flat = ImageStats::compute(&checker(8, 100, 100), 320, 180).unwrap();
        assert_eq!(flat.sharpness[0], 1.0);
        assert_eq!(flat.laplacian_variance, 0.0);
        assert!(
            sharp.laplacian_variance > 1000.0,
            "{}",
            sharp.laplacian_variance
        );
        let high: f32 = sharp.sharpness[10..].iter().sum();
        assert!(high > 0.1, "{:?}", sharp.sharpness);
        // Grey pixels of 60 and 200 land in colour bins (0,0,0) and (3,3,3).
        assert!((sharp.colour[0] + sharp.colour[63] - 1.0).abs() < 1e-4);
    }
}
