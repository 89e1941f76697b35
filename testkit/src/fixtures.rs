//! Test images: an RGB frame halved as an ingest node scales it, and JPEG encoding.

#[cfg(feature = "scene")]
pub use panoptes_scene::halve_rgb;

/// Encodes a packed RGB image of `w`×`h` as a JPEG at `quality`.
pub fn encode_jpeg(rgb: &[u8], w: usize, h: usize, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, quality)
        .encode(rgb, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
        .expect("jpeg encode");
    out
}
