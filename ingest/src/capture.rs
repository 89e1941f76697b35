//! Capture time of a frame: the camera's own clock when the camera tells it, else arrival.
//!
//! Contract:
//! - rtspsrc runs with `add-reference-timestamp-meta`, so once the camera's RTCP sender
//!   reports arrived, each frame carries a `GstReferenceTimestampMeta` with reference caps
//!   `timestamp/x-ntp`: the camera's NTP wall time at capture, mapped from the frame's RTP
//!   timestamp through the last sender report (ns since 1900). The decoder, `videorate`,
//!   the converters and `jpegenc` copy untagged metas, so it reaches the appsink's sample.
//! - [`choose`] turns it into the frame's `capture_time_us`: the camera's time (clock
//!   [`CaptureClock::Camera`]) while it is within `tolerance` of the node's clock at arrival,
//!   otherwise the arrival time ([`CaptureClock::Arrival`]). A camera whose clock is far off
//!   would otherwise make every frame look stale (or from the future) to the workers, whose
//!   age checks run on the cluster clock. A tolerance of zero turns camera time off.
//! - The difference camera − node (the *offset*) is reported whenever the camera gives a time,
//!   used or not (`panoptes_ingest_camera_clock_offset_seconds`). It is the clocks' offset
//!   minus the capture-to-arrival delay (network, jitter buffer, decode), so a camera in sync
//!   reads slightly negative.
//!
//! The core ([`choose`], [`ntp_ns_to_unix_us`]) is pure; [`camera_ntp_ns`] reads the meta.

use std::time::Duration;

use gstreamer as gst;
use panoptes_schemas::CaptureClock;

/// Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01).
pub const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;

/// Reference caps name of the camera's NTP time on a buffer.
pub const NTP_REFERENCE: &str = "timestamp/x-ntp";

/// The capture time chosen for one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureTime {
    /// `capture_time_us` of the frame (Unix µs).
    pub time_us: i64,
    /// Which clock it was read from.
    pub clock: CaptureClock,
    /// Camera time − arrival time (µs), when the camera gave a time.
    pub offset_us: Option<i64>,
}

/// NTP nanoseconds since 1900 to Unix microseconds; `None` before 1970 (a camera that never
/// set its clock sends small NTP times; those are not a capture time).
pub fn ntp_ns_to_unix_us(ntp_ns: u64) -> Option<i64> {
    let unix_ns = ntp_ns.checked_sub(NTP_UNIX_OFFSET_S * 1_000_000_000)?;
    i64::try_from(unix_ns / 1_000).ok()
}

/// Picks the frame's capture time from the camera's time (if any) and the arrival time,
/// both Unix µs (see the module docs).
pub fn choose(camera_us: Option<i64>, arrival_us: i64, tolerance: Duration) -> CaptureTime {
    let arrival = CaptureTime {
        time_us: arrival_us,
        clock: CaptureClock::Arrival,
        offset_us: None,
    };
    let Some(camera_us) = camera_us else {
        return arrival;
    };
    let offset_us = camera_us.saturating_sub(arrival_us);
    let tolerance_us = i64::try_from(tolerance.as_micros()).unwrap_or(i64::MAX);
    if tolerance_us > 0 && offset_us.unsigned_abs() <= tolerance_us.unsigned_abs() {
        CaptureTime {
            time_us: camera_us,
            clock: CaptureClock::Camera,
            offset_us: Some(offset_us),
        }
    } else {
        CaptureTime {
            offset_us: Some(offset_us),
            ..arrival
        }
    }
}

/// The camera's NTP capture time (ns since 1900) carried by `buffer`, if any.
pub fn camera_ntp_ns(buffer: &gst::BufferRef) -> Option<u64> {
    buffer
        .iter_meta::<gst::ReferenceTimestampMeta>()
        .find(|m| {
            m.reference()
                .structure(0)
                .is_some_and(|s| s.name() == NTP_REFERENCE)
        })
        .map(|m| m.timestamp().nseconds())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000;

    #[test]
    fn ntp_epoch_maps_to_unix() {
        let ntp_ns = (NTP_UNIX_OFFSET_S + 1_700_000_000) * 1_000_000_000 + 123_456_789;
        assert_eq!(ntp_ns_to_unix_us(ntp_ns), Some(1_700_000_000_123_456));
        assert_eq!(ntp_ns_to_unix_us(5_000_000_000), None);
    }

    #[test]
    fn camera_time_is_used_only_within_tolerance() {
        let tol = Duration::from_secs(2);
        let t = 1_700_000_000 * S;
        let near = choose(Some(t - S / 4), t, tol);
        assert_eq!(near.clock, CaptureClock::Camera);
        assert_eq!((near.time_us, near.offset_us), (t - S / 4, Some(-S / 4)));
        let far = choose(Some(t + 30 * S), t, tol);
        assert_eq!(far.clock, CaptureClock::Arrival);
        assert_eq!((far.time_us, far.offset_us), (t, Some(30 * S)));
        let behind = choose(Some(t - 3 * S), t, tol);
        assert_eq!((behind.clock, behind.time_us), (CaptureClock::Arrival, t));
        let none = choose(None, t, tol);
        assert_eq!((none.clock, none.offset_us), (CaptureClock::Arrival, None));
        let off = choose(Some(t), t, Duration::ZERO);
        assert_eq!((off.clock, off.offset_us), (CaptureClock::Arrival, Some(0)));
    }
}
