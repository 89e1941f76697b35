//! Decode only what we keep: which compressed frames may skip the decoder (pure; the probe
//! that applies it lives in [`crate::pipeline`]).
//!
//! The sampler (`videorate`) keeps about one frame per sampling interval. When the camera
//! sends several frames per interval, decoding all of them is the node's largest cost, and
//! most of it is thrown away. [`DecodeSkip`] sees every access unit in decode order, before
//! the decoder, and says [`Verdict::Skip`] for those whose picture nothing will need:
//!
//! - **Non-reference pictures** (H.264 `nal_ref_idc = 0`, H.265 sub-layer non-reference types,
//!   e.g. the B-frames of an IBBP stream): no other picture is predicted from them, so one can
//!   be skipped when its sampling window already has a decoded picture.
//! - **Keyframes only**: when the camera's keyframes alone come at least as often as the
//!   sampling rate (a very low rate, or an intra-only codec such as MJPEG, where every frame
//!   is a keyframe), every delta frame is skipped, and so is a keyframe whose window is
//!   covered when keyframes come at least twice per window.
//!   The mode changes only on a keyframe, the one place decoding can restart.
//! - Everything else is decoded: reference P-frames (a skipped one would corrupt the pictures
//!   up to the next keyframe), frames carrying parameter sets, frames without a timestamp,
//!   and everything until the source rate is known.
//!
//! Windows are the sampling interval laid from the first timestamp seen; a window is covered
//! once a picture whose presentation time falls in it goes to the decoder. Because every
//! window keeps at least one decoded picture, the sampled rate stays the configured one, as
//! long as the source sends at least two frames per window, which is the condition for
//! skipping non-reference pictures at all ([`MIN_SOURCE_RATIO`]); the keyframe mode needs its
//! keyframes within 5 % of the interval ([`KEYFRAME_SLACK`]).

use std::collections::{BTreeSet, VecDeque};

/// Skip non-reference pictures only when the source sends at least this many frames per
/// sampling interval (so every window still holds a decoded picture despite jitter).
pub const MIN_SOURCE_RATIO: f64 = 2.0;

/// Keyframes-only mode needs every recent keyframe interval within this factor of the
/// sampling interval (at most 5 % fewer frames than asked for).
pub const KEYFRAME_SLACK: f64 = 1.05;

/// Access units whose spacing gives the source rate.
const RATE_WINDOW: usize = 16;

/// Keyframe intervals the keyframes-only decision looks at.
const KEY_INTERVALS: usize = 3;

/// Covered windows remembered behind the newest one (decode order runs ahead of
/// presentation order by a few frames only).
const WINDOW_MEMORY: i64 = 64;

/// The compressed video a decoder takes, as far as skipping needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bitstream {
    /// H.264 with NAL units in the given framing.
    H264(Framing),
    /// H.265 with NAL units in the given framing.
    H265(Framing),
    /// Anything else: only its keyframe flags are used.
    Other,
}

/// How NAL units are delimited in a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Annex B start codes (`00 00 01`).
    ByteStream,
    /// Each unit prefixed by its big-endian length in this many bytes (`avc`, `hvc1`).
    LengthPrefixed(u8),
}

/// What a picture is to the pictures after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference {
    /// Other pictures may be predicted from it, or it carries parameter sets, or we cannot
    /// tell: it must be decoded outside the keyframes-only mode.
    Needed,
    /// Nothing is predicted from it.
    NonReference,
}

/// One access unit as the decoder would receive it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessUnit {
    /// Presentation time, ns.
    pub pts_ns: Option<u64>,
    /// Decoding can start here (GStreamer: no `DELTA_UNIT` flag).
    pub keyframe: bool,
    /// Whether later pictures need it.
    pub reference: Reference,
}

/// Decode or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the decoder.
    Decode,
    /// Drop it before the decoder: the sampler would not keep it and nothing needs it.
    Skip,
}

/// Reads the reference status of one access unit from its NAL headers.
pub fn reference_of(bitstream: Bitstream, data: &[u8]) -> Reference {
    let (is_h265, framing) = match bitstream {
        Bitstream::H264(f) => (false, f),
        Bitstream::H265(f) => (true, f),
        Bitstream::Other => return Reference::Needed,
    };
    let mut pictures = 0;
    for nal in nal_units(data, framing) {
        let Some(&first) = nal.first() else { continue };
        let kind = if is_h265 {
            nal_kind_h265(first)
        } else {
            nal_kind_h264(first)
        };
        match kind {
            NalKind::ReferenceSlice | NalKind::ParameterSet => return Reference::Needed,
            NalKind::NonReferenceSlice => pictures += 1,
            NalKind::Other => {}
        }
    }
    if pictures > 0 {
        Reference::NonReference
    } else {
        Reference::Needed
    }
}

enum NalKind {
    ReferenceSlice,
    NonReferenceSlice,
    ParameterSet,
    Other,
}

fn nal_kind_h264(header: u8) -> NalKind {
    let ref_idc = (header >> 5) & 0x3;
    match header & 0x1f {
        1..=5 if ref_idc != 0 => NalKind::ReferenceSlice,
        1..=5 => NalKind::NonReferenceSlice,
        7 | 8 | 13 | 15 => NalKind::ParameterSet,
        _ => NalKind::Other,
    }
}

fn nal_kind_h265(header: u8) -> NalKind {
    match (header >> 1) & 0x3f {
        // TRAIL_N, TSA_N, STSA_N, RADL_N, RASL_N and the reserved non-reference types.
        t @ 0..=14 if t % 2 == 0 => NalKind::NonReferenceSlice,
        0..=31 => NalKind::ReferenceSlice,
        32..=34 => NalKind::ParameterSet,
        _ => NalKind::Other,
    }
}

/// The NAL units of `data` (headers first, start codes and length prefixes removed).
fn nal_units(data: &[u8], framing: Framing) -> Vec<&[u8]> {
    match framing {
        Framing::LengthPrefixed(size) => {
            let size = usize::from(size.clamp(1, 4));
            let mut units = Vec::new();
            let mut rest = data;
            while rest.len() > size {
                let len = rest[..size]
                    .iter()
                    .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
                let body = &rest[size..];
                let len = len.min(body.len());
                units.push(&body[..len]);
                rest = &body[len..];
            }
            units
        }
        Framing::ByteStream => {
            let mut starts = Vec::new();
            let mut i = 0;
            while i + 3 <= data.len() {
                if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
                    starts.push(i + 3);
                    i += 3;
                } else {
                    i += 1;
                }
            }
            starts
                .iter()
                .enumerate()
                .map(|(n, &s)| {
                    let end = starts.get(n + 1).map_or(data.len(), |next| next - 3);
                    &data[s..end.max(s)]
                })
                .collect()
        }
    }
}

/// The skipping decision of one camera, fed every access unit in decode order.
#[derive(Debug, Clone)]
pub struct DecodeSkip {
    interval_ns: u64,
    origin: Option<u64>,
    covered: BTreeSet<i64>,
    recent: VecDeque<u64>,
    last_key: Option<u64>,
    key_intervals: VecDeque<u64>,
    keyframes_only: bool,
    dense_keyframes: bool,
}

impl DecodeSkip {
    /// A camera sampled at `fps` frames per second.
    pub fn new(fps: u32) -> Self {
        Self {
            interval_ns: interval_ns(fps),
            origin: None,
            covered: BTreeSet::new(),
            recent: VecDeque::with_capacity(RATE_WINDOW),
            last_key: None,
            key_intervals: VecDeque::with_capacity(KEY_INTERVALS),
            keyframes_only: false,
            dense_keyframes: false,
        }
    }

    /// A new sampling rate (the coordinator capped the camera): windows start again from the
    /// next access unit; the keyframes-only mode is decided again at the next keyframe.
    pub fn set_rate(&mut self, fps: u32) {
        self.interval_ns = interval_ns(fps);
        self.origin = None;
        self.covered.clear();
    }

    /// Whether only keyframes are decoded now.
    pub fn keyframes_only(&self) -> bool {
        self.keyframes_only
    }

    /// The source's frame rate over the last access units, if known.
    pub fn source_fps(&self) -> Option<f64> {
        let (min, max) = (self.recent.iter().min()?, self.recent.iter().max()?);
        let span = max.checked_sub(*min).filter(|s| *s > 0)?;
        (self.recent.len() >= RATE_WINDOW / 2)
            .then(|| (self.recent.len() - 1) as f64 * 1e9 / span as f64)
    }

    /// Decides for the next access unit (decode order).
    pub fn decide(&mut self, au: AccessUnit) -> Verdict {
        let Some(pts) = au.pts_ns else {
            return Verdict::Decode;
        };
        if self.recent.len() == RATE_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(pts);
        if au.keyframe {
            self.on_keyframe(pts);
        }
        let window = self.window_of(pts);
        let covered = self.covered.contains(&window);
        let verdict = match (self.keyframes_only, au.keyframe, au.reference) {
            (true, false, _) => Verdict::Skip,
            (true, true, _) if covered && self.dense_keyframes => Verdict::Skip,
            (false, false, Reference::NonReference) if covered && self.sparse_enough() => {
                Verdict::Skip
            }
            _ => Verdict::Decode,
        };
        if verdict == Verdict::Decode {
            self.covered.insert(window);
            while self
                .covered
                .first()
                .is_some_and(|w| *w < window - WINDOW_MEMORY)
            {
                self.covered.pop_first();
            }
        }
        verdict
    }

    fn on_keyframe(&mut self, pts: u64) {
        if let Some(gap) = self
            .last_key
            .and_then(|k| pts.checked_sub(k))
            .filter(|g| *g > 0)
        {
            if self.key_intervals.len() == KEY_INTERVALS {
                self.key_intervals.pop_front();
            }
            self.key_intervals.push_back(gap);
        }
        self.last_key = Some(pts);
        let within = |bound: f64| {
            self.key_intervals.len() == KEY_INTERVALS
                && self.key_intervals.iter().all(|g| *g as f64 <= bound)
        };
        let interval = self.interval_ns as f64;
        self.keyframes_only = within(interval * KEYFRAME_SLACK);
        self.dense_keyframes = within(interval / MIN_SOURCE_RATIO);
    }

    /// The source sends at least [`MIN_SOURCE_RATIO`] frames per sampling interval.
    fn sparse_enough(&self) -> bool {
        self.source_fps()
            .is_some_and(|fps| fps * self.interval_ns as f64 / 1e9 >= MIN_SOURCE_RATIO)
    }

    fn window_of(&mut self, pts: u64) -> i64 {
        let origin = *self.origin.get_or_insert(pts);
        let offset = i128::from(pts) - i128::from(origin);
        i64::try_from(offset.div_euclid(i128::from(self.interval_ns))).unwrap_or(i64::MAX)
    }
}

fn interval_ns(fps: u32) -> u64 {
    1_000_000_000 / u64::from(fps.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn au(pts_ms: u64, keyframe: bool, non_ref: bool) -> AccessUnit {
        AccessUnit {
            pts_ns: Some(pts_ms * MS),
            keyframe,
            reference: if non_ref {
                Reference::NonReference
            } else {
                Reference::Needed
            },
        }
    }

    /// Decode order of an IBBP stream at `fps` with a keyframe every `gop` frames:
    /// (presentation index, keyframe, non-reference).
    fn ibbp(frames: u64, gop: u64) -> Vec<(u64, bool, bool)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < frames {
            if i % gop == 0 {
                out.push((i, true, false));
                i += 1;
                continue;
            }
            // P at i+2 first, then the two B-frames before it.
            let p = (i + 2).min(frames - 1);
            out.push((p, p % gop == 0, false));
            for b in i..p {
                out.push((b, false, true));
            }
            i = p + 1;
        }
        out
    }

    /// Runs `stream` (decode order) at `fps` through a skipper sampling at `sample_fps`;
    /// returns the decoded presentation indices, sorted.
    fn run(stream: &[(u64, bool, bool)], fps: u64, sample_fps: u32) -> Vec<u64> {
        let mut s = DecodeSkip::new(sample_fps);
        let mut decoded: Vec<u64> = stream
            .iter()
            .filter(|(i, key, non_ref)| {
                s.decide(au(i * 1000 / fps, *key, *non_ref)) == Verdict::Decode
            })
            .map(|(i, _, _)| *i)
            .collect();
        decoded.sort_unstable();
        decoded
    }

    /// Frames a drop-only sampler at `fps` keeps from `decoded` (presentation indices of a
    /// `source_fps` stream): the first at or after each slot.
    fn sampled(decoded: &[u64], source_fps: u64, fps: u64) -> usize {
        let mut next = 0u64;
        let mut kept = 0;
        for i in decoded {
            let t = i * 1000 / source_fps;
            if t >= next {
                kept += 1;
                next = t.max(next) + 1000 / fps;
            }
        }
        kept
    }

    #[test]
    fn b_frames_are_skipped_and_the_sampled_rate_holds() {
        let stream = ibbp(300, 30); // 10 s at 30 fps, IBBP, keyframe every second
        let decoded = run(&stream, 30, 5);
        let refs = stream.iter().filter(|(_, _, n)| !n).count();
        // Only the I and P frames (plus at most a few B-frames early on) are decoded.
        assert!(decoded.len() <= refs + 8, "{} decoded", decoded.len());
        assert!(decoded.len() < 130, "{} of 300 decoded", decoded.len());
        let kept = sampled(&decoded, 30, 5);
        let all = sampled(&(0..300).collect::<Vec<_>>(), 30, 5);
        assert!(kept.abs_diff(all) <= all / 20, "kept {kept} of {all}");
    }

    #[test]
    fn p_only_streams_decode_everything() {
        let stream: Vec<(u64, bool, bool)> = (0..300).map(|i| (i, i % 30 == 0, false)).collect();
        assert_eq!(run(&stream, 30, 5).len(), 300);
    }

    #[test]
    fn close_rates_decode_everything() {
        // 10 fps sampled at 8: fewer than two frames per window, nothing is skipped.
        let stream = ibbp(100, 10);
        assert_eq!(run(&stream, 10, 8).len(), 100);
    }

    #[test]
    fn keyframes_only_at_low_rates_and_for_intra_codecs() {
        // Keyframe every 6 frames at 30 fps (5 per second), sampled at 5 fps: after three
        // keyframe intervals only keyframes are decoded.
        let stream: Vec<(u64, bool, bool)> = (0..300).map(|i| (i, i % 6 == 0, false)).collect();
        let decoded = run(&stream, 30, 5);
        assert!(decoded.len() < 70, "{} decoded", decoded.len());
        assert!(decoded.iter().skip(20).all(|i| i % 6 == 0));
        assert!(sampled(&decoded, 30, 5) >= 48);
        // MJPEG: every frame a keyframe; one per window is decoded.
        let mjpeg: Vec<(u64, bool, bool)> = (0..300).map(|i| (i, true, false)).collect();
        let decoded = run(&mjpeg, 30, 5);
        assert!((50..=55).contains(&decoded.len()), "{}", decoded.len());
    }

    #[test]
    fn keyframes_only_ends_at_a_keyframe_when_the_rate_rises() {
        let mut s = DecodeSkip::new(1);
        for i in 0..120u64 {
            s.decide(au(i * 100, i % 10 == 0, false));
        }
        assert!(s.keyframes_only());
        s.set_rate(5);
        // Deltas stay skipped until the next keyframe decides the mode again.
        assert_eq!(s.decide(au(12_100, false, false)), Verdict::Skip);
        assert_eq!(s.decide(au(13_000, true, false)), Verdict::Decode);
        assert!(!s.keyframes_only());
        assert_eq!(s.decide(au(13_100, false, false)), Verdict::Decode);
    }

    #[test]
    fn frames_without_time_are_decoded() {
        let mut s = DecodeSkip::new(5);
        let unknown = AccessUnit {
            pts_ns: None,
            keyframe: false,
            reference: Reference::NonReference,
        };
        assert_eq!(s.decide(unknown), Verdict::Decode);
    }

    #[test]
    fn reads_reference_status_from_nal_headers() {
        let avc = Bitstream::H264(Framing::LengthPrefixed(4));
        let unit = |header: u8| [0u8, 0, 0, 3, header, 0x88, 0x84].to_vec();
        assert_eq!(reference_of(avc, &unit(0x01)), Reference::NonReference); // B, ref_idc 0
        assert_eq!(reference_of(avc, &unit(0x41)), Reference::Needed); // P, ref_idc 2
        assert_eq!(reference_of(avc, &unit(0x65)), Reference::Needed); // IDR
        let sei_then_b = [unit(0x06), unit(0x01)].concat();
        assert_eq!(reference_of(avc, &sei_then_b), Reference::NonReference);
        let pps_then_b = [unit(0x68), unit(0x01)].concat();
        assert_eq!(reference_of(avc, &pps_then_b), Reference::Needed);
        let annex_b = Bitstream::H264(Framing::ByteStream);
        assert_eq!(
            reference_of(annex_b, &[0, 0, 0, 1, 0x09, 0xf0, 0, 0, 1, 0x01, 0x9e]),
            Reference::NonReference
        );
        assert_eq!(
            reference_of(annex_b, &[0, 0, 1, 0x41, 0x9a]),
            Reference::Needed
        );
        let hvc = Bitstream::H265(Framing::LengthPrefixed(4));
        let unit2 = |t: u8| [0u8, 0, 0, 3, t << 1, 0x01, 0xaf].to_vec();
        assert_eq!(reference_of(hvc, &unit2(0)), Reference::NonReference); // TRAIL_N
        assert_eq!(reference_of(hvc, &unit2(1)), Reference::Needed); // TRAIL_R
        assert_eq!(reference_of(hvc, &unit2(19)), Reference::Needed); // IDR_W_RADL
        assert_eq!(reference_of(hvc, &unit2(33)), Reference::Needed); // SPS
        assert_eq!(
            reference_of(Bitstream::Other, &[1, 2, 3]),
            Reference::Needed
        );
        // Truncated or empty input never panics.
        assert_eq!(
            reference_of(avc, &[0, 0, 0, 9, 0x01]),
            Reference::NonReference
        );
        assert_eq!(reference_of(avc, &[]), Reference::Needed);
        assert_eq!(reference_of(annex_b, &[0, 0]), Reference::Needed);
    }
}
