//! The RTSP side: one gst-rtsp-server on its own GLib main-loop thread, a shared media
//! factory per camera, basic auth for protected cameras, and the fault operations the
//! control API needs (count clients, end sessions, unmount/remount).
//!
//! Medias are **not shared**: every client connection gets its own pipeline (appsrc, encoder,
//! payloader) and feeder thread, created on its DESCRIBE/SETUP and torn down (feeder stopped at
//! `unprepared`) when its session ends. Costs one encoder per client, but gst-rtsp-server 1.22
//! has a race with shared medias: a client that reconnects while the previous client's shared
//! media is still unpreparing gets `503 Service Unavailable` — exactly what a fast-reconnecting
//! ingest node does after a drop. Every client still sees the scene of the current instant.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use gstreamer_rtsp_server::{self as rtsp_server, gst_rtsp, prelude::*};
use rtsp_server::{
    RTSP_PERM_MEDIA_FACTORY_ACCESS, RTSP_PERM_MEDIA_FACTORY_CONSTRUCT,
    RTSP_TOKEN_MEDIA_FACTORY_ROLE, RTSPAuth, RTSPFilterResult, RTSPMedia, RTSPMediaFactory,
    RTSPMountPoints, RTSPServer, RTSPSession, RTSPToken,
};

use super::Error;
use super::camera::Camera;
use super::feeder::{self, AUDIO_RATE};
use super::formats::FormatCamera;
use panoptes_scene::camera::{Codec, Credentials};

/// Role given to clients without (valid) credentials.
const ANONYMOUS_ROLE: &str = "anonymous";

/// The running RTSP server and its main loop.
pub(crate) struct Rtsp {
    server: RTSPServer,
    mounts: RTSPMountPoints,
    context: glib::MainContext,
    main_loop: glib::MainLoop,
    thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    factories: HashMap<String, RTSPMediaFactory>,
    formats: HashMap<String, FormatMount>,
    port: u16,
}

/// A format camera's factory, what it serves now, and its live medias (to change them).
struct FormatMount {
    factory: RTSPMediaFactory,
    camera: std::sync::Mutex<FormatCamera>,
    medias: Arc<std::sync::Mutex<Vec<glib::WeakRef<RTSPMedia>>>>,
}

/// gst-launch description of a camera's media pipeline (appsrc named `src`, payloader `pay0`).
pub(crate) fn launch_line(cam: &panoptes_scene::camera::CameraConfig) -> String {
    let fps = cam.fps;
    let src = "appsrc name=src is-live=true format=time do-timestamp=false block=false \
               max-buffers=2 leaky-type=downstream";
    let queue = "queue max-size-buffers=3 max-size-bytes=0 max-size-time=0 leaky=downstream";
    match cam.codec {
        Codec::H264 | Codec::H265 => {
            let caps = format!(
                "video/x-raw,format=I420,width={},height={},framerate={fps}/1,\
                 pixel-aspect-ratio=1/1,colorimetry=bt601,interlace-mode=progressive",
                cam.width, cam.height
            );
            // B-frames (none by default) are never references: an IBBP stream. Left to
            // negotiate, x264enc settles on Constrained Baseline here, which has none.
            let b = cam.bframes;
            let enc = if cam.codec == Codec::H264 {
                let profile = if b > 0 {
                    " ! video/x-h264,profile=main"
                } else {
                    ""
                };
                format!(
                    "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} threads=1 \
                     bframes={b} b-adapt=false b-pyramid=false{profile} \
                     ! rtph264pay name=pay0 pt=96 config-interval=-1"
                )
            } else {
                // x265 refuses B-frames under tune=zerolatency: a short lookahead instead.
                let tuning = match b {
                    0 => "tune=zerolatency option-string=\"pools=1:frame-threads=1:lookahead-slices=0\""
                        .to_string(),
                    b => format!(
                        "option-string=\"pools=1:frame-threads=1:lookahead-slices=0:bframes={b}:\
                         b-adapt=0:b-pyramid=0:rc-lookahead=4\""
                    ),
                };
                format!(
                    "x265enc speed-preset=ultrafast key-int-max={fps} {tuning} \
                     ! rtph265pay name=pay0 pt=96 config-interval=-1"
                )
            };
            format!("( {src} caps=\"{caps}\" ! {queue} ! {enc} )")
        }
        Codec::Audio => format!(
            "( {src} caps=\"audio/x-raw,format=S16BE,layout=interleaved,rate={AUDIO_RATE},channels=1\" \
             ! {queue} ! rtpL16pay name=pay0 pt=97 )"
        ),
    }
}

/// Sets a stop flag when dropped (i.e. when the media that owns the closure is finalized).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

fn configure_media(camera: &Arc<Camera>, media: &RTSPMedia) {
    let id = &camera.config.id;
    let appsrc = media
        .element()
        .downcast::<gst::Bin>()
        .ok()
        .and_then(|bin| bin.by_name("src"))
        .and_then(|e| e.downcast::<gst_app::AppSrc>().ok());
    let Some(appsrc) = appsrc else {
        tracing::error!(camera = %id, "media has no appsrc named src");
        return;
    };
    if let Some(pad) = appsrc.static_pad("src") {
        let cam = camera.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            cam.count_frame();
            gst::PadProbeReturn::Ok
        });
    }
    let stop = Arc::new(AtomicBool::new(false));
    let guard = StopOnDrop(stop.clone());
    media.connect_unprepared(move |_| guard.0.store(true, Ordering::Release));
    match feeder::spawn(camera.clone(), appsrc, stop) {
        Ok(_) => tracing::info!(camera = %id, "media configured, feeder started"),
        Err(e) => tracing::error!(camera = %id, error = %e, "cannot spawn feeder"),
    }
}

fn permissions(role: &str, construct: bool) -> gst::Structure {
    gst::Structure::builder(role)
        .field(RTSP_PERM_MEDIA_FACTORY_ACCESS.as_str(), true)
        .field(RTSP_PERM_MEDIA_FACTORY_CONSTRUCT.as_str(), construct)
        .build()
}

/// Installs basic auth: one role per distinct credential pair, plus an anonymous default
/// token. Open cameras let every role access and construct their media. Protected cameras let
/// only their own role construct; every other role (anonymous, wrong password, other users)
/// gets *access* without *construct*, which gst-rtsp-server answers with
/// `401 Unauthorized` + `WWW-Authenticate: Basic` (denied access would be a 404, which
/// clients do not retry with credentials).
///
/// Returns every role (anonymous first), for factories open to all of them.
fn install_auth(
    server: &RTSPServer,
    cameras: &[Arc<Camera>],
    factories: &[RTSPMediaFactory],
) -> Vec<String> {
    let mut roles: Vec<(Credentials, String)> = Vec::new();
    for cam in cameras {
        if let Some(c) = &cam.config.credentials
            && !roles.iter().any(|(k, _)| k == c)
        {
            roles.push((c.clone(), format!("user{}", roles.len())));
        }
    }
    let auth = RTSPAuth::new();
    auth.set_supported_methods(gst_rtsp::RTSPAuthMethod::Basic);
    let mut anonymous = RTSPToken::builder()
        .field(RTSP_TOKEN_MEDIA_FACTORY_ROLE.as_str(), ANONYMOUS_ROLE)
        .build();
    auth.set_default_token(Some(&mut anonymous));
    for (creds, role) in &roles {
        let token = RTSPToken::builder()
            .field(RTSP_TOKEN_MEDIA_FACTORY_ROLE.as_str(), role.as_str())
            .build();
        auth.add_basic(&RTSPAuth::make_basic(&creds.user, &creds.pass), &token);
    }
    for (cam, factory) in cameras.iter().zip(factories) {
        let own = cam
            .config
            .credentials
            .as_ref()
            .and_then(|c| roles.iter().find(|(k, _)| k == c))
            .map(|(_, role)| role.as_str());
        let open = cam.config.credentials.is_none();
        factory.add_role_from_structure(&permissions(ANONYMOUS_ROLE, open));
        for (_, role) in &roles {
            factory.add_role_from_structure(&permissions(role, open || own == Some(role)));
        }
    }
    server.set_auth(Some(&auth));
    std::iter::once(ANONYMOUS_ROLE.to_owned())
        .chain(roles.into_iter().map(|(_, role)| role))
        .collect()
}

/// Runs `f` on `context` every `period` until it returns [`glib::ControlFlow::Break`].
fn on_timeout(
    context: &glib::MainContext,
    period: Duration,
    name: &str,
    f: impl FnMut() -> glib::ControlFlow + Send + 'static,
) {
    glib::timeout_source_new(period, Some(name), glib::Priority::DEFAULT, f).attach(Some(context));
}

/// Whether `session` holds a media mounted exactly at `path`.
fn session_uses(session: &RTSPSession, path: &str) -> bool {
    let mut uses = false;
    session.filter(Some(&mut |_, sm| {
        if sm.matches(path) == Some(path.len() as i32) {
            uses = true;
        }
        RTSPFilterResult::Keep
    }));
    uses
}

/// Number of clients with a session on each of `paths`.
fn count_clients(server: &RTSPServer, paths: &[String]) -> Vec<u32> {
    let mut counts = vec![0u32; paths.len()];
    server.client_filter(Some(&mut |_, client| {
        let mut used = vec![false; paths.len()];
        client.session_filter(Some(&mut |_, session| {
            for (u, p) in used.iter_mut().zip(paths) {
                *u |= session_uses(session, p);
            }
            RTSPFilterResult::Keep
        }));
        for (c, u) in counts.iter_mut().zip(used) {
            *c += u32::from(u);
        }
        RTSPFilterResult::Keep
    }));
    counts
}

/// Ends every session on `path`: closes the clients' connections and removes the sessions
/// from the pool (UDP sessions would otherwise outlive the connection).
fn end_sessions(server: &RTSPServer, path: &str) -> usize {
    let mut victims = Vec::new();
    server.client_filter(Some(&mut |_, client| {
        let mut uses = false;
        client.session_filter(Some(&mut |_, session| {
            uses |= session_uses(session, path);
            RTSPFilterResult::Keep
        }));
        if uses {
            victims.push(client.clone());
        }
        RTSPFilterResult::Keep
    }));
    for client in &victims {
        client.close();
    }
    if let Some(pool) = server.session_pool() {
        pool.filter(Some(&mut |_, session| {
            if session_uses(session, path) {
                RTSPFilterResult::Remove
            } else {
                RTSPFilterResult::Keep
            }
        }));
    }
    victims.len()
}

impl Rtsp {
    /// Builds the server, binds `listen` and starts the main-loop thread.
    pub(crate) fn start(
        listen: SocketAddr,
        cameras: &[Arc<Camera>],
        formats: &[FormatCamera],
    ) -> Result<Self, Error> {
        let server = RTSPServer::new();
        server.set_address(&listen.ip().to_string());
        server.set_service(&listen.port().to_string());
        let mounts = server
            .mount_points()
            .ok_or_else(|| Error::Gst("server has no mount points".into()))?;
        let mut factories = Vec::new();
        for cam in cameras {
            let factory = RTSPMediaFactory::new();
            factory.set_launch(&launch_line(&cam.config));
            factory.set_shared(false);
            let c = cam.clone();
            factory.connect_media_configure(move |_, media| configure_media(&c, media));
            mounts.add_factory(&cam.path(), factory.clone());
            factories.push(factory);
        }
        let roles = install_auth(&server, cameras, &factories);
        let mut format_mounts = HashMap::new();
        for cam in formats {
            // A plain launch line with explicit caps (no feeder, no fault control), open to
            // every client; not shared, like the scene cameras.
            let factory = RTSPMediaFactory::new();
            factory.set_launch(&cam.launch_line());
            factory.set_shared(false);
            for role in &roles {
                factory.add_role_from_structure(&permissions(role, true));
            }
            let medias: Arc<std::sync::Mutex<Vec<glib::WeakRef<RTSPMedia>>>> = Arc::default();
            let live = medias.clone();
            factory.connect_media_configure(move |_, media| {
                let mut live = live.lock().unwrap_or_else(|e| e.into_inner());
                live.retain(|m| m.upgrade().is_some());
                live.push(media.downgrade());
            });
            mounts.add_factory(&format!("/{}", cam.id), factory.clone());
            let mount = FormatMount {
                factory,
                camera: std::sync::Mutex::new(cam.clone()),
                medias,
            };
            format_mounts.insert(cam.id.clone(), mount);
        }

        let context = glib::MainContext::new();
        let main_loop = glib::MainLoop::new(Some(&context), false);
        server
            .attach(Some(&context))
            .map_err(|e| Error::Gst(format!("cannot listen on {listen}: {e}")))?;
        let port = u16::try_from(server.bound_port())
            .map_err(|_| Error::Gst(format!("cannot listen on {listen}")))?;
        if let Some(pool) = server.session_pool() {
            // Expire sessions of clients that vanished without TEARDOWN.
            on_timeout(
                &context,
                Duration::from_secs(2),
                "camsim-session-cleanup",
                move || {
                    pool.cleanup();
                    glib::ControlFlow::Continue
                },
            );
        }
        let thread = std::thread::Builder::new()
            .name("rtsp-mainloop".into())
            .spawn({
                let main_loop = main_loop.clone();
                move || main_loop.run()
            })?;
        let factories = cameras
            .iter()
            .map(|c| c.config.id.clone())
            .zip(factories)
            .collect();
        Ok(Self {
            server,
            mounts,
            context,
            main_loop,
            thread: std::sync::Mutex::new(Some(thread)),
            factories,
            formats: format_mounts,
            port,
        })
    }

    /// Changes format camera `id` ([`crate::formats::FormatChange`]): a new size or rate is
    /// applied to the running sessions through their `shape` capsfilter; a new format ends
    /// them, so that clients reconnect to the new stream. New sessions get the new camera.
    /// Returns the camera now served and how many clients were disconnected.
    pub(crate) async fn change_format(
        &self,
        id: &str,
        change: &crate::formats::FormatChange,
    ) -> Result<(FormatCamera, usize), Error> {
        let mount = self
            .formats
            .get(id)
            .ok_or_else(|| Error::UnknownCamera(id.to_string()))?;
        let (next, recode) = {
            let mut cam = mount.camera.lock().unwrap_or_else(|e| e.into_inner());
            let next = cam.changed(change)?;
            let recode = next.format != cam.format;
            *cam = next.clone();
            (next, recode)
        };
        mount.factory.set_launch(&next.launch_line());
        if recode {
            let ended = self.end_sessions(format!("/{id}")).await?;
            return Ok((next, ended));
        }
        let caps = gst::Caps::from_str(&next.source_caps())
            .map_err(|e| Error::Gst(format!("bad caps {}: {e}", next.source_caps())))?;
        let medias = mount.medias.lock().unwrap_or_else(|e| e.into_inner());
        for media in medias.iter().filter_map(glib::WeakRef::upgrade) {
            let shape = media
                .element()
                .downcast::<gst::Bin>()
                .ok()
                .and_then(|bin| bin.by_name("shape"));
            if let Some(shape) = shape {
                shape.set_property("caps", &caps);
            }
        }
        Ok((next, 0))
    }

    /// The bound RTSP port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Runs `f` on the main-loop thread and returns its result.
    async fn on_main_loop<R: Send + 'static>(
        &self,
        f: impl FnOnce(&RTSPServer, &RTSPMountPoints) -> R + Send + 'static,
    ) -> Result<R, Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (server, mounts) = (self.server.clone(), self.mounts.clone());
        self.context.invoke(move || {
            let _ = tx.send(f(&server, &mounts));
        });
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .map_err(|_| Error::Gst("RTSP main loop did not answer".into()))?
            .map_err(|_| Error::Gst("RTSP main loop is gone".into()))
    }

    /// Client count per camera path.
    pub(crate) async fn client_counts(&self, paths: Vec<String>) -> Result<Vec<u32>, Error> {
        self.on_main_loop(move |server, _| count_clients(server, &paths))
            .await
    }

    /// Ends all sessions of the camera; returns how many clients were disconnected.
    pub(crate) async fn end_sessions(&self, path: String) -> Result<usize, Error> {
        self.on_main_loop(move |server, _| end_sessions(server, &path))
            .await
    }

    /// Mounts or unmounts a camera (unmounted paths answer 404).
    pub(crate) async fn set_mounted(&self, id: &str, mounted: bool) -> Result<(), Error> {
        let factory = self
            .factories
            .get(id)
            .cloned()
            .ok_or_else(|| Error::UnknownCamera(id.to_string()))?;
        let path = format!("/{id}");
        self.on_main_loop(move |_, mounts| {
            if mounted {
                mounts.add_factory(&path, factory);
            } else {
                mounts.remove_factory(&path);
            }
        })
        .await
    }

    /// Ends all sessions, stops the main loop and joins its thread (blocking; idempotent).
    pub(crate) fn shutdown(&self) {
        let server = self.server.clone();
        self.context.invoke(move || {
            for client in server.client_filter(None) {
                client.close();
            }
        });
        // Give the close a moment to go out before the loop stops.
        let quit = self.main_loop.clone();
        on_timeout(
            &self.context,
            Duration::from_millis(100),
            "camsim-quit",
            move || {
                quit.quit();
                glib::ControlFlow::Break
            },
        );
        let thread = self.thread.lock().map(|mut t| t.take()).unwrap_or(None);
        if let Some(t) = thread {
            let _ = t.join();
        }
    }
}

impl Drop for Rtsp {
    fn drop(&mut self) {
        self.main_loop.quit();
    }
}
