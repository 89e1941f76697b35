//! A TCP proxy that emulates a bad network between cameras and ingest nodes, for the
//! `network` chaos scenario (the kernel's `netem` qdisc is not available on every machine).
//!
//! What it emulates, exactly:
//! - **delay**: every chunk of bytes read from one side is written to the other side `delay`
//!   later (in both directions, order kept, throughput not limited): a fixed added one-way
//!   latency, so a round trip costs `2 × delay` more;
//! - **loss**: at the TCP level only: [`TcpProxy::cut`] closes every open connection of a
//!   camera at once (both sides see the connection end, unsent bytes are dropped), which is
//!   what a camera behind a lossy link shows a TCP client when its connection breaks. Packet
//!   loss *inside* a connection is not emulated (TCP would retransmit it; over RTSP/TCP its
//!   only visible effect is more delay).
//!
//! Connections are told apart by the camera path in their first RTSP request
//! (`OPTIONS rtsp://host:port/<camera> RTSP/1.0`), so cuts can target one camera.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

struct Conn {
    camera: Option<String>,
    cancel: watch::Sender<bool>,
}

#[derive(Default)]
struct State {
    conns: Mutex<BTreeMap<u64, Conn>>,
    next: AtomicU64,
    accepted: AtomicU64,
    cut: AtomicU64,
    bytes: AtomicU64,
}

impl State {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Conn>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running proxy; stops (closing every connection) when dropped.
pub struct TcpProxy {
    /// Where clients connect (`127.0.0.1:<port>`).
    pub addr: SocketAddr,
    /// Added one-way delay.
    pub delay: Duration,
    state: Arc<State>,
    rt: Option<tokio::runtime::Runtime>,
}

impl TcpProxy {
    /// Listens on a free local port and forwards every connection to `upstream`
    /// (`host:port`), adding `delay` each way.
    pub fn start(upstream: &str, delay: Duration) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("chaos-proxy")
            .enable_all()
            .build()?;
        let listener = rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let upstream = upstream.to_string();
        let st = state.clone();
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = st.next.fetch_add(1, Ordering::Relaxed);
                st.accepted.fetch_add(1, Ordering::Relaxed);
                let (tx, rx) = watch::channel(false);
                st.lock().insert(
                    id,
                    Conn {
                        camera: None,
                        cancel: tx,
                    },
                );
                let (st2, up) = (st.clone(), upstream.clone());
                tokio::spawn(async move {
                    if let Err(e) = serve(client, &up, delay, id, st2.clone(), rx).await {
                        tracing::debug!(error = %e, "proxy connection ended");
                    }
                    st2.lock().remove(&id);
                });
            }
        });
        Ok(Self {
            addr,
            delay,
            state,
            rt: Some(rt),
        })
    }

    /// Closes every open connection of `camera`; returns how many.
    pub fn cut(&self, camera: &str) -> usize {
        let conns = self.state.lock();
        let mut n = 0;
        for c in conns.values() {
            if c.camera.as_deref() == Some(camera) {
                let _ = c.cancel.send(true);
                n += 1;
            }
        }
        self.state.cut.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Open connections per camera.
    pub fn open(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for c in self.state.lock().values() {
            *m.entry(c.camera.clone().unwrap_or_else(|| "?".into()))
                .or_default() += 1;
        }
        m
    }

    /// (connections accepted, connections cut, bytes forwarded).
    pub fn stats(&self) -> (u64, u64, u64) {
        (
            self.state.accepted.load(Ordering::Relaxed),
            self.state.cut.load(Ordering::Relaxed),
            self.state.bytes.load(Ordering::Relaxed),
        )
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Camera id from the first RTSP request line: the first path segment of its URL.
pub fn camera_of_request(head: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(head.get(..head.len().min(512))?).ok()?;
    let line = text.lines().next()?;
    let url = line.split_whitespace().nth(1)?;
    let rest = url.split("://").nth(1)?;
    let path = rest.split_once('/')?.1;
    let cam = path.split(['/', '?']).next()?;
    (!cam.is_empty()).then(|| cam.to_string())
}

async fn serve(
    client: TcpStream,
    upstream: &str,
    delay: Duration,
    id: u64,
    st: Arc<State>,
    mut cancel: watch::Receiver<bool>,
) -> Result<()> {
    let server = TcpStream::connect(upstream)
        .await
        .with_context(|| format!("connecting to {upstream}"))?;
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let mut up = tokio::spawn(pipe(cr, sw, delay, Some(id), st.clone()));
    let mut down = tokio::spawn(pipe(sr, cw, delay, None, st));
    tokio::select! {
        _ = cancel.wait_for(|c| *c) => {}
        _ = &mut up => {}
        _ = &mut down => {}
    }
    up.abort();
    down.abort();
    Ok(())
}

async fn pipe(
    mut r: tokio::net::tcp::OwnedReadHalf,
    mut w: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
    sniff: Option<u64>,
    st: Arc<State>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let st2 = st.clone();
    let writer = async move {
        while let Some((due, buf)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if w.write_all(&buf).await.is_err() {
                break;
            }
            st2.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        let _ = w.shutdown().await;
    };
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut sniffed = sniff.is_none();
        loop {
            let n = match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if !sniffed {
                sniffed = true;
                if let (Some(id), Some(cam)) = (sniff, camera_of_request(&buf[..n]))
                    && let Some(c) = st.lock().get_mut(&id)
                {
                    c.camera = Some(cam);
                }
            }
            if tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::camera_of_request;

    #[test]
    fn camera_from_the_first_request_line() {
        let req = b"OPTIONS rtsp://127.0.0.1:8554/cam3 RTSP/1.0\r\nCSeq: 1\r\n\r\n";
        assert_eq!(camera_of_request(req).as_deref(), Some("cam3"));
        let req = b"DESCRIBE rtsp://u:p@127.0.0.1:8554/cam-1/stream=0 RTSP/1.0\r\n";
        assert_eq!(camera_of_request(req).as_deref(), Some("cam-1"));
        assert_eq!(camera_of_request(b"GET / HTTP/1.1\r\n"), None);
    }
}
