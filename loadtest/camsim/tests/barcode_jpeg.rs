//! The frame-index barcode survives what ingest does to frames: downscaling (here to a
//! quarter of the width, bilinear) and JPEG compression at quality 75.

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use panoptes_scene::{FRAME_INDEX_BITS, SceneSpec, read_frame_index, render_i420};

fn roundtrip(width: u32, height: u32, indexes: &[u64]) -> Vec<Option<u64>> {
    gst::init().expect("gst init");
    let (qw, qh) = (width / 4, height / 4);
    let desc = format!(
        "appsrc name=src format=time caps=video/x-raw,format=I420,width={width},height={height},framerate=10/1 \
         ! videoscale method=bilinear ! video/x-raw,width={qw},height={qh} \
         ! jpegenc quality=75 ! jpegdec ! videoconvert ! video/x-raw,format=GRAY8 \
         ! appsink name=sink sync=false"
    );
    let pipeline = gst::parse::launch(&desc)
        .expect("parse")
        .downcast::<gst::Pipeline>()
        .expect("pipeline");
    let src = pipeline
        .by_name("src")
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok())
        .expect("appsrc");
    let sink = pipeline
        .by_name("sink")
        .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
        .expect("appsink");
    pipeline.set_state(gst::State::Playing).expect("play");
    let spec = SceneSpec::new(width, height);
    let mut frame = Vec::new();
    for (i, &idx) in indexes.iter().enumerate() {
        render_i420(&spec, "cam0", idx, &mut frame);
        let mut buf = gst::Buffer::from_slice(frame.clone());
        buf.get_mut()
            .expect("writable")
            .set_pts(gst::ClockTime::from_mseconds(100 * i as u64));
        src.push_buffer(buf).expect("push");
    }
    src.end_of_stream().expect("eos");
    let mut out = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let info = gst_video::VideoInfo::from_caps(sample.caps().expect("caps")).expect("info");
        assert_eq!((info.width(), info.height()), (qw, qh));
        let map = sample
            .buffer()
            .expect("buffer")
            .map_readable()
            .expect("map");
        out.push(read_frame_index(
            map.as_slice(),
            info.width(),
            info.height(),
            info.stride()[0] as usize,
        ));
    }
    pipeline.set_state(gst::State::Null).expect("stop");
    out
}

#[test]
fn barcode_survives_quarter_width_and_jpeg_q75() {
    let indexes = [0u64, 1, 777, 12_345_678, 17_958_762_490, (1 << 30) - 1];
    for (w, h) in [(320, 180), (640, 360), (1280, 720), (352, 288)] {
        let read = roundtrip(w, h, &indexes);
        let want: Vec<Option<u64>> = indexes
            .iter()
            .map(|i| Some(i % (1 << FRAME_INDEX_BITS)))
            .collect();
        assert_eq!(read, want, "{w}x{h}");
    }
}
