//! The GStreamer pipeline of one camera and the translation of its bus messages.
//!
//! ```text
//! rtspsrc ─(video pad)─► decodebin ─► videorate ─► videoconvert ─► deinterlace ─► videoscale ─► capsfilter ─► jpegenc ─► appsink
//!        └(other pads)─► fakesink     (drop-only)   (to a format     (interlaced    (fit inside the analytic box,
//!                                                    jpegenc takes)  only)          aspect kept, never upscaled)
//! ```
//!
//! Any raw video a decoder produces reaches JPEG: `videoconvert` turns 10/12-bit and other
//! formats `jpegenc` cannot take into one it can (passthrough, i.e. free, when the decoder
//! already gives one), `deinterlace` only works on interlaced frames (passthrough otherwise),
//! and everything after `videorate` runs only on the frames we keep. The output size follows
//! the decoded caps, not what the camera announced: a probe on every caps event recomputes it
//! (storage size × pixel aspect ratio, fitted into the box) and sets the capsfilter, so odd
//! sizes, anamorphic pixels and cameras whose SDP disagrees with their stream all come out
//! as square-pixel JPEGs of the right shape.
//!
//! What cannot be decoded is reported precisely ([`StreamInfo::unsupported`]): decodebin's
//! `unknown-type` (no decoder for these caps) or a negotiation failure after the decoder
//! (named with the decoded format), instead of GStreamer's generic "Internal data stream error".
//!
//! When the sampling rate is well below the camera's, the access units the sampler would
//! throw away are dropped before the decoder instead of after it ([`crate::decode_skip`]:
//! non-reference pictures, or everything but keyframes at very low rates), counted in
//! `panoptes_ingest_decode_skipped_total`; `camera_defaults.decode_skip = false` turns it off.
//!
//! Credentials go to rtspsrc's `user-id`/`user-pw` properties, never into `location`, so
//! GStreamer's own messages cannot leak them. The appsink keeps at most `buffer_frames`
//! samples and drops the oldest: a slow consumer costs frames, never memory. rtspsrc adds
//! the camera's NTP capture time to each frame once RTCP sender reports arrived
//! ([`crate::capture`]).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::config::CameraSpec;
use crate::decode_skip::{AccessUnit, Bitstream, DecodeSkip, Framing, Reference, Verdict};
use crate::error::CameraError;

/// What the pad-added callbacks learned, shared with the camera thread.
#[derive(Debug, Default)]
pub struct StreamInfo {
    /// A video stream was linked to the decoder.
    pub video_linked: AtomicBool,
    /// rtspsrc announced all its streams.
    pub no_more_pads: AtomicBool,
    /// The decoder produced raw video that could not be linked (e.g. odd caps).
    pub link_failed: AtomicBool,
    /// (source width, source height, output width, output height) once known.
    pub dims: Mutex<Option<(u32, u32, u32, u32)>>,
    /// The decoded video as last negotiated, e.g. `I420_10LE 1280x720 interleaved`.
    pub format: Mutex<Option<String>>,
    /// Why this stream cannot be turned into JPEG, once a callback learned it.
    pub unsupported: Mutex<Option<String>>,
}

impl StreamInfo {
    fn set_unsupported(&self, reason: String) {
        let mut slot = self.unsupported.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(reason);
    }

    /// The precise reason the stream is unsupported, if one is known.
    pub fn unsupported_reason(&self) -> Option<String> {
        self.unsupported
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn decoded_format(&self) -> Option<String> {
        self.format
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A built (not yet playing) camera pipeline.
pub struct CameraPipeline {
    /// The pipeline.
    pub pipeline: gst::Pipeline,
    /// Where encoded frames come out.
    pub appsink: gst_app::AppSink,
    /// The pipeline's bus.
    pub bus: gst::Bus,
    /// Stream facts learned while negotiating.
    pub info: Arc<StreamInfo>,
    /// The `videorate` (drop-only): its `max-rate` is the sampling rate, changed in place
    /// by [`CameraPipeline::set_max_rate`] when the coordinator caps the camera.
    pub rate: gst::Element,
    /// The sampling rate the decode skipping follows (set with `rate`).
    skip_fps: Arc<AtomicU32>,
    /// With tracing on: the stage stamps the frames' spans are built from (kept alive here,
    /// looked up by camera id, [`crate::trace`]).
    pub stages: Option<Arc<crate::trace::StageClock>>,
}

impl CameraPipeline {
    /// Samples at most `fps` frames per second from now on, without rebuilding: frames
    /// above the rate are dropped by `videorate` before conversion, scaling and JPEG.
    pub fn set_max_rate(&self, fps: u32) {
        self.rate
            .set_property("max-rate", i32::try_from(fps.max(1)).unwrap_or(i32::MAX));
        self.skip_fps.store(fps.max(1), Ordering::Relaxed);
    }
}

/// Largest even size inside `max_w`×`max_h` with the source's aspect ratio; never upscales.
pub fn fit_within(src_w: u32, src_h: u32, max_w: u32, max_h: u32) -> (u32, u32) {
    if src_w == 0 || src_h == 0 {
        return (max_w & !1, max_h & !1);
    }
    let scale = (f64::from(max_w) / f64::from(src_w))
        .min(f64::from(max_h) / f64::from(src_h))
        .min(1.0);
    let even = |v: f64| ((v.round() as u32) & !1).max(2);
    (
        even(f64::from(src_w) * scale),
        even(f64::from(src_h) * scale),
    )
}

fn make(factory: &str) -> Result<gst::Element, CameraError> {
    gst::ElementFactory::make(factory)
        .build()
        .map_err(|_| CameraError::Pipeline(format!("GStreamer element {factory} is not installed")))
}

/// Builds the pipeline for `spec`: the RTSP source, the decoder and the encode chain, added
/// and linked as far as they can be before the stream's pads appear; the pad callbacks link
/// the rest once rtspsrc and decodebin know what the camera sends. Access units dropped
/// before the decoder are counted in `skipped`.
pub fn build(
    spec: &CameraSpec,
    skipped: prometheus::IntCounter,
) -> Result<CameraPipeline, CameraError> {
    let pipeline = gst::Pipeline::with_name(&format!("camera-{}", spec.id));
    let src = rtsp_source(spec)?;
    let decode = make("decodebin")?;
    let chain = EncodeChain::new(spec)?;
    chain.add_to(&pipeline, [&src, &decode])?;

    let info = Arc::new(StreamInfo::default());
    route_source_pads(&pipeline, &src, &decode, info.clone())?;
    route_decoded_video(&decode, &chain, info.clone())?;
    follow_decoded_caps(&chain, spec, info.clone())?;
    let skip_fps = Arc::new(AtomicU32::new(spec.fps.max(1)));
    if spec.decode_skip {
        skip_undecoded(&decode, skip_fps.clone(), skipped)?;
    }

    let stages = stage_probes(spec, &decode, &chain)?;
    let bus = pipeline
        .bus()
        .ok_or_else(|| CameraError::Pipeline("pipeline has no bus".into()))?;
    Ok(CameraPipeline {
        pipeline,
        rate: chain.rate,
        skip_fps,
        appsink: chain.appsink,
        bus,
        info,
        stages,
    })
}

/// With tracing on, stamps each frame entering the decoder, leaving it (videorate's input)
/// and leaving the encoder (appsink's input), for the frame's spans.
fn stage_probes(
    spec: &CameraSpec,
    decode: &gst::Element,
    chain: &EncodeChain,
) -> Result<Option<Arc<crate::trace::StageClock>>, CameraError> {
    if panoptes_runtime::trace::tracer().is_none() {
        return Ok(None);
    }
    let pad = |e: &gst::Element, what: &str| {
        e.static_pad("sink")
            .ok_or_else(|| CameraError::Pipeline(format!("{what} has no sink pad")))
    };
    let received = pad(decode, "decodebin")?;
    let decoded = pad(&chain.rate, "videorate")?;
    let encoded = pad(chain.appsink.upcast_ref(), "appsink")?;
    Ok(crate::trace::StageClock::attach(
        &spec.id,
        [&received, &decoded, &encoded],
    ))
}

/// rtspsrc for the camera, credentials in its properties (never in `location`).
fn rtsp_source(spec: &CameraSpec) -> Result<gst::Element, CameraError> {
    let src = make("rtspsrc")?;
    src.set_property("location", spec.url.bare());
    src.set_property(
        "latency",
        u32::try_from(spec.latency.as_millis()).unwrap_or(u32::MAX),
    );
    src.set_property_from_str("protocols", spec.transport.rtspsrc_protocols());
    src.set_property(
        "tcp-timeout",
        u64::try_from(spec.connect_timeout.as_micros()).unwrap_or(u64::MAX),
    );
    src.set_property("teardown-timeout", gst::ClockTime::from_mseconds(100));
    // The camera's NTP capture time on every frame once its RTCP sender reports arrived
    // (crate::capture); absent from older GStreamer, where frames keep their arrival time.
    if src.find_property("add-reference-timestamp-meta").is_some() {
        src.set_property("add-reference-timestamp-meta", true);
    }
    if let Some(user) = spec.url.user() {
        src.set_property("user-id", user);
    }
    if let Some(pw) = spec.url.password() {
        src.set_property("user-pw", pw.expose());
    }
    Ok(src)
}

/// The fixed part after the decoder:
/// videorate → videoconvert → deinterlace → videoscale → capsfilter → jpegenc → appsink.
struct EncodeChain {
    rate: gst::Element,
    convert: gst::Element,
    deinterlace: gst::Element,
    scale: gst::Element,
    filter: gst::Element,
    jpeg: gst::Element,
    appsink: gst_app::AppSink,
}

impl EncodeChain {
    /// Where decoded video enters the chain.
    fn rate_sink(&self) -> Result<gst::Pad, CameraError> {
        self.rate
            .static_pad("sink")
            .ok_or_else(|| CameraError::Pipeline("videorate has no sink pad".into()))
    }

    fn new(spec: &CameraSpec) -> Result<Self, CameraError> {
        let rate = make("videorate")?;
        rate.set_property("drop-only", true);
        rate.set_property("max-rate", i32::try_from(spec.fps).unwrap_or(i32::MAX));
        // Only interlaced frames are touched (mode auto = passthrough for progressive ones);
        // one output frame per input frame (top field) keeps videorate's sampled rate, and
        // linear interpolation is the cheapest method that leaves no combing.
        let deinterlace = make("deinterlace")?;
        deinterlace.set_property_from_str("fields", "top");
        deinterlace.set_property_from_str("method", "linear");
        let jpeg = make("jpegenc")?;
        jpeg.set_property("quality", i32::try_from(spec.jpeg_quality).unwrap_or(85));
        let appsink = gst_app::AppSink::builder()
            .name("sink")
            .max_buffers(spec.buffer_frames)
            .drop(true)
            .sync(false)
            .enable_last_sample(false)
            .build();
        Ok(Self {
            rate,
            convert: make("videoconvert")?,
            deinterlace,
            scale: make("videoscale")?,
            filter: make("capsfilter")?,
            jpeg,
            appsink,
        })
    }

    /// Adds `upstream` and the chain to `pipeline` and links the chain itself.
    fn add_to(
        &self,
        pipeline: &gst::Pipeline,
        upstream: [&gst::Element; 2],
    ) -> Result<(), CameraError> {
        let chain = [
            &self.rate,
            &self.convert,
            &self.deinterlace,
            &self.scale,
            &self.filter,
            &self.jpeg,
            self.appsink.upcast_ref(),
        ];
        pipeline
            .add_many(upstream.into_iter().chain(chain))
            .map_err(|e| CameraError::Pipeline(e.to_string()))?;
        gst::Element::link_many(chain).map_err(|e| CameraError::Pipeline(e.to_string()))
    }
}

/// rtspsrc: the first video stream goes to the decoder; anything else (audio, metadata)
/// into a fakesink so that an unlinked pad does not fail the whole source.
fn route_source_pads(
    pipeline: &gst::Pipeline,
    src: &gst::Element,
    decode: &gst::Element,
    info: Arc<StreamInfo>,
) -> Result<(), CameraError> {
    let weak_pipeline = pipeline.downgrade();
    let decode_sink = decode
        .static_pad("sink")
        .ok_or_else(|| CameraError::Pipeline("decodebin has no sink pad".into()))?;
    let info_src = info.clone();
    src.connect_pad_added(move |_src, pad| {
        if is_video(pad) && !decode_sink.is_linked() {
            if pad.link(&decode_sink).is_ok() {
                info_src.video_linked.store(true, Ordering::SeqCst);
            }
            return;
        }
        if let Some(pipeline) = weak_pipeline.upgrade() {
            discard(&pipeline, pad);
        }
    });
    src.connect_no_more_pads(move |_| info.no_more_pads.store(true, Ordering::SeqCst));
    Ok(())
}

/// Whether an rtspsrc pad carries video (`media=video` in its caps).
fn is_video(pad: &gst::Pad) -> bool {
    pad.current_caps()
        .or_else(|| Some(pad.query_caps(None)))
        .and_then(|caps| {
            caps.structure(0)
                .and_then(|s| s.get::<&str>("media").ok().map(|m| m == "video"))
        })
        .unwrap_or(false)
}

/// Links `pad` to a new fakesink in `pipeline`.
fn discard(pipeline: &gst::Pipeline, pad: &gst::Pad) {
    let sink = gst::ElementFactory::make("fakesink")
        .property("sync", false)
        .property("async", false)
        .build();
    if let Ok(sink) = sink
        && pipeline.add(&sink).is_ok()
    {
        let _ = sink.sync_state_with_parent();
        if let Some(sink_pad) = sink.static_pad("sink") {
            let _ = pad.link(&sink_pad);
        }
    }
}

/// decodebin: raw video goes on to the rate/scale/encode chain; a stream it has no decoder
/// for is named precisely ([`StreamInfo::unsupported`]).
fn route_decoded_video(
    decode: &gst::Element,
    chain: &EncodeChain,
    info: Arc<StreamInfo>,
) -> Result<(), CameraError> {
    let rate_sink = chain.rate_sink()?;
    let info_unknown = info.clone();
    decode.connect("unknown-type", false, move |args| {
        if let Some(caps) = args.get(2).and_then(|v| v.get::<gst::Caps>().ok()) {
            info_unknown.set_unsupported(format!("no decoder installed for {}", describe(&caps)));
        }
        None
    });
    decode.connect_pad_added(move |_dec, pad| {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let Some(s) = caps.structure(0) else { return };
        if rate_sink.is_linked() {
            return;
        }
        if !s.name().starts_with("video/x-raw") {
            info.set_unsupported(format!("no decoder installed for {}", describe(&caps)));
            return;
        }
        if pad.link(&rate_sink).is_err() {
            info.link_failed.store(true, Ordering::SeqCst);
            info.set_unsupported(format!(
                "decoded video {} cannot be linked to the encoder",
                describe(&caps)
            ));
        }
    });
    Ok(())
}

/// Once decodebin adds its video decoder, drops before it every access unit the sampler
/// would not keep ([`crate::decode_skip`]), following the sampling rate in `fps`.
fn skip_undecoded(
    decode: &gst::Element,
    fps: Arc<AtomicU32>,
    skipped: prometheus::IntCounter,
) -> Result<(), CameraError> {
    let bin = decode
        .downcast_ref::<gst::Bin>()
        .ok_or_else(|| CameraError::Pipeline("decodebin is not a bin".into()))?;
    bin.connect_element_added(move |_bin, element| {
        // jpegdec, MJPEG's decoder, calls itself an image decoder.
        let is_video_decoder = element.factory().is_some_and(|f| {
            let klass = f.metadata("klass").unwrap_or_default();
            klass.contains("Decoder") && (klass.contains("Video") || klass.contains("Image"))
        });
        if let (true, Some(pad)) = (is_video_decoder, element.static_pad("sink")) {
            attach_skip_probe(&pad, fps.clone(), skipped.clone());
        }
    });
    Ok(())
}

/// The probe on a decoder's sink pad: caps events say what the bitstream is, each buffer
/// (one access unit) gets a [`Verdict`].
fn attach_skip_probe(pad: &gst::Pad, fps: Arc<AtomicU32>, skipped: prometheus::IntCounter) {
    let applied = fps.load(Ordering::Relaxed);
    let state = Mutex::new((Bitstream::Other, applied, DecodeSkip::new(applied)));
    let types = gst::PadProbeType::BUFFER | gst::PadProbeType::EVENT_DOWNSTREAM;
    pad.add_probe(types, move |_pad, probe| {
        let mut guard = state.lock().unwrap_or_else(|e| e.into_inner());
        let (bitstream, applied, skip) = &mut *guard;
        let buffer = match &probe.data {
            Some(gst::PadProbeData::Buffer(buffer)) => buffer,
            Some(gst::PadProbeData::Event(event)) => {
                if let gst::EventView::Caps(caps) = event.view() {
                    *bitstream = bitstream_of(caps.caps());
                }
                return gst::PadProbeReturn::Ok;
            }
            _ => return gst::PadProbeReturn::Ok,
        };
        let want = fps.load(Ordering::Relaxed);
        if want != *applied {
            skip.set_rate(want);
            *applied = want;
        }
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        let reference = if keyframe {
            Reference::Needed
        } else {
            buffer.map_readable().map_or(Reference::Needed, |map| {
                crate::decode_skip::reference_of(*bitstream, &map)
            })
        };
        let unit = AccessUnit {
            pts_ns: buffer.pts().map(gst::ClockTime::nseconds),
            keyframe,
            reference,
        };
        if skip.decide(unit) == Verdict::Skip {
            skipped.inc();
            return gst::PadProbeReturn::Drop;
        }
        gst::PadProbeReturn::Ok
    });
}

/// What a decoder's sink caps say about NAL framing (`avc`/`hvc1` length prefixes, their size
/// from the codec data; byte-stream otherwise).
fn bitstream_of(caps: &gst::CapsRef) -> Bitstream {
    let Some(s) = caps.structure(0) else {
        return Bitstream::Other;
    };
    let h265 = match s.name().as_str() {
        "video/x-h264" => false,
        "video/x-h265" => true,
        _ => return Bitstream::Other,
    };
    let framing = match s.get::<&str>("stream-format") {
        Ok("avc" | "avc3" | "hvc1" | "hev1") => {
            // avcC: lengthSizeMinusOne in byte 4; hvcC: in byte 21.
            let at = if h265 { 21 } else { 4 };
            let size = s
                .get::<gst::Buffer>("codec_data")
                .ok()
                .and_then(|b| b.map_readable().ok().and_then(|m| m.get(at).copied()))
                .map_or(4, |b| (b & 0x3) + 1);
            Framing::LengthPrefixed(size)
        }
        _ => Framing::ByteStream,
    };
    if h265 {
        Bitstream::H265(framing)
    } else {
        Bitstream::H264(framing)
    }
}

/// On every caps event of the decoded video (the first one and any later change), records
/// the source size and format and fits the capsfilter's output size to it.
fn follow_decoded_caps(
    chain: &EncodeChain,
    spec: &CameraSpec,
    info: Arc<StreamInfo>,
) -> Result<(), CameraError> {
    let rate_sink = chain.rate_sink()?;
    let filter = chain.filter.clone();
    let (max_w, max_h) = (spec.width, spec.height);
    // videorate (max-rate) aborts the whole process on a buffer without a duration (GStreamer
    // 1.22 asserts in gst_video_rate_push_buffer); some depayloaders and decoders (raw video
    // over RTP, field-coded H.264) send such buffers. They get one frame interval of the
    // caps' frame rate, or of the sampling rate when the caps have none.
    let fallback = gst::ClockTime::SECOND / u64::from(spec.fps.max(1));
    let duration_ns = std::sync::atomic::AtomicU64::new(fallback.nseconds());
    let probe_types = gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::BUFFER;
    rate_sink.add_probe(probe_types, move |_pad, probe| {
        if let Some(gst::PadProbeData::Buffer(buffer)) = &mut probe.data {
            if buffer.duration().is_none() {
                let ns = duration_ns.load(Ordering::Relaxed);
                buffer
                    .make_mut()
                    .set_duration(gst::ClockTime::from_nseconds(ns));
            }
            return gst::PadProbeReturn::Ok;
        }
        let Some(gst::PadProbeData::Event(event)) = &probe.data else {
            return gst::PadProbeReturn::Ok;
        };
        let gst::EventView::Caps(caps) = event.view() else {
            return gst::PadProbeReturn::Ok;
        };
        let interval = frame_interval(caps.caps()).unwrap_or(fallback);
        duration_ns.store(interval.nseconds(), Ordering::Relaxed);
        let Some(geometry) = Geometry::of(caps.caps()) else {
            return gst::PadProbeReturn::Ok;
        };
        let (ow, oh) = geometry.output_size(max_w, max_h);
        filter.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("width", ow as i32)
                .field("height", oh as i32)
                .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
                .build(),
        );
        *info.format.lock().unwrap_or_else(|e| e.into_inner()) = Some(geometry.describe());
        *info.dims.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((geometry.width, geometry.height, ow, oh));
        gst::PadProbeReturn::Ok
    });
    Ok(())
}

/// One frame interval of the caps' frame rate, if they have a positive one.
fn frame_interval(caps: &gst::CapsRef) -> Option<gst::ClockTime> {
    let rate = caps.structure(0)?.get::<gst::Fraction>("framerate").ok()?;
    let (n, d) = (
        u64::try_from(rate.numer()).ok()?,
        u64::try_from(rate.denom()).ok()?,
    );
    (n > 0 && d > 0).then(|| gst::ClockTime::from_nseconds(1_000_000_000 * d / n))
}

/// What the output size and an `unsupported` message need from decoded video caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    /// Storage width in pixels.
    pub width: u32,
    /// Storage height in pixels.
    pub height: u32,
    /// Pixel aspect ratio (numerator, denominator); (1, 1) when absent.
    pub par: (u32, u32),
    /// Raw format name, e.g. `I420_10LE`.
    pub format: String,
    /// `interlace-mode` when not progressive.
    pub interlace: Option<String>,
}

impl Geometry {
    /// Reads raw-video caps; `None` for anything without a positive size.
    pub fn of(caps: &gst::CapsRef) -> Option<Self> {
        let s = caps.structure(0)?;
        let dim = |f: &str| u32::try_from(s.get::<i32>(f).ok()?).ok().filter(|v| *v > 0);
        let par = s
            .get::<gst::Fraction>("pixel-aspect-ratio")
            .ok()
            .and_then(|f| {
                Some((
                    u32::try_from(f.numer()).ok()?,
                    u32::try_from(f.denom()).ok()?,
                ))
            })
            .filter(|(n, d)| *n > 0 && *d > 0)
            .unwrap_or((1, 1));
        let interlace = s
            .get::<&str>("interlace-mode")
            .ok()
            .filter(|m| *m != "progressive")
            .map(str::to_owned);
        Some(Self {
            width: dim("width")?,
            height: dim("height")?,
            par,
            format: s.get::<&str>("format").unwrap_or("?").to_owned(),
            interlace,
        })
    }

    /// The published size: the displayed shape (storage width × pixel aspect ratio) fitted
    /// into `max_w`×`max_h` with square pixels ([`fit_within`]).
    pub fn output_size(&self, max_w: u32, max_h: u32) -> (u32, u32) {
        let display_w = u64::from(self.width) * u64::from(self.par.0) / u64::from(self.par.1);
        let display_w = u32::try_from(display_w).unwrap_or(u32::MAX).max(1);
        fit_within(display_w, self.height, max_w, max_h)
    }

    /// e.g. `I420_10LE 1280x720 interleaved`.
    pub fn describe(&self) -> String {
        let mut d = format!("{} {}x{}", self.format, self.width, self.height);
        if self.par != (1, 1) {
            d.push_str(&format!(" par {}/{}", self.par.0, self.par.1));
        }
        if let Some(mode) = &self.interlace {
            d.push(' ');
            d.push_str(mode);
        }
        d
    }
}

/// Media type and the fields that tell variants apart (profile, format, size), for messages.
fn describe(caps: &gst::Caps) -> String {
    let Some(s) = caps.structure(0) else {
        return "empty caps".into();
    };
    let mut d = s.name().to_string();
    for field in [
        "encoding-name",
        "profile",
        "format",
        "chroma-format",
        "bit-depth-luma",
    ] {
        if let Ok(v) = s.value(field)
            && let Ok(text) = v.serialize()
        {
            d.push_str(&format!(" {field}={text}"));
        }
    }
    d
}

impl CameraPipeline {
    /// Starts streaming (asynchronous: errors arrive on the bus).
    pub fn start(&self) -> Result<(), CameraError> {
        self.pipeline
            .set_state(gst::State::Playing)
            .map(|_| ())
            .map_err(|_| CameraError::Pipeline("pipeline refused to start".into()))
    }

    /// Stops and releases everything (sends RTSP TEARDOWN, bounded by teardown-timeout).
    pub fn stop(&self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }

    /// Waits up to `timeout` for the next encoded frame.
    pub fn next_frame(&self, timeout: Duration) -> Option<gst::Sample> {
        self.appsink
            .try_pull_sample(gst::ClockTime::from_nseconds(timeout.as_nanos() as u64))
    }

    /// Drains the bus: returns the first fatal condition; counts decode warnings via `on_decode_error`.
    pub fn poll_bus(&self, mut on_decode_error: impl FnMut()) -> Option<CameraError> {
        while let Some(msg) = self.bus.pop() {
            use gst::MessageView;
            match msg.view() {
                MessageView::Error(err) => {
                    let error = classify(err.error(), err.debug().as_deref());
                    return Some(self.refine(error, err.debug().as_deref()));
                }
                MessageView::Eos(_) => return Some(CameraError::StreamEnded),
                MessageView::Warning(w) if w.error().matches(gst::StreamError::Decode) => {
                    on_decode_error()
                }
                _ => {}
            }
        }
        None
    }
}

impl CameraPipeline {
    /// Replaces a generic error with the precise `unsupported` reason the callbacks learned,
    /// or names the decoded format when the chain after the decoder failed to negotiate
    /// (GStreamer reports that as "Internal data stream error ... not-negotiated").
    fn refine(&self, error: CameraError, debug: Option<&str>) -> CameraError {
        if let Some(reason) = self.info.unsupported_reason() {
            return CameraError::Unsupported(reason);
        }
        let not_negotiated = debug.is_some_and(|d| d.contains("not-negotiated"));
        match (&error, self.info.decoded_format()) {
            (CameraError::Pipeline(_), Some(format)) if not_negotiated => {
                CameraError::Unsupported(format!(
                    "decoded video {format} cannot be converted for the JPEG encoder (not-negotiated)"
                ))
            }
            _ => error,
        }
    }
}

/// Maps a GStreamer error to a camera failure kind.
pub fn classify(err: gst::glib::Error, debug: Option<&str>) -> CameraError {
    let debug = debug.unwrap_or("");
    let message = panoptes_runtime::redact::redact_text(&err.to_string());
    if err.matches(gst::ResourceError::NotAuthorized) || debug.contains("401") {
        CameraError::AuthFailed
    } else if err.matches(gst::ResourceError::NotFound) || debug.contains("404") {
        CameraError::NotFound
    } else if err.matches(gst::ResourceError::OpenRead)
        || err.matches(gst::ResourceError::OpenReadWrite)
        || err.matches(gst::ResourceError::Read)
        || err.matches(gst::ResourceError::Write)
        || err.matches(gst::ResourceError::Settings)
        || err.matches(gst::ResourceError::Busy)
    {
        CameraError::Unreachable(message)
    } else if err.matches(gst::CoreError::MissingPlugin)
        || err.matches(gst::StreamError::CodecNotFound)
        || err.matches(gst::StreamError::TypeNotFound)
        || err.matches(gst::StreamError::WrongType)
        || err.matches(gst::StreamError::Format)
    {
        CameraError::Unsupported(message)
    } else {
        CameraError::Pipeline(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_keeps_aspect_and_never_upscales() {
        assert_eq!(fit_within(1280, 720, 640, 360), (640, 360));
        assert_eq!(fit_within(1920, 1080, 640, 640), (640, 360));
        assert_eq!(fit_within(640, 480, 640, 360), (480, 360));
        assert_eq!(fit_within(320, 240, 640, 360), (320, 240));
        assert_eq!(fit_within(1001, 333, 500, 500), (500, 166));
    }

    #[test]
    fn geometry_uses_the_displayed_shape() {
        gst::init().unwrap();
        let caps = gst::Caps::builder("video/x-raw")
            .field("format", "I422_10LE")
            .field("width", 1440i32)
            .field("height", 1080i32)
            .field("pixel-aspect-ratio", gst::Fraction::new(4, 3))
            .field("interlace-mode", "interleaved")
            .build();
        let g = Geometry::of(&caps).unwrap();
        assert_eq!(g.output_size(640, 360), (640, 360));
        assert_eq!(g.describe(), "I422_10LE 1440x1080 par 4/3 interleaved");
        let odd = gst::Caps::builder("video/x-raw")
            .field("width", 641i32)
            .field("height", 361i32)
            .build();
        let g = Geometry::of(&odd).unwrap();
        assert_eq!(g.output_size(640, 360), (638, 360));
        assert_eq!(g.output_size(1280, 720), (640, 360));
        assert!(Geometry::of(&gst::Caps::builder("video/x-raw").build()).is_none());
    }
}
