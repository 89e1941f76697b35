//! JPEG decoding through the worker's preprocess path: agreement with `jpeg-decoder`, and the
//! speed comparison behind the choice of `zune-jpeg` (printed, not asserted).

mod common;

use std::time::Instant;

use panoptes_scene::SceneSpec;
use panoptes_workers::preprocess::{InputBatch, decode_jpeg_into};

#[test]
fn zune_matches_jpeg_decoder_and_speed() {
    let spec = SceneSpec::new(1280, 720);
    let frames: Vec<Vec<u8>> = (0..30)
        .map(|i| common::simulator_frame(&spec, "cam-3", i * 11).0)
        .collect();
    let mut rgb = Vec::new();
    for jpeg in &frames[..3] {
        let (w, h) = decode_jpeg_into(jpeg, &mut rgb).unwrap();
        assert_eq!((w, h), common::ANALYTIC);
        let mut reference = jpeg_decoder::Decoder::new(jpeg.as_slice());
        let pixels = reference.decode().unwrap();
        assert_eq!(pixels.len(), rgb.len());
        let max_diff = pixels
            .iter()
            .zip(&rgb)
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        assert!(max_diff <= 8, "decoders differ by {max_diff}");
    }
    let reps = 3;
    let t = Instant::now();
    for _ in 0..reps {
        for jpeg in &frames {
            decode_jpeg_into(jpeg, &mut rgb).unwrap();
        }
    }
    let zune = t.elapsed().as_secs_f64() * 1e3 / (reps * frames.len()) as f64;
    let t = Instant::now();
    for _ in 0..reps {
        for jpeg in &frames {
            let _ = jpeg_decoder::Decoder::new(jpeg.as_slice())
                .decode()
                .unwrap();
        }
    }
    let jd = t.elapsed().as_secs_f64() * 1e3 / (reps * frames.len()) as f64;
    let mut batch = InputBatch::new(640, 640, 114, 1);
    let t = Instant::now();
    for jpeg in &frames {
        batch.set_jpeg(0, jpeg).unwrap();
    }
    let full = t.elapsed().as_secs_f64() * 1e3 / frames.len() as f64;
    eprintln!(
        "640x360 q80 JPEG decode: zune-jpeg {zune:.2} ms, jpeg-decoder {jd:.2} ms; zune decode + letterbox {full:.2} ms"
    );
}
