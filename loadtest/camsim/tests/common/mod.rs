//! What only the simulator's tests need: the simulator process (from `panoptes_testkit`) with
//! panicking helpers, raw RTSP `DESCRIBE`, and a small gstreamer-rs client playing its
//! streams (rtspsrc → decodebin → GRAY8 appsink).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_video as gst_video;
use panoptes_scene::read_frame_index;
use panoptes_testkit::CamSim;
use panoptes_testkit::http::request;

/// Tests start real encoders; run them one at a time so rates are measurable on 2 cores.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running `panoptes-camsim` process (`panoptes_testkit::CamSim`), killed on drop; it holds
/// the [`serial`] lock while it runs.
pub struct Camsim(pub CamSim, MutexGuard<'static, ()>);

impl Camsim {
    /// Takes the [`serial`] lock, starts the binary with a `--camera` argument per spec of
    /// `cameras` and waits (≤ 20 s) for its `RTSP=`/`CONTROL=` lines.
    pub fn start(cameras: &[&str]) -> Self {
        let serial = serial();
        let args: Vec<&str> = cameras.iter().flat_map(|c| ["--camera", c]).collect();
        let sim = CamSim::start_with_env(&args, &[("RUST_LOG", "info")]);
        Self(sim.expect("camsim did not start"), serial)
    }

    /// URL of camera `id`.
    pub fn url(&self, id: &str) -> String {
        self.0.url(id, None)
    }

    /// `POST {control}{path}` → (status, body).
    pub fn post(&self, path: &str) -> (u16, String) {
        request(&self.0.control, "POST", path, None, None).expect("control API")
    }

    /// `GET {control}{path}` → (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        request(&self.0.control, "GET", path, None, None).expect("control API")
    }

    /// The status object of one camera from `GET /cameras`.
    pub fn camera(&self, id: &str) -> serde_json::Value {
        let (code, body) = self.get("/cameras");
        assert_eq!(code, 200, "{body}");
        let all: serde_json::Value = serde_json::from_str(&body).expect("json");
        all.as_array()
            .and_then(|a| a.iter().find(|c| c["id"] == id).cloned())
            .unwrap_or_else(|| panic!("camera {id} missing in {body}"))
    }
}

fn host_port(url: &str) -> String {
    let rest = url.split("://").nth(1).unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_string()
}

/// Sends one RTSP DESCRIBE and returns (status code, full response text).
pub fn describe(url: &str, creds: Option<(&str, &str)>) -> (u16, String) {
    let mut s = TcpStream::connect(host_port(url)).expect("connect rtsp");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let auth = creds
        .map(|(u, p)| {
            let b64 = gst::glib::base64_encode(format!("{u}:{p}").as_bytes());
            format!("Authorization: Basic {b64}\r\n")
        })
        .unwrap_or_default();
    write!(
        s,
        "DESCRIBE {url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n{auth}\r\n"
    )
    .expect("write");
    let mut reader = BufReader::new(s);
    let mut head = String::new();
    let mut content_length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            content_length = v.trim().parse().unwrap_or(0);
        }
        let end = line == "\r\n";
        head.push_str(&line);
        if end {
            break;
        }
    }
    let mut body = vec![0u8; content_length];
    reader.read_exact(&mut body).ok();
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head + &String::from_utf8_lossy(&body))
}

/// What the test client observed.
#[derive(Debug)]
pub enum Event {
    /// A decoded frame.
    Frame {
        width: u32,
        height: u32,
        index: Option<u64>,
        at: Instant,
    },
    /// End of stream.
    Eos,
    /// Pipeline error (message).
    Error(String),
}

/// A playing RTSP client; stops on drop.
pub struct Client {
    pipeline: gst::Pipeline,
    rx: Receiver<Event>,
    stop: Arc<AtomicBool>,
}

impl Client {
    /// Starts playing `url` over TCP, optionally with basic-auth credentials.
    pub fn open(url: &str, creds: Option<(&str, &str)>) -> Self {
        gst::init().expect("gst init");
        let desc = format!(
            "rtspsrc name=src location={url} protocols=tcp latency=200 ! decodebin ! videoconvert \
             ! video/x-raw,format=GRAY8 ! appsink name=sink sync=false max-buffers=4"
        );
        let pipeline = gst::parse::launch(&desc)
            .expect("parse client pipeline")
            .downcast::<gst::Pipeline>()
            .expect("pipeline");
        if let Some((u, p)) = creds {
            let src = pipeline.by_name("src").expect("src");
            src.set_property("user-id", u);
            src.set_property("user-pw", p);
        }
        let (tx, rx) = channel();
        let sink = pipeline
            .by_name("sink")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .expect("appsink");
        let frames: Sender<Event> = tx.clone();
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let info = sample
                        .caps()
                        .and_then(|c| gst_video::VideoInfo::from_caps(c).ok())
                        .ok_or(gst::FlowError::NotNegotiated)?;
                    let buffer = sample.buffer().ok_or(gst::FlowError::Error)?;
                    let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
                    let stride = info.stride()[0] as usize;
                    let index =
                        read_frame_index(map.as_slice(), info.width(), info.height(), stride);
                    let _ = frames.send(Event::Frame {
                        width: info.width(),
                        height: info.height(),
                        index,
                        at: Instant::now(),
                    });
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let bus = pipeline.bus().expect("bus");
        let stop = Arc::new(AtomicBool::new(false));
        let stop_bus = stop.clone();
        std::thread::spawn(move || {
            while !stop_bus.load(Ordering::Acquire) {
                let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
                    continue;
                };
                let ev = match msg.view() {
                    gst::MessageView::Eos(_) => Event::Eos,
                    gst::MessageView::Error(e) => {
                        Event::Error(format!("{} ({:?})", e.error(), e.debug()))
                    }
                    _ => continue,
                };
                if tx.send(ev).is_err() {
                    break;
                }
            }
        });
        pipeline.set_state(gst::State::Playing).expect("play");
        Self { pipeline, rx, stop }
    }

    /// Next event within `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Event> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Waits for the first frame (panics on error/EOS/timeout), then collects frames for
    /// `window`. Returns (first frame, frames in the window).
    pub fn frames_for(&self, first_timeout: Duration, window: Duration) -> Vec<Event> {
        let first = self.wait_frame(first_timeout);
        let mut out = vec![first];
        let end = Instant::now() + window;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(ev @ Event::Frame { .. }) => out.push(ev),
                Some(other) => panic!("stream ended while collecting: {other:?}"),
                None => break,
            }
        }
        out
    }

    /// Waits for a frame; panics on error, EOS or timeout.
    pub fn wait_frame(&self, timeout: Duration) -> Event {
        match self.next(timeout) {
            Some(ev @ Event::Frame { .. }) => ev,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Discards everything queued so far.
    pub fn drain(&self) -> usize {
        self.rx.try_iter().count()
    }

    /// Waits for an error or EOS (skipping frames); returns it, or None on timeout.
    pub fn wait_end(&self, timeout: Duration) -> Option<Event> {
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.next(left) {
                Some(Event::Frame { .. }) => continue,
                other => return other,
            }
        }
        None
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}
