//! `panoptes-scene` (tool crate): synthetic camera scenes with exact ground truth, and the
//! simulated cameras' configuration.
//!
//! It owns what the camera simulator, the checker, the harnesses and the worker's tests must
//! agree on without linking GStreamer: the pictures and their ground truth (this module), the
//! frame-index barcode ([`read_frame_index`]) and the serde configuration of simulated cameras
//! ([`camera`]). Nothing here ships in a product image.
//!
//! Every frame is a pure function of `(SceneSpec, camera id, frame index)`:
//!
//! - a mid-gray background with a gentle static wave pattern (not flat, not noisy);
//! - `objects` solid rectangles, one per horizontal lane, bouncing left-right at their own
//!   speed; class `k` is drawn in the saturated colour [`CLASS_COLORS_RGB`]`[k]`
//!   (person = red, car = green, bicycle = blue). Objects never overlap, never cover the
//!   barcode strip, and their boxes are whole, even pixel coordinates fully inside the frame;
//! - a barcode strip along the bottom ([`barcode_height`] rows) that encodes the frame index
//!   (see [`read_frame_index`]), so a consumer can tell exactly which frame it is looking at
//!   even after JPEG compression and downscaling.
//!
//! [`render_rgb`] is the reference picture; [`render_i420`] is the same picture converted
//! with BT.601 limited-range coefficients (the colorimetry camsim announces in its caps).
//! No GStreamer here: everything is plain arithmetic so checkers can recompute it.

mod barcode;
pub mod camera;
pub mod variant;

pub use barcode::{FRAME_INDEX_BITS, read_frame_index, unwrap_frame_index};

use serde::{Deserialize, Serialize};

/// Class names by class id, as used in ground truth and detections.
pub const CLASS_NAMES: [&str; 3] = ["person", "car", "bicycle"];

/// Fill colour (RGB) of each class: saturated red, green and blue.
pub const CLASS_COLORS_RGB: [[u8; 3]; 3] = [[255, 0, 0], [0, 255, 0], [0, 0, 255]];

/// Width/height ratio of each class's rectangle (before a small per-object jitter).
const CLASS_ASPECT: [f32; 3] = [0.5, 1.8, 1.3];

/// What a simulated camera shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SceneSpec {
    /// Frame width in pixels (even for I420).
    pub width: u32,
    /// Frame height in pixels (even for I420).
    pub height: u32,
    /// Number of moving objects (default 3). Objects that do not fit (lanes under 4 px) are omitted.
    pub objects: u32,
    /// Seed mixed with the camera id to place and move the objects.
    pub seed: u64,
}

impl SceneSpec {
    /// A spec of the given size with the default 3 objects and seed 1.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            objects: 3,
            seed: 1,
        }
    }
}

impl Default for SceneSpec {
    fn default() -> Self {
        Self::new(640, 360)
    }
}

/// One object's exact box in source-frame pixels (`x2`/`y2` exclusive).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GroundTruthBox {
    /// Index into [`CLASS_NAMES`].
    pub class_id: u32,
    /// Left edge (inclusive).
    pub x1: f32,
    /// Top edge (inclusive).
    pub y1: f32,
    /// Right edge (exclusive).
    pub x2: f32,
    /// Bottom edge (exclusive).
    pub y2: f32,
}

impl GroundTruthBox {
    /// The class name of this box.
    pub fn class_name(&self) -> &'static str {
        CLASS_NAMES[self.class_id as usize % CLASS_NAMES.len()]
    }

    /// Area in square pixels.
    pub fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    /// Intersection over union with another box (0 when disjoint).
    pub fn iou(&self, other: &GroundTruthBox) -> f32 {
        let w = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let h = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = w * h;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 { 0.0 } else { inter / union }
    }
}

/// Frame index of the frame a `fps` camera shows at `unix_time_ns` (= unix time × fps, floored).
pub fn frame_index_at(unix_time_ns: u128, fps: u32) -> u64 {
    (unix_time_ns * u128::from(fps) / 1_000_000_000) as u64
}

/// Height in rows of the barcode strip at the bottom of a `height`-row frame:
/// `max(8, ceil(height / 20))`, rounded up to even, at most half the frame.
pub fn barcode_height(height: u32) -> u32 {
    let h = 8.max(height.div_ceil(20));
    (h + (h & 1)).min(height / 2)
}

/// Stable 64-bit FNV-1a hash of a camera id (independent of Rust's hasher).
pub fn camera_hash(camera_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in camera_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64 step: a tiny, stable PRNG for scene layout.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Static description of one object's motion; positions in pixels (all even).
#[derive(Debug, Clone, Copy)]
struct Track {
    class_id: u32,
    w: u32,
    h: u32,
    y: u32,
    /// Horizontal speed in 2-pixel units per frame.
    speed: u64,
    /// Phase in 2-pixel units along the bounce cycle.
    phase: u64,
}

impl Track {
    fn x_at(&self, width: u32, frame_index: u64) -> u32 {
        let range = u64::from(width.saturating_sub(self.w) / 2);
        if range == 0 {
            return 0;
        }
        let period = 2 * range;
        let p = (self.phase + self.speed.wrapping_mul(frame_index) % period) % period;
        let units = if p <= range { p } else { period - p };
        (units * 2) as u32
    }
}

fn even_floor(v: u32) -> u32 {
    v & !1
}

/// The objects' tracks: one lane each, stacked above the barcode strip.
fn tracks(spec: &SceneSpec, camera_id: &str) -> Vec<Track> {
    let (w, h) = (spec.width, spec.height);
    let scene_h = h.saturating_sub(barcode_height(h));
    let lanes = spec.objects.min(scene_h.saturating_sub(2) / 4);
    if lanes == 0 || w < 4 {
        return Vec::new();
    }
    // Lanes of even height; the last lane keeps a 2-px gap above the barcode strip.
    let lane_h = even_floor((scene_h - 2) / lanes);
    let mut rng = SplitMix(spec.seed ^ camera_hash(camera_id).rotate_left(17));
    let class_base = rng.next() % 3;
    let speed_max = u64::from((w / 160).max(1));
    (0..lanes)
        .map(|i| {
            let class_id = ((class_base + u64::from(i)) % 3) as u32;
            let frac = 0.06 + 0.09 * rng.unit();
            let max_oh = lane_h.saturating_sub(2).max(2);
            let oh = even_floor((frac * h as f32).round() as u32).clamp(2, max_oh);
            let aspect = CLASS_ASPECT[class_id as usize] * (0.9 + 0.2 * rng.unit());
            let ow = even_floor((oh as f32 * aspect).round() as u32).clamp(2, even_floor(w) - 2);
            let slack = lane_h.saturating_sub(oh);
            let y =
                i * lane_h + even_floor((rng.unit() * slack as f32) as u32).min(even_floor(slack));
            let speed = 1 + rng.next() % speed_max;
            let range = u64::from(w.saturating_sub(ow) / 2).max(1);
            let phase = rng.next() % (2 * range);
            Track {
                class_id,
                w: ow,
                h: oh,
                y,
                speed,
                phase,
            }
        })
        .collect()
}

/// Integer boxes `(class_id, x1, y1, x2, y2)` of the objects at `frame_index`.
fn boxes(spec: &SceneSpec, camera_id: &str, frame_index: u64) -> Vec<(u32, u32, u32, u32, u32)> {
    tracks(spec, camera_id)
        .iter()
        .map(|t| {
            let x = t.x_at(spec.width, frame_index);
            (t.class_id, x, t.y, x + t.w, t.y + t.h)
        })
        .collect()
}

/// Exact boxes of the objects visible in frame `frame_index` of `camera_id`.
pub fn ground_truth(spec: &SceneSpec, camera_id: &str, frame_index: u64) -> Vec<GroundTruthBox> {
    boxes(spec, camera_id, frame_index)
        .into_iter()
        .map(|(class_id, x1, y1, x2, y2)| GroundTruthBox {
            class_id,
            x1: x1 as f32,
            y1: y1 as f32,
            x2: x2 as f32,
            y2: y2 as f32,
        })
        .collect()
}

/// Background gray level (0..=255, RGB) per column and per row; summed around 128.
fn background_waves(width: u32, height: u32) -> (Vec<i32>, Vec<i32>) {
    use std::f32::consts::TAU;
    let cols = (0..width)
        .map(|x| (10.0 * (TAU * 3.0 * x as f32 / width.max(1) as f32).sin()).round() as i32)
        .collect();
    let rows = (0..height)
        .map(|y| (8.0 * (TAU * 2.0 * y as f32 / height.max(1) as f32).cos()).round() as i32)
        .collect();
    (cols, rows)
}

/// Halves a packed RGB image of `w`×`h` with a 2×2 box filter (rounded), as an ingest node
/// scales 1280×720 to 640×360. Returns the `w / 2`×`h / 2` image.
pub fn halve_rgb(rgb: &[u8], w: usize, h: usize) -> Vec<u8> {
    let (hw, hh) = (w / 2, h / 2);
    let mut half = vec![0u8; hw * hh * 3];
    for y in 0..hh {
        for x in 0..hw {
            for c in 0..3 {
                let at =
                    |dx: usize, dy: usize| u32::from(rgb[((2 * y + dy) * w + 2 * x + dx) * 3 + c]);
                half[(y * hw + x) * 3 + c] =
                    ((at(0, 0) + at(1, 0) + at(0, 1) + at(1, 1) + 2) / 4) as u8;
            }
        }
    }
    half
}

/// BT.601 limited-range conversion of one RGB colour to (Y, Cb, Cr).
pub fn rgb_to_ycbcr(rgb: [u8; 3]) -> (u8, u8, u8) {
    let [r, g, b] = rgb.map(f32::from);
    let y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0;
    let cb = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0;
    let cr = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0;
    let q = |v: f32| v.round().clamp(0.0, 255.0) as u8;
    (q(y), q(cb), q(cr))
}

/// Size in bytes of an I420 frame of the given (even) size.
pub fn i420_size(width: u32, height: u32) -> usize {
    let (w, h) = (width as usize, height as usize);
    w * h + 2 * (w / 2) * (h / 2)
}

/// Renders frame `frame_index` of `camera_id` as I420 (planes Y, U, V, tightly packed)
/// into `out`, which is resized to [`i420_size`]. Width and height must be even.
pub fn render_i420(spec: &SceneSpec, camera_id: &str, frame_index: u64, out: &mut Vec<u8>) {
    out.resize(i420_size(spec.width, spec.height), 0);
    render_i420_into(spec, camera_id, frame_index, out);
}

/// Like [`render_i420`] but into a slice of exactly [`i420_size`] bytes (e.g. a mapped
/// GStreamer buffer), avoiding an extra copy.
///
/// # Panics
/// If the width or height is odd or the slice has the wrong size.
pub fn render_i420_into(spec: &SceneSpec, camera_id: &str, frame_index: u64, out: &mut [u8]) {
    let (w, h) = (spec.width as usize, spec.height as usize);
    assert!(
        w.is_multiple_of(2) && h.is_multiple_of(2),
        "I420 needs even width and height"
    );
    assert_eq!(
        out.len(),
        i420_size(spec.width, spec.height),
        "I420 buffer size"
    );
    let (y_plane, chroma) = out.split_at_mut(w * h);
    let (u_plane, v_plane) = chroma.split_at_mut((w / 2) * (h / 2));

    // Background: gray levels through a lookup table into limited-range luma.
    let lut: Vec<u8> = (0..=255u8).map(|v| rgb_to_ycbcr([v, v, v]).0).collect();
    let (cols, rows) = background_waves(spec.width, spec.height);
    for (row, dy) in y_plane.chunks_exact_mut(w).zip(&rows) {
        for (px, dx) in row.iter_mut().zip(&cols) {
            *px = lut[(128 + dx + dy).clamp(0, 255) as usize];
        }
    }
    u_plane.fill(128);
    v_plane.fill(128);

    // Objects (even coordinates, so chroma rectangles are exact).
    for (class_id, x1, y1, x2, y2) in boxes(spec, camera_id, frame_index) {
        let (yy, cb, cr) = rgb_to_ycbcr(CLASS_COLORS_RGB[class_id as usize]);
        let (x1, y1, x2, y2) = (x1 as usize, y1 as usize, x2 as usize, y2 as usize);
        for row in y_plane.chunks_exact_mut(w).take(y2).skip(y1) {
            row[x1..x2].fill(yy);
        }
        let cw = w / 2;
        for cy in y1 / 2..y2 / 2 {
            u_plane[cy * cw + x1 / 2..cy * cw + x2 / 2].fill(cb);
            v_plane[cy * cw + x1 / 2..cy * cw + x2 / 2].fill(cr);
        }
    }

    // Barcode strip: luma only (chroma stays neutral).
    let bh = barcode_height(spec.height) as usize;
    let (black, white) = (lut[0], lut[255]);
    let row = barcode::strip_row(spec.width, frame_index, black, white);
    for dst in y_plane.chunks_exact_mut(w).skip(h - bh) {
        dst.copy_from_slice(&row);
    }
}

/// Renders the same picture as [`render_i420`] as packed RGB24 (`width * height * 3` bytes).
pub fn render_rgb(spec: &SceneSpec, camera_id: &str, frame_index: u64, out: &mut Vec<u8>) {
    let (w, h) = (spec.width as usize, spec.height as usize);
    out.clear();
    out.resize(w * h * 3, 0);
    let (cols, rows) = background_waves(spec.width, spec.height);
    for (row, dy) in out.chunks_exact_mut(w * 3).zip(&rows) {
        for (px, dx) in row.chunks_exact_mut(3).zip(&cols) {
            px.fill((128 + dx + dy).clamp(0, 255) as u8);
        }
    }
    for (class_id, x1, y1, x2, y2) in boxes(spec, camera_id, frame_index) {
        let color = CLASS_COLORS_RGB[class_id as usize];
        for row in out
            .chunks_exact_mut(w * 3)
            .take(y2 as usize)
            .skip(y1 as usize)
        {
            for px in row[x1 as usize * 3..x2 as usize * 3].chunks_exact_mut(3) {
                px.copy_from_slice(&color);
            }
        }
    }
    let bh = barcode_height(spec.height) as usize;
    let strip = barcode::strip_row(spec.width, frame_index, 0, 255);
    for row in out.chunks_exact_mut(w * 3).skip(h.saturating_sub(bh)) {
        for (px, v) in row.chunks_exact_mut(3).zip(&strip) {
            px.fill(*v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: [(u32, u32); 4] = [(320, 180), (640, 360), (1280, 720), (320, 240)];

    #[test]
    fn ground_truth_is_deterministic_and_depends_on_inputs() {
        let spec = SceneSpec::default();
        let a = ground_truth(&spec, "cam0", 1234);
        assert_eq!(a, ground_truth(&spec, "cam0", 1234));
        assert_eq!(a.len(), 3);
        assert_ne!(a, ground_truth(&spec, "cam1", 1234));
        assert_ne!(a, ground_truth(&spec, "cam0", 1235));
        let other_seed = SceneSpec { seed: 2, ..spec };
        assert_ne!(a, ground_truth(&other_seed, "cam0", 1234));
        let classes: Vec<u32> = a.iter().map(|b| b.class_id).collect();
        for c in 0..3 {
            assert!(
                classes.contains(&c),
                "all classes appear with 3 objects: {classes:?}"
            );
        }
    }

    #[test]
    fn boxes_inside_frame_sized_and_disjoint() {
        for (w, h) in SIZES {
            for objects in [1, 3, 5] {
                for seed in 0..5 {
                    let spec = SceneSpec {
                        width: w,
                        height: h,
                        objects,
                        seed,
                    };
                    let strip_top = (h - barcode_height(h)) as f32;
                    for f in (0..2000u64)
                        .step_by(7)
                        .chain([u64::MAX / 3, 51_234_567_890])
                    {
                        let gt = ground_truth(&spec, "camX", f);
                        assert_eq!(gt.len(), objects as usize);
                        for (i, b) in gt.iter().enumerate() {
                            assert!(b.x1 >= 0.0 && b.y1 >= 0.0 && b.x2 <= w as f32, "{b:?}");
                            assert!(b.y2 <= strip_top, "box covers barcode: {b:?}");
                            assert!(b.x1 < b.x2 && b.y1 < b.y2);
                            assert_eq!(b.x1.fract(), 0.0);
                            let bh = b.y2 - b.y1;
                            if objects <= 3 {
                                assert!(bh >= 0.05 * h as f32 && bh <= 0.16 * h as f32, "{bh}");
                            }
                            for o in &gt[i + 1..] {
                                assert_eq!(b.iou(o), 0.0, "overlap {b:?} {o:?}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn objects_move() {
        let spec = SceneSpec::default();
        let a = ground_truth(&spec, "cam0", 100);
        let b = ground_truth(&spec, "cam0", 110);
        for (p, q) in a.iter().zip(&b) {
            assert_ne!(p.x1, q.x1);
            assert_eq!(p.y1, q.y1);
        }
    }

    #[test]
    fn rgb_matches_ground_truth_colors() {
        let spec = SceneSpec::new(640, 360);
        let mut rgb = Vec::new();
        render_rgb(&spec, "cam0", 77, &mut rgb);
        for b in ground_truth(&spec, "cam0", 77) {
            let cx = ((b.x1 + b.x2) / 2.0) as usize;
            let cy = ((b.y1 + b.y2) / 2.0) as usize;
            let i = (cy * 640 + cx) * 3;
            assert_eq!(rgb[i..i + 3], CLASS_COLORS_RGB[b.class_id as usize]);
        }
        // Background is gray but not flat.
        let row: Vec<u8> = (0..640).map(|x| rgb[(5 * 640 + x) * 3]).collect();
        let (lo, hi) = (row.iter().min().unwrap(), row.iter().max().unwrap());
        assert!(*hi - *lo >= 10 && *lo > 90 && *hi < 170, "{lo}..{hi}");
    }

    fn luma_of_rgb(rgb: &[u8]) -> Vec<u8> {
        rgb.chunks_exact(3)
            .map(|p| rgb_to_ycbcr([p[0], p[1], p[2]]).0)
            .collect()
    }

    #[test]
    fn i420_and_rgb_agree() {
        for (w, h) in SIZES {
            let spec = SceneSpec::new(w, h);
            let (mut yuv, mut rgb) = (Vec::new(), Vec::new());
            render_i420(&spec, "cam3", 999, &mut yuv);
            render_rgb(&spec, "cam3", 999, &mut rgb);
            let luma = luma_of_rgb(&rgb);
            let y = &yuv[..(w * h) as usize];
            let worst = y
                .iter()
                .zip(&luma)
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap();
            assert!(worst <= 1, "luma differs by {worst}");
            // Chroma at an object's centre matches its colour.
            let b = ground_truth(&spec, "cam3", 999)[0];
            let (cx, cy) = (
                ((b.x1 + b.x2) / 4.0) as usize,
                ((b.y1 + b.y2) / 4.0) as usize,
            );
            let (_, cb, cr) = rgb_to_ycbcr(CLASS_COLORS_RGB[b.class_id as usize]);
            let off = (w * h) as usize;
            let cw = (w / 2) as usize;
            assert_eq!(yuv[off + cy * cw + cx], cb);
            assert_eq!(yuv[off + off / 4 + cy * cw + cx], cr);
        }
    }

    /// Box-filter downscale of a luma plane by an integer factor.
    fn box_down(luma: &[u8], w: usize, h: usize, f: usize) -> (Vec<u8>, usize, usize) {
        let (nw, nh) = (w / f, h / f);
        let mut out = vec![0u8; nw * nh];
        for y in 0..nh {
            for x in 0..nw {
                let mut s = 0u32;
                for dy in 0..f {
                    for dx in 0..f {
                        s += u32::from(luma[(y * f + dy) * w + x * f + dx]);
                    }
                }
                out[y * nw + x] = (s / (f * f) as u32) as u8;
            }
        }
        (out, nw, nh)
    }

    #[test]
    fn frame_index_round_trip_with_downscale() {
        let indexes = [
            0u64,
            1,
            12345,
            (1 << 30) - 1,
            17_000_000_123,
            51_234_567_890,
        ];
        for (w, h) in SIZES {
            for &idx in &indexes {
                let spec = SceneSpec::new(w, h);
                let mut yuv = Vec::new();
                render_i420(&spec, "cam0", idx, &mut yuv);
                let (w, h) = (w as usize, h as usize);
                let y = &yuv[..w * h];
                let want = idx % (1 << FRAME_INDEX_BITS);
                assert_eq!(read_frame_index(y, w as u32, h as u32, w), Some(want));
                for f in [2, 4] {
                    let (d, nw, nh) = box_down(y, w, h, f);
                    assert_eq!(
                        read_frame_index(&d, nw as u32, nh as u32, nw),
                        Some(want),
                        "{w}x{h} /{f} idx {idx}"
                    );
                }
                // With a padded stride, too.
                let stride = w + 13;
                let mut padded = vec![7u8; stride * h];
                for r in 0..h {
                    padded[r * stride..r * stride + w].copy_from_slice(&y[r * w..(r + 1) * w]);
                }
                assert_eq!(
                    read_frame_index(&padded, w as u32, h as u32, stride),
                    Some(want)
                );
            }
        }
    }

    #[test]
    fn no_code_in_plain_images() {
        let gray = vec![128u8; 320 * 180];
        assert_eq!(read_frame_index(&gray, 320, 180, 320), None);
        let mut stripes = vec![0u8; 320 * 180];
        for (i, p) in stripes.iter_mut().enumerate() {
            *p = if (i % 320) / 8 % 2 == 0 { 0 } else { 255 };
        }
        assert_eq!(read_frame_index(&stripes, 320, 180, 320), None);
        assert_eq!(read_frame_index(&gray, 320, 180, 100), None, "bad stride");
        assert_eq!(
            read_frame_index(&gray[..100], 320, 180, 320),
            None,
            "short buffer"
        );
    }

    #[test]
    fn frame_index_at_is_time_times_fps() {
        assert_eq!(frame_index_at(1_000_000_000, 10), 10);
        assert_eq!(frame_index_at(1_099_999_999, 10), 10);
        assert_eq!(frame_index_at(1_100_000_000, 10), 11);
        assert_eq!(
            frame_index_at(1_700_000_000_500_000_000, 30),
            51_000_000_015
        );
    }

    #[test]
    fn barcode_strip_sizes() {
        assert_eq!(barcode_height(180), 10);
        assert_eq!(barcode_height(360), 18);
        assert_eq!(barcode_height(720), 36);
        assert_eq!(barcode_height(100), 8);
    }
}
