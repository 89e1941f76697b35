//! The frame-index barcode drawn along the bottom of every synthetic frame.
//!
//! The strip spans the full width and is divided into [`MODULES`] equal modules (8 px each
//! at 320 px width), white = 1, black = 0:
//!
//! | modules | content |
//! | --- | --- |
//! | 0–1 | start pattern `1 0` |
//! | 2–31 | frame index modulo 2^30, most significant bit first |
//! | 32–39 | CRC-8 (polynomial 0x07) of the 30-bit value as 4 big-endian bytes |
//!
//! Because module boundaries are proportional to the width, the reader needs no knowledge
//! of the source resolution: it samples module centres of the bottom rows of whatever image
//! it gets (full size, scaled down, JPEG-compressed), thresholds them at the midpoint of the
//! darkest and brightest module, and accepts a row only if the start pattern and the CRC match
//! and every module is clearly black or white.

/// Number of modules across the strip.
pub(crate) const MODULES: usize = 40;

/// Number of low bits of the frame index carried by the barcode; [`read_frame_index`]
/// returns the index modulo `2^FRAME_INDEX_BITS` (see [`unwrap_frame_index`]).
pub const FRAME_INDEX_BITS: u32 = 30;

const START: [u8; 2] = [1, 0];
const CRC_BITS: usize = 8;

fn crc8(value: u32) -> u8 {
    let mut crc: u8 = 0;
    for byte in value.to_be_bytes() {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x07
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Module bits (1 = white) for a frame index.
fn modules(frame_index: u64) -> [u8; MODULES] {
    let value = (frame_index & ((1 << FRAME_INDEX_BITS) - 1)) as u32;
    let crc = crc8(value);
    let mut bits = [0u8; MODULES];
    bits[..2].copy_from_slice(&START);
    for i in 0..FRAME_INDEX_BITS as usize {
        bits[2 + i] = ((value >> (FRAME_INDEX_BITS as usize - 1 - i)) & 1) as u8;
    }
    for i in 0..CRC_BITS {
        bits[2 + FRAME_INDEX_BITS as usize + i] = (crc >> (CRC_BITS - 1 - i)) & 1;
    }
    bits
}

/// One row of the strip for a `width`-pixel frame, using the given black and white levels.
pub(crate) fn strip_row(width: u32, frame_index: u64, black: u8, white: u8) -> Vec<u8> {
    let w = width as usize;
    let bits = modules(frame_index);
    (0..w)
        .map(|x| {
            if bits[(x * MODULES / w.max(1)).min(MODULES - 1)] == 1 {
                white
            } else {
                black
            }
        })
        .collect()
}

/// Reads the frame index from a grayscale/luma image (`stride` bytes per row).
///
/// Works on the full frame and on frames scaled down (to a quarter of the width and less,
/// as long as modules stay ≥ 2 px) and JPEG-compressed. Returns the index modulo
/// `2^`[`FRAME_INDEX_BITS`], or `None` when no valid code is found.
pub fn read_frame_index(luma: &[u8], width: u32, height: u32, stride: usize) -> Option<u64> {
    let (w, h) = (width as usize, height as usize);
    if w < MODULES || h == 0 || stride < w || luma.len() < (h - 1) * stride + w {
        return None;
    }
    // The strip is at least h/20 rows tall; its lower half is at least h/40 rows.
    let rows = (h / 40).max(1);
    (0..rows).find_map(|r| {
        let y = h - 1 - r;
        decode_row(&luma[y * stride..y * stride + w])
    })
}

/// Recovers the full frame index from a barcode reading and an approximate index (for
/// example [`super::frame_index_at`] of the capture time): the value congruent to `read`
/// modulo `2^FRAME_INDEX_BITS` that is closest to `near`.
pub fn unwrap_frame_index(read: u64, near: u64) -> u64 {
    let m: u64 = 1 << FRAME_INDEX_BITS;
    let read = read % m;
    let base = near - near % m + read;
    [base.checked_sub(m), Some(base), base.checked_add(m)]
        .into_iter()
        .flatten()
        .min_by_key(|c| c.abs_diff(near))
        .unwrap_or(base)
}

fn decode_row(row: &[u8]) -> Option<u64> {
    let w = row.len() as f32;
    let mw = w / MODULES as f32;
    let mut means = [0f32; MODULES];
    for (i, mean) in means.iter_mut().enumerate() {
        let c = (i as f32 + 0.5) * mw;
        let mut a = (c - mw / 4.0 - 0.5).ceil().max(0.0) as usize;
        let mut b = ((c + mw / 4.0 - 0.5).floor() as usize).min(row.len() - 1);
        if b < a {
            a = (c.floor() as usize).min(row.len() - 1);
            b = a;
        }
        let sum: u32 = row[a..=b].iter().map(|&v| u32::from(v)).sum();
        *mean = sum as f32 / (b - a + 1) as f32;
    }
    let lo = means.iter().copied().fold(f32::MAX, f32::min);
    let hi = means.iter().copied().fold(f32::MIN, f32::max);
    if hi - lo < 60.0 {
        return None;
    }
    let thr = (lo + hi) / 2.0;
    let margin = (hi - lo) * 0.15;
    let mut bits = [0u8; MODULES];
    for (bit, m) in bits.iter_mut().zip(&means) {
        if (m - thr).abs() < margin {
            return None;
        }
        *bit = u8::from(*m > thr);
    }
    if bits[..2] != START {
        return None;
    }
    let n = FRAME_INDEX_BITS as usize;
    let value = bits[2..2 + n]
        .iter()
        .fold(0u32, |acc, &b| (acc << 1) | u32::from(b));
    let crc = bits[2 + n..2 + n + CRC_BITS]
        .iter()
        .fold(0u8, |acc, &b| (acc << 1) | b);
    (crc == crc8(value)).then_some(u64::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwrap_picks_nearest() {
        let m = 1u64 << FRAME_INDEX_BITS;
        let full = 17_000_000_123u64;
        assert_eq!(unwrap_frame_index(full % m, full + 40), full);
        assert_eq!(unwrap_frame_index(full % m, full - 40), full);
        let edge = 5 * m + 3;
        assert_eq!(unwrap_frame_index(edge % m, edge - 10), edge);
        assert_eq!(unwrap_frame_index(m - 2, 5 * m + 1), 5 * m - 2);
        assert_eq!(unwrap_frame_index(3, 0), 3);
    }

    #[test]
    fn module_layout() {
        let bits = modules(0b101);
        assert_eq!(bits[..2], START);
        assert_eq!(bits[2 + 27..2 + 30], [1, 0, 1]);
        let row = strip_row(320, 5, 0, 255);
        assert_eq!(row.len(), 320);
        assert!(row[..8].iter().all(|&v| v == 255));
        assert!(row[8..16].iter().all(|&v| v == 0));
    }
}
