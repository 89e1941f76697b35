//! Frame preprocessing: JPEG decode and letterboxing into the model's input layout.
//!
//! The model input is `float32` NCHW RGB in `[0, 1]`. [`InputBatch`] owns one reusable buffer
//! for up to `capacity` images; [`InputBatch::set_rgb`] and [`InputBatch::set_jpeg`] letterbox
//! a frame into a slot (scaled to fit with the aspect ratio kept, bilinear, centred, padded
//! with the manifest's fill level) and return the [`Letterbox`] that maps boxes back to the
//! frame. JPEG decoding uses `zune-jpeg` (pure Rust, SIMD): 1.2 ms against `jpeg-decoder`'s
//! 2.0 ms for a 640×360 quality-80 frame here (measured by `tests/preprocess.rs`).

use tch::{Kind, Tensor};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use crate::error::PreprocessError;
use crate::model::ModelManifest;

/// Largest accepted frame side, in pixels (protects against absurd headers).
pub const MAX_FRAME_SIDE: u32 = 16_384;

/// Decodes a JPEG into packed RGB24, reusing `out`'s allocation. Returns `(width, height)`.
pub fn decode_jpeg_into(jpeg: &[u8], out: &mut Vec<u8>) -> Result<(u32, u32), PreprocessError> {
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(MAX_FRAME_SIDE as usize)
        .set_max_height(MAX_FRAME_SIDE as usize);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(jpeg), options);
    decoder
        .decode_headers()
        .map_err(|e| PreprocessError::Decode(format!("{e:?}")))?;
    let info = decoder
        .info()
        .ok_or_else(|| PreprocessError::Decode("no image header".into()))?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    if w == 0 || h == 0 {
        return Err(PreprocessError::Image(format!("empty image {w}x{h}")));
    }
    let size = decoder
        .output_buffer_size()
        .ok_or_else(|| PreprocessError::Decode("image size overflows".into()))?;
    out.resize(size, 0);
    decoder
        .decode_into(out)
        .map_err(|e| PreprocessError::Decode(format!("{e:?}")))?;
    let channels = size / (w as usize * h as usize);
    match channels {
        3 => {}
        1 => {
            // Grayscale JPEG: expand in place from the back.
            let n = w as usize * h as usize;
            out.resize(n * 3, 0);
            for i in (0..n).rev() {
                let v = out[i];
                out[3 * i..3 * i + 3].fill(v);
            }
        }
        c => {
            return Err(PreprocessError::Image(format!(
                "unsupported channel count {c}"
            )));
        }
    }
    Ok((w, h))
}

/// How a frame was placed into the model input: `input = source * scale + pad`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Source frame width in pixels.
    pub src_width: u32,
    /// Source frame height in pixels.
    pub src_height: u32,
    /// Horizontal scale (scaled width / source width).
    pub scale_x: f32,
    /// Vertical scale (scaled height / source height).
    pub scale_y: f32,
    /// Left padding in input pixels.
    pub pad_x: u32,
    /// Top padding in input pixels.
    pub pad_y: u32,
    /// Width of the scaled frame inside the input.
    pub scaled_width: u32,
    /// Height of the scaled frame inside the input.
    pub scaled_height: u32,
}

impl Letterbox {
    /// The placement of a `src_w × src_h` frame in a `dst_w × dst_h` input: one scale for both
    /// axes (rounded to whole pixels), centred, the rest padding.
    pub fn new(src_w: u32, src_h: u32, dst_w: u32, dst_h: u32) -> Self {
        let scale = (dst_w as f32 / src_w as f32).min(dst_h as f32 / src_h as f32);
        let scaled_width = ((src_w as f32 * scale).round() as u32).clamp(1, dst_w);
        let scaled_height = ((src_h as f32 * scale).round() as u32).clamp(1, dst_h);
        Self {
            src_width: src_w,
            src_height: src_h,
            scale_x: scaled_width as f32 / src_w as f32,
            scale_y: scaled_height as f32 / src_h as f32,
            pad_x: (dst_w - scaled_width) / 2,
            pad_y: (dst_h - scaled_height) / 2,
            scaled_width,
            scaled_height,
        }
    }

    /// Maps a box `[x1, y1, x2, y2]` in input pixels to source-frame pixels (not clamped).
    pub fn to_source(&self, b: [f32; 4]) -> [f32; 4] {
        let (px, py) = (self.pad_x as f32, self.pad_y as f32);
        [
            (b[0] - px) / self.scale_x,
            (b[1] - py) / self.scale_y,
            (b[2] - px) / self.scale_x,
            (b[3] - py) / self.scale_y,
        ]
    }

    /// Maps a box in source-frame pixels to input pixels.
    pub fn to_input(&self, b: [f32; 4]) -> [f32; 4] {
        let (px, py) = (self.pad_x as f32, self.pad_y as f32);
        [
            b[0] * self.scale_x + px,
            b[1] * self.scale_y + py,
            b[2] * self.scale_x + px,
            b[3] * self.scale_y + py,
        ]
    }
}

/// A reusable `[capacity, 3, height, width]` float32 input buffer.
#[derive(Debug, Clone)]
pub struct InputBatch {
    width: u32,
    height: u32,
    fill: f32,
    capacity: usize,
    data: Vec<f32>,
    /// Scratch RGB buffer for JPEG decoding.
    rgb: Vec<u8>,
    lut: [f32; 256],
}

impl InputBatch {
    /// A buffer for `capacity` images of `width × height`, padding with `letterbox_fill / 255`.
    pub fn new(width: u32, height: u32, letterbox_fill: u8, capacity: usize) -> Self {
        let mut lut = [0.0f32; 256];
        for (i, v) in lut.iter_mut().enumerate() {
            *v = i as f32 / 255.0;
        }
        Self {
            width,
            height,
            fill: f32::from(letterbox_fill) / 255.0,
            capacity,
            data: vec![0.0; capacity * 3 * width as usize * height as usize],
            rgb: Vec::new(),
            lut,
        }
    }

    /// A buffer matching a model's manifest.
    pub fn for_manifest(manifest: &ModelManifest, capacity: usize) -> Self {
        Self::new(
            manifest.input.width,
            manifest.input.height,
            manifest.input.letterbox_fill,
            capacity,
        )
    }

    /// Number of image slots.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Floats per image (`3 * height * width`).
    pub fn image_len(&self) -> usize {
        3 * self.width as usize * self.height as usize
    }

    /// The planar data of one slot.
    pub fn slot(&self, slot: usize) -> &[f32] {
        let n = self.image_len();
        &self.data[slot * n..(slot + 1) * n]
    }

    /// Decodes a JPEG and letterboxes it into `slot`.
    pub fn set_jpeg(&mut self, slot: usize, jpeg: &[u8]) -> Result<Letterbox, PreprocessError> {
        let mut rgb = std::mem::take(&mut self.rgb);
        let result =
            decode_jpeg_into(jpeg, &mut rgb).and_then(|(w, h)| self.set_rgb(slot, &rgb, w, h));
        self.rgb = rgb;
        result
    }

    /// Letterboxes a packed RGB24 frame (`w * h * 3` bytes) into `slot`.
    pub fn set_rgb(
        &mut self,
        slot: usize,
        rgb: &[u8],
        w: u32,
        h: u32,
    ) -> Result<Letterbox, PreprocessError> {
        if slot >= self.capacity {
            return Err(PreprocessError::Slot {
                slot,
                capacity: self.capacity,
            });
        }
        if w == 0 || h == 0 || rgb.len() != w as usize * h as usize * 3 {
            return Err(PreprocessError::Image(format!(
                "{} bytes is not a {w}x{h} RGB24 image",
                rgb.len()
            )));
        }
        let lb = Letterbox::new(w, h, self.width, self.height);
        let (dw, dh) = (self.width as usize, self.height as usize);
        let plane = dw * dh;
        let n = self.image_len();
        let fill = self.fill;
        let lut = self.lut;
        let out = &mut self.data[slot * n..(slot + 1) * n];
        out.fill(fill);
        let (sw, sh) = (w as usize, h as usize);
        let (nw, nh) = (lb.scaled_width as usize, lb.scaled_height as usize);
        let (px, py) = (lb.pad_x as usize, lb.pad_y as usize);
        if nw == sw && nh == sh {
            for y in 0..sh {
                let src = &rgb[y * sw * 3..(y + 1) * sw * 3];
                let base = (py + y) * dw + px;
                for (x, p) in src.chunks_exact(3).enumerate() {
                    out[base + x] = lut[p[0] as usize];
                    out[plane + base + x] = lut[p[1] as usize];
                    out[2 * plane + base + x] = lut[p[2] as usize];
                }
            }
            return Ok(lb);
        }
        // Bilinear with pixel centres aligned (like OpenCV's INTER_LINEAR).
        let taps = |dst: usize, src: usize, scale: f32| -> Vec<(usize, usize, f32)> {
            (0..dst)
                .map(|i| {
                    let s = ((i as f32 + 0.5) / scale - 0.5).clamp(0.0, (src - 1) as f32);
                    let i0 = s.floor() as usize;
                    (i0, (i0 + 1).min(src - 1), s - i0 as f32)
                })
                .collect()
        };
        let xs = taps(nw, sw, lb.scale_x);
        let ys = taps(nh, sh, lb.scale_y);
        for (y, &(y0, y1, wy)) in ys.iter().enumerate() {
            let r0 = &rgb[y0 * sw * 3..(y0 + 1) * sw * 3];
            let r1 = &rgb[y1 * sw * 3..(y1 + 1) * sw * 3];
            let base = (py + y) * dw + px;
            for (x, &(x0, x1, wx)) in xs.iter().enumerate() {
                for c in 0..3 {
                    let top = lut[r0[x0 * 3 + c] as usize] * (1.0 - wx)
                        + lut[r0[x1 * 3 + c] as usize] * wx;
                    let bot = lut[r1[x0 * 3 + c] as usize] * (1.0 - wx)
                        + lut[r1[x1 * 3 + c] as usize] * wx;
                    out[c * plane + base + x] = top * (1.0 - wy) + bot * wy;
                }
            }
        }
        Ok(lb)
    }

    /// Copies the first `n` slots into a `[n, 3, height, width]` CPU tensor.
    pub fn to_tensor(&self, n: usize) -> Tensor {
        let n = n.min(self.capacity);
        Tensor::from_slice(&self.data[..n * self.image_len()])
            .to_kind(Kind::Float)
            .view([n as i64, 3, i64::from(self.height), i64::from(self.width)])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_wide_frame_pads_top_and_bottom() {
        let lb = Letterbox::new(640, 360, 640, 640);
        assert_eq!((lb.pad_x, lb.pad_y), (0, 140));
        assert_eq!((lb.scaled_width, lb.scaled_height), (640, 360));
        let b = [10.0, 20.0, 110.0, 220.0];
        let i = lb.to_input(b);
        assert_eq!(i, [10.0, 160.0, 110.0, 360.0]);
        assert_eq!(lb.to_source(i), b);
    }

    #[test]
    fn letterbox_scales_and_round_trips() {
        let lb = Letterbox::new(1280, 720, 640, 640);
        assert_eq!((lb.scaled_width, lb.scaled_height), (640, 360));
        assert_eq!((lb.scale_x, lb.scale_y), (0.5, 0.5));
        assert_eq!(
            lb.to_source([0.0, 140.0, 640.0, 500.0]),
            [0.0, 0.0, 1280.0, 720.0]
        );
        let tall = Letterbox::new(300, 600, 640, 640);
        assert_eq!((tall.pad_x, tall.pad_y), (160, 0));
        let b = [30.0, 60.0, 90.0, 120.0];
        let back = tall.to_source(tall.to_input(b));
        for (a, b) in back.iter().zip(b) {
            assert!((a - b).abs() < 1e-3);
        }
    }

    #[test]
    fn set_rgb_places_pixels_and_padding() {
        let mut batch = InputBatch::new(8, 8, 114, 2);
        // 4x2 red image: scaled 2x to 8x4, padded 2 rows top and bottom.
        let rgb: Vec<u8> = [255u8, 0, 0].repeat(8);
        let lb = batch.set_rgb(1, &rgb, 4, 2).unwrap();
        assert_eq!(
            (lb.pad_x, lb.pad_y, lb.scaled_width, lb.scaled_height),
            (0, 2, 8, 4)
        );
        let s = batch.slot(1);
        let fill = 114.0 / 255.0;
        assert_eq!(s[0], fill); // R plane, row 0: padding
        assert_eq!(s[2 * 8], 1.0); // R plane, row 2: image
        assert_eq!(s[64 + 2 * 8], 0.0); // G plane, row 2
        assert_eq!(s[64 + 7 * 8], fill); // G plane, row 7: padding
        assert_eq!(batch.to_tensor(2).size(), [2, 3, 8, 8]);
        assert!(batch.set_rgb(2, &rgb, 4, 2).is_err());
        assert!(batch.set_rgb(0, &rgb, 5, 2).is_err());
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let mut batch = InputBatch::new(8, 8, 114, 1);
        let err = batch.set_jpeg(0, b"not a jpeg at all").unwrap_err();
        assert!(matches!(err, PreprocessError::Decode(_)), "{err}");
    }
}
