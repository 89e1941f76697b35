//! Test images: an RGB frame halved as an ingest node scales it, and JPEG encoding.

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

/// Encodes a packed RGB image of `w`×`h` as a JPEG at `quality`.
pub fn encode_jpeg(rgb: &[u8], w: usize, h: usize, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .expect("jpeg encode");
    out
}
