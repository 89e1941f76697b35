//! Property-based tests of what a worker reads from outside: its configuration file and the
//! JPEG payloads of frame records.
//!
//! - Any configuration file derived from the defaults with hostile values
//!   (`panoptes_testkit::props::config_documents`) loads and validates to a config or a
//!   clear error, never a panic.
//! - The JPEG frame-header reader never panics on arbitrary bytes and reads the size of
//!   every real JPEG; decoding damaged JPEGs (bytes flipped, truncated, frame header
//!   rewritten) never panics and never sizes a buffer beyond `3 × width × height` of the
//!   size the envelope declared.

use std::time::Duration;

use panoptes_runtime::config::from_toml_str;
use panoptes_testkit::kafka::frame_headers;
use panoptes_testkit::props::config_documents;
use panoptes_workers::config::WorkerConfig;
use panoptes_workers::pipeline::decode::admit;
use panoptes_workers::preprocess::{decode_jpeg_sized, jpeg_dimensions};
use proptest::prelude::*;

fn jpeg(w: u16, h: u16, seed: u8) -> Vec<u8> {
    let (pw, ph) = (usize::from(w), usize::from(h));
    let rgb: Vec<u8> = (0..pw * ph * 3)
        .map(|i| (i as u8).wrapping_mul(seed | 1))
        .collect();
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 75)
        .encode(&rgb, w, h, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    out
}

proptest! {
    #[test]
    fn config_files_load_or_fail_clearly(
        doc in config_documents(serde_json::to_value(WorkerConfig::default()).unwrap())
    ) {
        match from_toml_str::<WorkerConfig>(&doc) {
            Ok(c) => {
                if let Err(e) = c.validate() {
                    prop_assert!(!e.to_string().is_empty());
                }
            }
            Err(e) => prop_assert!(e.to_string().len() > "invalid configuration: ".len()),
        }
    }

    #[test]
    fn header_reader_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut soi = vec![0xFF, 0xD8];
        soi.extend_from_slice(&bytes);
        for input in [&bytes, &soi] {
            if let Ok((w, h)) = jpeg_dimensions(input) {
                prop_assert!(w > 0 && h > 0 && w <= 65_535 && h <= 65_535);
            }
        }
    }

    #[test]
    fn header_reader_reads_real_jpegs(w in 1u16..200, h in 1u16..200, seed in any::<u8>()) {
        prop_assert_eq!(jpeg_dimensions(&jpeg(w, h, seed)).unwrap(), (u32::from(w), u32::from(h)));
    }

    /// A real JPEG, damaged: some bytes replaced, maybe truncated, maybe its frame header
    /// claiming another size. Decoding with the envelope's size either succeeds with that
    /// size or fails; the scratch buffer never exceeds that size.
    #[test]
    fn damaged_jpegs_never_panic_or_overallocate(
        (w, h) in (8u16..96, 8u16..96),
        seed in any::<u8>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        cut in prop::option::weighted(0.3, any::<prop::sample::Index>()),
        claim in prop::option::weighted(0.3, (1u16..=u16::MAX, 1u16..=u16::MAX)),
    ) {
        let mut bytes = jpeg(w, h, seed);
        if let Some((cw, ch)) = claim {
            let sof = bytes.windows(2).position(|m| m == [0xFF, 0xC0]).unwrap();
            bytes[sof + 5..sof + 7].copy_from_slice(&ch.to_be_bytes());
            bytes[sof + 7..sof + 9].copy_from_slice(&cw.to_be_bytes());
        }
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] = v;
        }
        if let Some(at) = cut {
            bytes.truncate(at.index(bytes.len()));
        }
        let expected = (u32::from(w), u32::from(h));
        let envelope = frame_headers("cam0", 0, expected, Duration::ZERO);
        let admitted = admit(&envelope, &bytes, 3840 * 2160);
        let mut out = Vec::new();
        match decode_jpeg_sized(&bytes, expected, &mut out) {
            Ok(size) => {
                prop_assert_eq!(size, expected);
                prop_assert!(admitted.is_ok(), "decoded what admit refused");
                prop_assert_eq!(out.len(), usize::from(w) * usize::from(h) * 3);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
        prop_assert!(out.capacity() <= usize::from(w) * usize::from(h) * 3);
    }
}
