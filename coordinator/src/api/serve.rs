//! Serving the coordinator's HTTP port (operator API, health, metrics) over plain TCP or
//! TLS (rustls), with bounds no client can stretch.
//!
//! Contract:
//! - One accept loop; every connection runs on its own task, so a slow client (a TLS
//!   handshake that never finishes, headers sent a byte a second) never delays the next
//!   accept. The TLS handshake must finish within `handshake_timeout`, and so must each
//!   request's headers (hyper's `header_read_timeout`, which also closes idle keep-alive
//!   connections).
//! - At most `max_connections` connections are served at once; a connection over the bound
//!   is closed at once and counted (`panoptes_coordinator_api_connections_rejected_total`).
//! - HTTP/1.1 only (ALPN `http/1.1`). With a CA in the TLS files, clients must present a
//!   certificate signed by it, or the handshake fails (counted as a handshake failure).
//! - Cancelling stops accepting, asks open connections to finish their request and close,
//!   and waits for them at most [`DRAIN_TIMEOUT`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use panoptes_runtime::tls::{self, TlsError, TlsFiles};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long stopping waits for open connections.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the HTTP server needs besides the router.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where to listen.
    pub listen: SocketAddr,
    /// TLS files; `None` serves plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Time for the TLS handshake and for each request's headers.
    pub handshake_timeout: Duration,
}

/// Counters of the connection layer.
#[derive(Clone)]
pub struct ConnMetrics {
    rejected: prometheus::IntCounter,
    handshake_failures: prometheus::IntCounterVec,
    open: prometheus::IntGauge,
}

impl ConnMetrics {
    /// Creates and registers the counters in `registry`.
    pub fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let rejected = prometheus::IntCounter::new(
            "panoptes_coordinator_api_connections_rejected_total",
            "HTTP connections closed at once because api.max_connections were open",
        )?;
        let handshake_failures = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "panoptes_coordinator_api_tls_handshake_failures_total",
                "TLS handshakes that failed (reason: error or timeout)",
            ),
            &["reason"],
        )?;
        let open = prometheus::IntGauge::new(
            "panoptes_coordinator_api_connections_open",
            "HTTP connections being served",
        )?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(handshake_failures.clone()))?;
        registry.register(Box::new(open.clone()))?;
        Ok(Self {
            rejected,
            handshake_failures,
            open,
        })
    }
}

/// A running server.
pub struct Server {
    /// The bound address.
    pub addr: SocketAddr,
    /// `https` or `http`.
    pub scheme: &'static str,
    /// The accept loop; ends after the cancel token fired and connections drained.
    pub task: JoinHandle<()>,
}

impl Server {
    /// `scheme://addr`.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
    }
}

/// Why the server could not start. All fatal.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The API's configuration is unusable (no token, unreadable token file, ...).
    #[error(transparent)]
    Config(#[from] crate::config::ConfigInvalid),
    /// Metrics registration failed (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The TLS files are unusable.
    #[error("operator API {0}")]
    Tls(#[from] TlsError),
    /// The port could not be bound.
    #[error("HTTP listen {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Binds and serves `app` until `cancel` fires.
pub async fn serve(
    opts: ServeOptions,
    app: Router,
    metrics: ConnMetrics,
    cancel: CancellationToken,
) -> Result<Server, ServeError> {
    let acceptor = match &opts.tls {
        Some(files) => {
            tls::install_crypto_provider();
            files.check_readable()?;
            Some(TlsAcceptor::from(tls::server_config(
                files,
                &[b"http/1.1"],
            )?))
        }
        None => None,
    };
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: opts.listen,
        source,
    })?;
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let task = tokio::spawn(accept_loop(listener, acceptor, opts, app, metrics, cancel));
    Ok(Server { addr, scheme, task })
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    opts: ServeOptions,
    app: Router,
    metrics: ConnMetrics,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.rejected.inc();
            tracing::debug!(%peer, "connection refused: api.max_connections are open");
            drop(stream);
            continue;
        };
        let conn = Conn {
            app: app.clone(),
            acceptor: acceptor.clone(),
            timeout: opts.handshake_timeout,
            metrics: metrics.clone(),
            cancel: cancel.clone(),
        };
        tracker.spawn(async move {
            conn.metrics.open.inc();
            conn.run(stream, peer).await;
            conn.metrics.open.dec();
            drop(permit);
        });
    }
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

/// One connection's task.
struct Conn {
    app: Router,
    acceptor: Option<TlsAcceptor>,
    timeout: Duration,
    metrics: ConnMetrics,
    cancel: CancellationToken,
}

impl Conn {
    async fn run(&self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = &self.acceptor else {
            return self.http(stream).await;
        };
        match tokio::time::timeout(self.timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => self.http(tls).await,
            Ok(Err(e)) => {
                self.metrics
                    .handshake_failures
                    .with_label_values(&["error"])
                    .inc();
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
            }
            Err(_) => {
                self.metrics
                    .handshake_failures
                    .with_label_values(&["timeout"])
                    .inc();
                tracing::debug!(%peer, "TLS handshake timed out");
            }
        }
    }

    async fn http<S>(&self, io: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = TowerToHyperService::new(self.app.clone());
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(self.timeout)
            .serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
            }
            _ = self.cancel.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn.as_mut()).await;
            }
        }
    }
}
