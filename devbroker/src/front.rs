//! The secure front: a TLS (rustls) and/or SASL endpoint in front of each mock broker, so
//! that clients can be tested with `security.protocol = ssl | sasl_plaintext | sasl_ssl`
//! against a peer that really speaks it (librdkafka's mock speaks plaintext only).
//!
//! Contract:
//! - One [`Front`] per mock broker, listening on its own port; the broker advertises that
//!   port ([`crate::ClusterHandle::advertise`]), so metadata and coordinator answers keep
//!   clients on the secure listeners. The mock's own ports stay open on loopback (they
//!   are the fronts' upstreams) but advertise the fronts, so a plaintext client that
//!   bootstraps there is sent to the fronts.
//! - TLS: the front terminates TLS with [`panoptes_runtime::tls::server_config`]; with a
//!   client CA, client certificates are required and verified. A failed handshake closes
//!   the connection and is logged with the peer's address.
//! - SASL: the front answers `SaslHandshake` (v1) and `SaslAuthenticate` (v0, v1) itself
//!   with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 against a users file ([`sasl`]), and
//!   rewrites the mock's `ApiVersions` answers so that they list both APIs. Before
//!   authentication succeeds only `ApiVersions` reaches the mock (Kafka answers it
//!   unauthenticated too); any other request closes the connection. A failed
//!   authentication is answered with `SASL_AUTHENTICATION_FAILED` (58) and the connection
//!   is closed. After it, bytes are relayed unchanged in both directions.
//! - Neither TLS nor SASL: a plain relay, used to serve other hosts (a container's
//!   `--listen 0.0.0.0 --advertise-host NAME --front-port P`, see [`crate::cli`]) while the
//!   mock itself only listens on loopback on random ports.
//! - Prompt fetch ([`prompt`], `--prompt-fetch`): the front answers a waiting Fetch as soon
//!   as records are produced through it, as Kafka does, where the mock waits the full
//!   `MaxWaitMs`. With it off, bytes are relayed unchanged.
//! - Growable topics ([`growth`], `--growable`): the front answers `CreatePartitions` and
//!   hides partitions not created yet from `Metadata` answers, on the same rewriting relay.
//! - Frames read by the front are bounded ([`wire::MAX_FRAME`]); the pre-authentication
//!   phase has a deadline ([`AUTH_DEADLINE`]).
//! - Never a production component: it exists so that Panoptes's own Kafka clients can be
//!   tested against TLS and SASL; what it proves and does not is in `docs/security.md`.

pub mod fetch;
pub mod growth;
pub mod prompt;
pub mod sasl;
pub mod scram;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::front::sasl::{Authenticator, Mechanism, Step, Users};
use crate::front::wire::{
    API_SASL_AUTHENTICATE, API_SASL_HANDSHAKE, API_VERSIONS, ApiRange, ERR_ILLEGAL_SASL_STATE,
    ERR_SASL_AUTHENTICATION_FAILED, ERR_UNSUPPORTED_SASL_MECHANISM, ERR_UNSUPPORTED_VERSION,
    WireError, Writer, read_frame, request_header, write_frame,
};

/// How long a client has from TCP accept to a completed TLS handshake and SASL exchange.
pub const AUTH_DEADLINE: Duration = Duration::from_secs(30);

/// What the front adds to the mock's `ApiVersions` answers when SASL is on.
const SASL_APIS: [ApiRange; 2] = [(API_SASL_HANDSHAKE, 1, 1), (API_SASL_AUTHENTICATE, 0, 1)];

/// SASL settings of the fronts.
#[derive(Debug)]
pub struct SaslSettings {
    /// Who may connect.
    pub users: Users,
    /// Mechanisms offered (non-empty).
    pub mechanisms: Vec<Mechanism>,
}

/// What every front of a cluster does.
#[derive(Default)]
pub struct FrontConfig {
    /// Terminate TLS with this acceptor; `None`: plaintext.
    pub tls: Option<TlsAcceptor>,
    /// Authenticate with SASL; `None`: no authentication.
    pub sasl: Option<SaslSettings>,
    /// Answer waiting fetches when records are produced ([`prompt`]).
    pub prompt_fetch: bool,
    /// The cluster's growable topics ([`growth`]); none: no rewrites for them.
    pub growth: Option<Arc<growth::Growth>>,
}

impl FrontConfig {
    /// The `security.protocol` a client must use.
    pub fn protocol(&self) -> &'static str {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
    }
}

impl std::fmt::Debug for FrontConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontConfig")
            .field("protocol", &self.protocol())
            .field("sasl", &self.sasl)
            .field("prompt_fetch", &self.prompt_fetch)
            .field("growth", &self.growth)
            .finish()
    }
}

/// One front: a listener relaying to one mock broker.
pub struct Front {
    /// The address clients connect to (and the broker advertises).
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Front {
    /// Binds `listen` and relays every accepted connection to `upstream` per `config`.
    pub async fn bind(
        listen: SocketAddr,
        upstream: SocketAddr,
        broker: i32,
        config: Arc<FrontConfig>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        // One produce signal per front: a partition's producers and consumers meet at its
        // leader.
        let produced = config
            .prompt_fetch
            .then(|| Arc::new(prompt::Produced::default()));
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((tcp, peer)) => {
                        let config = config.clone();
                        let produced = produced.clone();
                        tokio::spawn(async move {
                            if let Err(e) = serve(tcp, upstream, &config, produced.as_deref()).await
                            {
                                tracing::warn!(broker, %peer, error = %e, "front connection closed");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(broker, error = %e, "front accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        });
        Ok(Self { addr, task })
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why a front connection ended early.
#[derive(Debug, thiserror::Error)]
enum FrontError {
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("broker unreachable: {0}")]
    Upstream(std::io::Error),
    #[error("{0}")]
    Wire(#[from] WireError),
    #[error("SASL: {0}")]
    Sasl(String),
    #[error("no TLS handshake and SASL exchange within {AUTH_DEADLINE:?}")]
    Deadline,
}

async fn serve(
    tcp: TcpStream,
    upstream: SocketAddr,
    config: &FrontConfig,
    produced: Option<&prompt::Produced>,
) -> Result<(), FrontError> {
    let _ = tcp.set_nodelay(true);
    match &config.tls {
        Some(acceptor) => {
            let accept = tokio::time::timeout(AUTH_DEADLINE, acceptor.accept(tcp));
            let tls = accept
                .await
                .map_err(|_| FrontError::Deadline)?
                .map_err(FrontError::Tls)?;
            relay(tls, upstream, config, produced).await
        }
        None => relay(tcp, upstream, config, produced).await,
    }
}

async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    mut client: S,
    upstream: SocketAddr,
    config: &FrontConfig,
    produced: Option<&prompt::Produced>,
) -> Result<(), FrontError> {
    let mut broker = TcpStream::connect(upstream)
        .await
        .map_err(FrontError::Upstream)?;
    let _ = broker.set_nodelay(true);
    if let Some(sasl) = &config.sasl {
        let exchange = authenticate(&mut client, &mut broker, sasl, config.growth.is_some());
        let user = tokio::time::timeout(AUTH_DEADLINE, exchange)
            .await
            .map_err(|_| FrontError::Deadline)??;
        tracing::debug!(user, "SASL authenticated");
    }
    // Either side closing ends the relay; errors here are ordinary disconnects.
    let hooks = prompt::Rewrites {
        produced,
        growth: config.growth.as_deref(),
    };
    if hooks.produced.is_some() || hooks.growth.is_some() {
        let _ = prompt::relay(client, broker, upstream, hooks).await;
    } else {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut broker).await;
    }
    Ok(())
}

/// Runs the SASL exchange; returns the authenticated user, or an error after answering the
/// client where the protocol has an answer.
async fn authenticate<C, B>(
    client: &mut C,
    broker: &mut B,
    sasl: &SaslSettings,
    growth: bool,
) -> Result<String, FrontError>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut auth: Option<(Mechanism, Authenticator<'_>)> = None;
    loop {
        let frame = read_frame(client)
            .await?
            .ok_or_else(|| FrontError::Sasl("client left before authenticating".into()))?;
        let (h, mut body) = request_header(&frame)?;
        match h.api_key {
            API_VERSIONS => {
                write_frame(broker, &frame).await?;
                let answer = read_frame(broker)
                    .await?
                    .ok_or_else(|| FrontError::Sasl("broker closed during ApiVersions".into()))?;
                let mut patched =
                    wire::patch_api_versions(&answer, h.api_version, &SASL_APIS).unwrap_or(answer);
                if growth {
                    patched = prompt::growth_apis(&patched, h.api_version).unwrap_or(patched);
                }
                write_frame(client, &patched).await?;
            }
            API_SASL_HANDSHAKE => {
                let name = body.string("SASL mechanism")?;
                let name = String::from_utf8_lossy(name).into_owned();
                let chosen = Mechanism::from_name(&name).filter(|m| sasl.mechanisms.contains(m));
                let error = match chosen {
                    _ if h.api_version != 1 => ERR_UNSUPPORTED_VERSION,
                    Some(_) => 0,
                    None => ERR_UNSUPPORTED_SASL_MECHANISM,
                };
                let mut w = Writer::response(h.correlation_id)
                    .i16(error)
                    .i32(sasl.mechanisms.len() as i32);
                for m in &sasl.mechanisms {
                    w = w.nullable_string(Some(m.name()));
                }
                write_frame(client, &w.finish()).await?;
                match chosen {
                    Some(m) if error == 0 => auth = Some((m, Authenticator::new(m, &sasl.users))),
                    _ => {
                        return Err(FrontError::Sasl(format!(
                            "mechanism {name:?} (SaslHandshake v{}) refused; offered: {:?}",
                            h.api_version,
                            sasl.mechanisms.iter().map(|m| m.name()).collect::<Vec<_>>()
                        )));
                    }
                }
            }
            API_SASL_AUTHENTICATE => {
                let Some((mechanism, authenticator)) = auth.as_mut() else {
                    let reply =
                        auth_response(h, ERR_ILLEGAL_SASL_STATE, "SaslHandshake first", &[]);
                    write_frame(client, &reply).await?;
                    return Err(FrontError::Sasl(
                        "SaslAuthenticate before SaslHandshake".into(),
                    ));
                };
                if h.api_version > 1 {
                    return Err(FrontError::Sasl(format!(
                        "SaslAuthenticate v{} not offered",
                        h.api_version
                    )));
                }
                let message = body.bytes("SASL auth bytes")?;
                match authenticator.step(message) {
                    Step::Continue(reply) => {
                        write_frame(client, &auth_response(h, 0, "", &reply)).await?;
                    }
                    Step::Done { user, reply } => {
                        write_frame(client, &auth_response(h, 0, "", &reply)).await?;
                        return Ok(user);
                    }
                    Step::Failed(reason) => {
                        let text = format!(
                            "Authentication failed during authentication due to invalid \
                             credentials with SASL mechanism {}",
                            mechanism.name()
                        );
                        let reply = auth_response(h, ERR_SASL_AUTHENTICATION_FAILED, &text, &[]);
                        write_frame(client, &reply).await?;
                        return Err(FrontError::Sasl(format!("authentication failed: {reason}")));
                    }
                }
            }
            other => {
                return Err(FrontError::Sasl(format!(
                    "request with API key {other} before authentication; closing"
                )));
            }
        }
    }
}

/// A `SaslAuthenticate` response (v0/v1): error, message, auth bytes, session lifetime
/// (0: no re-authentication).
fn auth_response(h: wire::RequestHeader, error: i16, message: &str, bytes: &[u8]) -> Vec<u8> {
    let message = (error != 0).then_some(message);
    let w = Writer::response(h.correlation_id)
        .i16(error)
        .nullable_string(message)
        .bytes(bytes);
    if h.api_version >= 1 { w.i64(0) } else { w }.finish()
}

/// Reads the mock's bootstrap list into one address per broker (broker ids in order).
pub fn upstreams(bootstrap: &str) -> Result<Vec<SocketAddr>, std::net::AddrParseError> {
    bootstrap.split(',').map(str::parse).collect()
}
