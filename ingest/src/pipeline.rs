//! The GStreamer pipeline of one camera and the translation of its bus messages.
//!
//! ```text
//! rtspsrc ─(video pad)─► decodebin ─► videorate ─► videoscale ─► capsfilter ─► jpegenc ─► appsink
//!        └(other pads)─► fakesink                 (drop-only)    (fit inside the analytic box,
//!                                                                  aspect kept, never upscaled)
//! ```
//!
//! Credentials go to rtspsrc's `user-id`/`user-pw` properties, never into `location`, so
//! GStreamer's own messages cannot leak them. The appsink keeps at most `buffer_frames`
//! samples and drops the oldest: a slow consumer costs frames, never memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use crate::config::CameraSpec;
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
    /// With tracing on: the stage stamps the frames' spans are built from (kept alive here,
    /// looked up by camera id, [`crate::trace`]).
    pub stages: Option<Arc<crate::trace::StageClock>>,
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
/// the rest once rtspsrc and decodebin know what the camera sends.
pub fn build(spec: &CameraSpec) -> Result<CameraPipeline, CameraError> {
    let pipeline = gst::Pipeline::with_name(&format!("camera-{}", spec.id));
    let src = rtsp_source(spec)?;
    let decode = make("decodebin")?;
    let chain = EncodeChain::new(spec)?;
    chain.add_to(&pipeline, [&src, &decode])?;

    let info = Arc::new(StreamInfo::default());
    route_source_pads(&pipeline, &src, &decode, info.clone())?;
    route_decoded_video(&decode, &chain, spec, info.clone())?;

    let stages = stage_probes(spec, &decode, &chain)?;
    let bus = pipeline
        .bus()
        .ok_or_else(|| CameraError::Pipeline("pipeline has no bus".into()))?;
    Ok(CameraPipeline {
        pipeline,
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
    if let Some(user) = spec.url.user() {
        src.set_property("user-id", user);
    }
    if let Some(pw) = spec.url.password() {
        src.set_property("user-pw", pw.expose());
    }
    Ok(src)
}

/// The fixed part after the decoder: videorate → videoscale → capsfilter → jpegenc → appsink.
struct EncodeChain {
    rate: gst::Element,
    scale: gst::Element,
    filter: gst::Element,
    jpeg: gst::Element,
    appsink: gst_app::AppSink,
}

impl EncodeChain {
    fn new(spec: &CameraSpec) -> Result<Self, CameraError> {
        let rate = make("videorate")?;
        rate.set_property("drop-only", true);
        rate.set_property("max-rate", i32::try_from(spec.fps).unwrap_or(i32::MAX));
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

/// decodebin: raw video goes on to the rate/scale/encode chain, sized to fit the box.
fn route_decoded_video(
    decode: &gst::Element,
    chain: &EncodeChain,
    spec: &CameraSpec,
    info: Arc<StreamInfo>,
) -> Result<(), CameraError> {
    let rate_sink = chain
        .rate
        .static_pad("sink")
        .ok_or_else(|| CameraError::Pipeline("videorate has no sink pad".into()))?;
    let filter = chain.filter.clone();
    let (max_w, max_h) = (spec.width, spec.height);
    decode.connect_pad_added(move |_dec, pad| {
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let Some(s) = caps.structure(0) else { return };
        if !s.name().starts_with("video/x-raw") || rate_sink.is_linked() {
            return;
        }
        let sw = s.get::<i32>("width").unwrap_or(0).max(0) as u32;
        let sh = s.get::<i32>("height").unwrap_or(0).max(0) as u32;
        let (ow, oh) = fit_within(sw, sh, max_w, max_h);
        filter.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("width", ow as i32)
                .field("height", oh as i32)
                .build(),
        );
        *info.dims.lock().unwrap_or_else(|e| e.into_inner()) = Some((sw, sh, ow, oh));
        if pad.link(&rate_sink).is_err() {
            info.link_failed.store(true, Ordering::SeqCst);
        }
    });
    Ok(())
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
                    return Some(classify(err.error(), err.debug().as_deref()));
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
}
