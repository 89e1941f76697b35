//! Picture variants of a simulated camera, switched at run time (camsim's control API,
//! `POST /cameras/{id}/{variant}`), to exercise drift detection:
//!
//! - `dark`: the picture at a tenth of its luma and saturation (lights out, night);
//! - `covered`: a large dark occluder over 80 % × the height above the barcode (a lens cap,
//!   a hand, a sign hung in front of the camera);
//! - `blurred`: a defocused lens (separable box blur, radius `max(2, width / 40)`, twice);
//! - `scene_changed`: a different background and palette (inverted luma, tinted chroma), as
//!   when a camera is turned to look elsewhere;
//! - `normal`: the scene as rendered.
//!
//! Each variant is a pure function applied in place to a rendered I420 frame (planes Y, U, V
//! tightly packed, even width and height). The barcode strip keeps its frame index readable
//! except under `blurred` and `scene_changed`, which alter the whole picture.

use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::barcode_height;

/// What a camera shows, beyond its scene.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// The scene as rendered.
    #[default]
    Normal,
    /// Lights out.
    Dark,
    /// A large occluder in front of the lens.
    Covered,
    /// Out of focus.
    Blurred,
    /// Another background and palette.
    SceneChanged,
}

/// Every variant, in `as_u8` order.
pub const VARIANTS: [Variant; 5] = [
    Variant::Normal,
    Variant::Dark,
    Variant::Covered,
    Variant::Blurred,
    Variant::SceneChanged,
];

impl Variant {
    /// The control API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Normal => "normal",
            Variant::Dark => "dark",
            Variant::Covered => "covered",
            Variant::Blurred => "blurred",
            Variant::SceneChanged => "scene_changed",
        }
    }

    /// Compact form (for an atomic).
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// From [`Variant::as_u8`] (unknown values: `Normal`).
    pub fn from_u8(v: u8) -> Self {
        VARIANTS.get(usize::from(v)).copied().unwrap_or_default()
    }

    /// Applies the variant to an I420 frame of `w × h` in place.
    ///
    /// # Panics
    /// If the buffer is not `w × h × 3 / 2` bytes.
    pub fn apply_i420(self, w: u32, h: u32, frame: &mut [u8]) {
        let (w, h) = (w as usize, h as usize);
        assert_eq!(
            frame.len(),
            w * h + 2 * (w / 2) * (h / 2),
            "I420 buffer size"
        );
        let (y, chroma) = frame.split_at_mut(w * h);
        let (u, v) = chroma.split_at_mut((w / 2) * (h / 2));
        match self {
            Variant::Normal => {}
            Variant::Dark => {
                y.iter_mut()
                    .for_each(|p| *p = 16 + p.saturating_sub(16) / 10);
                for c in u.iter_mut().chain(v.iter_mut()) {
                    *c = (128 + (i32::from(*c) - 128) / 10) as u8;
                }
            }
            Variant::Covered => {
                let bottom = h - barcode_height(h as u32) as usize;
                let (x0, x1) = ((w / 10) & !1, (w * 9 / 10) & !1);
                for (row, line) in y.chunks_exact_mut(w).take(bottom).enumerate() {
                    line[x0..x1].fill((40 + row * 16 / h) as u8);
                }
                let cw = w / 2;
                for cy in 0..bottom / 2 {
                    u[cy * cw + x0 / 2..cy * cw + x1 / 2].fill(120);
                    v[cy * cw + x0 / 2..cy * cw + x1 / 2].fill(136);
                }
            }
            Variant::Blurred => {
                let r = (w / 40).max(2);
                for _ in 0..2 {
                    box_blur(y, w, h, r);
                }
                box_blur(u, w / 2, h / 2, r / 2);
                box_blur(v, w / 2, h / 2, r / 2);
            }
            Variant::SceneChanged => {
                y.iter_mut()
                    .for_each(|p| *p = 251u8.saturating_sub(*p).clamp(16, 235));
                u.iter_mut().for_each(|c| *c = c.saturating_add(40));
                v.iter_mut().for_each(|c| *c = c.saturating_sub(30));
            }
        }
    }
}

impl FromStr for Variant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VARIANTS
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("unknown variant {s:?}"))
    }
}

/// Box blur of radius `r` of a `w × h` plane, rows then columns (edges clamped).
fn box_blur(plane: &mut [u8], w: usize, h: usize, r: usize) {
    if r == 0 || w == 0 || h == 0 {
        return;
    }
    let mut line = Vec::with_capacity(w.max(h));
    let blur = |line: &[u8], out: &mut dyn FnMut(usize, u8)| {
        let n = line.len();
        let at = |i: isize| u32::from(line[i.clamp(0, n as isize - 1) as usize]);
        let mut sum: u32 = (-(r as isize)..=r as isize).map(at).sum();
        let d = 2 * r as u32 + 1;
        for i in 0..n {
            out(i, (sum / d) as u8);
            sum += at(i as isize + r as isize + 1);
            sum -= at(i as isize - r as isize);
        }
    };
    for y in 0..h {
        line.clear();
        line.extend_from_slice(&plane[y * w..(y + 1) * w]);
        blur(&line, &mut |x, p| plane[y * w + x] = p);
    }
    for x in 0..w {
        line.clear();
        line.extend((0..h).map(|y| plane[y * w + x]));
        blur(&line, &mut |y, p| plane[y * w + x] = p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SceneSpec, render_i420};

    fn frame() -> (SceneSpec, Vec<u8>) {
        let spec = SceneSpec::new(320, 180);
        let mut out = Vec::new();
        render_i420(&spec, "cam0", 42, &mut out);
        (spec, out)
    }

    fn mean(p: &[u8]) -> f64 {
        p.iter().map(|&v| f64::from(v)).sum::<f64>() / p.len() as f64
    }

    /// Sum of squared horizontal gradients of the luma plane (falls as edges spread).
    fn edges(y: &[u8], w: usize) -> u64 {
        y.chunks_exact(w)
            .flat_map(|r| r.windows(2).map(|p| u64::from(p[0].abs_diff(p[1])).pow(2)))
            .sum()
    }

    #[test]
    fn variants_change_the_picture_as_named() {
        let (spec, base) = frame();
        let (w, h) = (spec.width, spec.height);
        let luma = (w * h) as usize;
        let apply = |v: Variant| {
            let mut f = base.clone();
            v.apply_i420(w, h, &mut f);
            f
        };
        assert_eq!(apply(Variant::Normal), base);
        let dark = apply(Variant::Dark);
        assert!(mean(&dark[..luma]) < 30.0, "{}", mean(&dark[..luma]));
        let covered = apply(Variant::Covered);
        let same = covered.iter().zip(&base).filter(|(a, b)| a == b).count();
        assert!(same < base.len() / 2, "most of the picture is covered");
        let blurred = apply(Variant::Blurred);
        assert!(edges(&blurred[..luma], w as usize) * 3 < edges(&base[..luma], w as usize));
        let changed = apply(Variant::SceneChanged);
        // A mid-grey scene keeps its mean luma when inverted; its palette moves.
        let (u, v) = (luma..luma + luma / 4, luma + luma / 4..base.len());
        assert!(mean(&changed[u.clone()]) > mean(&base[u]) + 30.0);
        assert!(mean(&changed[v.clone()]) < mean(&base[v]) - 20.0);
        for v in VARIANTS {
            assert_eq!(v.as_str().parse::<Variant>(), Ok(v));
            assert_eq!(Variant::from_u8(v.as_u8()), v);
        }
        assert!("stall".parse::<Variant>().is_err());
    }
}
