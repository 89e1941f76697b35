//! Prompt fetch: the front answers a consumer's waiting Fetch as soon as records are
//! produced, as Kafka does, instead of after the full `MaxWaitMs` as librdkafka's mock does.
//!
//! The mock holds a Fetch that finds no records for its whole `MaxWaitMs` and does not
//! notice records produced meanwhile (`rdkafka_mock_handlers.c`: "This isn't strictly correct
//! since we should cut the wait short"). A consumer asking 50 ms therefore sees each record
//! 0–50 ms late, depending on where it lands in the fetch cycle: the latency sawtooth of
//! docs/benchmarks.md ("Consume rate and the latency sawtooth").
//!
//! Contract (per client connection, after TLS and SASL):
//! - Every request is relayed unchanged except a Fetch (versions [`fetch`] understands) with
//!   `MaxWaitMs > 0`: it goes to the mock with `MaxWaitMs = 0`, so the mock answers at once.
//!   An answer with records or with an error goes to the client. An empty answer is held:
//!   the front re-sends the fetch (`MaxWaitMs = 0`, on a second connection of its own to the
//!   mock) each time a Produce through the same front is answered, and once more when the
//!   client's `MaxWaitMs` has passed, and answers with the first reply that has records, or
//!   with that last one. A consumer fetches a partition from its leader and a producer
//!   writes it to the same leader, so a front's own produces are the ones its fetches wait
//!   for. librdkafka sends full fetches (no fetch sessions), so a re-sent fetch is the same
//!   request.
//! - Responses reach the client in request order (Kafka answers one request of a connection
//!   at a time too, so holding a fetch holds what follows it). A Produce with `acks = 0` has no
//!   response and is not waited for; responses are matched to requests by correlation id.
//! - Produces by clients that bypass the front and versions not understood only lose the
//!   early answer: a held fetch is always answered by its deadline.
//!
//! The same relay carries the growable topics' rewrites ([`super::growth`]) when the cluster
//! has any: `ApiVersions` answers gain `CreatePartitions` (and cap `Metadata` at the versions
//! it rewrites), `Metadata` answers hide partitions not created yet, and a `CreatePartitions`
//! request is answered by the front (an `ApiVersions` request with its correlation id goes to
//! the mock in its place, so the answer keeps its turn). Either feature works without the
//! other.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::fetch::{self, FetchAnswer};
use super::growth::{self, Growth};
use super::wire::{self, API_VERSIONS, WireError, Writer, read_frame, request_header, write_frame};

/// One front's produce signal: a counter bumped after each answered Produce.
#[derive(Debug)]
pub struct Produced(watch::Sender<u64>);

impl Default for Produced {
    fn default() -> Self {
        Self(watch::channel(0).0)
    }
}

impl Produced {
    fn bump(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// What the answering side needs to know about a request sent to the mock.
enum Pending {
    /// Relay the response as it is.
    Plain(i32),
    /// A Produce: relay, then signal.
    Produce(i32),
    /// A Fetch sent with `MaxWaitMs = 0`.
    Fetch(HeldFetch),
    /// ApiVersions (correlation, version): advertise what the growth rewrites add.
    Versions(i32, i16),
    /// Metadata (correlation, version): hide partitions not created yet.
    Metadata(i32, i16),
    /// Answered by the front: send this instead of the mock's answer.
    Replace(i32, Vec<u8>),
}

impl Pending {
    fn correlation(&self) -> i32 {
        match self {
            Pending::Plain(c)
            | Pending::Produce(c)
            | Pending::Versions(c, _)
            | Pending::Metadata(c, _)
            | Pending::Replace(c, _) => *c,
            Pending::Fetch(f) => f.correlation,
        }
    }
}

/// What a rewriting relay does besides relaying: prompt fetches (with the front's produce
/// signal) and growable topics (when the cluster has any).
#[derive(Clone, Copy, Default)]
pub(super) struct Rewrites<'a> {
    /// Prompt fetch: this front's produce signal.
    pub produced: Option<&'a Produced>,
    /// The cluster's growable topics.
    pub growth: Option<&'a Growth>,
}

/// What the fronts add to `ApiVersions` answers for growable topics: `CreatePartitions`, and
/// `Metadata` no higher than the rewrite understands.
pub(super) fn growth_apis(response: &[u8], version: i16) -> Option<Vec<u8>> {
    let (cmin, cmax) = growth::CREATE_PARTITIONS_VERSIONS;
    wire::patch_api_versions_capped(
        response,
        version,
        &[(growth::API_CREATE_PARTITIONS, cmin, cmax)],
        &[(growth::API_METADATA, growth::METADATA_VERSIONS.1)],
    )
}

/// A Fetch whose empty answer is held until records are produced or its deadline.
struct HeldFetch {
    correlation: i32,
    version: i16,
    /// The request as sent (`MaxWaitMs = 0`), to re-send.
    request: Vec<u8>,
    deadline: Instant,
    /// Subscribed when the request was relayed: a produce answered since then counts.
    produced: watch::Receiver<u64>,
}

/// Relays one client connection to `broker` with prompt fetches (`upstream` is the
/// broker's address, for the second connection).
pub(super) async fn relay<S: AsyncRead + AsyncWrite + Unpin>(
    client: S,
    broker: TcpStream,
    upstream: SocketAddr,
    hooks: Rewrites<'_>,
) -> Result<(), WireError> {
    let (mut client_rx, mut client_tx) = tokio::io::split(client);
    let (mut broker_rx, mut broker_tx) = broker.into_split();
    let (pending_tx, mut pending_rx) = mpsc::unbounded_channel();
    let requests = async {
        while let Some(frame) = read_frame(&mut client_rx).await? {
            let (pending, frame) = classify(frame, hooks);
            if let Some(p) = pending {
                // Registered before the request leaves, so its response finds it.
                let _ = pending_tx.send(p);
            }
            write_frame(&mut broker_tx, &frame).await?;
        }
        Ok::<(), WireError>(())
    };
    let responses = async {
        let mut queue: VecDeque<Pending> = VecDeque::new();
        let mut side: Option<TcpStream> = None;
        while let Some(frame) = read_frame(&mut broker_rx).await? {
            while let Ok(p) = pending_rx.try_recv() {
                queue.push_back(p);
            }
            let pending = fetch::response_correlation(&frame).and_then(|c| matching(&mut queue, c));
            let frame = match pending {
                Some(Pending::Fetch(held)) => settle(frame, held, upstream, &mut side).await,
                Some(Pending::Produce(_)) => {
                    if let Some(p) = hooks.produced {
                        p.bump();
                    }
                    frame
                }
                Some(Pending::Versions(_, v)) => growth_apis(&frame, v).unwrap_or(frame),
                Some(Pending::Metadata(_, v)) => hooks
                    .growth
                    .and_then(|g| g.rewrite_metadata(&frame, v))
                    .unwrap_or(frame),
                Some(Pending::Replace(_, answer)) => answer,
                Some(Pending::Plain(_)) | None => frame,
            };
            write_frame(&mut client_tx, &frame).await?;
        }
        Ok::<(), WireError>(())
    };
    // Either side ending ends the connection (as the plain relay does).
    tokio::select! {
        r = requests => r,
        r = responses => r,
    }
}

/// What to remember about `frame` and what to send the mock instead of it.
fn classify(frame: Vec<u8>, hooks: Rewrites<'_>) -> (Option<Pending>, Vec<u8>) {
    let Ok((h, _)) = request_header(&frame) else {
        return (None, frame);
    };
    if let Some(g) = hooks.growth {
        let c = h.correlation_id;
        match h.api_key {
            API_VERSIONS => return (Some(Pending::Versions(c, h.api_version)), frame),
            growth::API_METADATA => return (Some(Pending::Metadata(c, h.api_version)), frame),
            growth::API_CREATE_PARTITIONS => {
                if let Some(answer) = g.answer_create_partitions(&frame) {
                    // ApiVersions v0: any broker answers it at once, with this correlation id.
                    let stand_in = Writer::empty()
                        .i16(API_VERSIONS)
                        .i16(0)
                        .i32(c)
                        .nullable_string(Some("devbroker"))
                        .finish();
                    return (Some(Pending::Replace(c, answer)), stand_in);
                }
            }
            _ => {}
        }
    }
    let Some(produced) = hooks.produced else {
        return (Some(Pending::Plain(h.correlation_id)), frame);
    };
    if h.api_key == fetch::API_FETCH
        && let Some((at, wait)) = fetch::max_wait(&frame)
        && wait > 0
    {
        let request = fetch::with_max_wait(&frame, at, 0);
        let held = HeldFetch {
            correlation: h.correlation_id,
            version: h.api_version,
            request: request.clone(),
            deadline: Instant::now() + Duration::from_millis(wait as u64),
            produced: produced.0.subscribe(),
        };
        return (Some(Pending::Fetch(held)), request);
    }
    if h.api_key == fetch::API_PRODUCE {
        if fetch::produce_acks(&frame) == Some(0) {
            // No response will come; the records are (about to be) in the log.
            produced.bump();
            return (None, frame);
        }
        return (Some(Pending::Produce(h.correlation_id)), frame);
    }
    (Some(Pending::Plain(h.correlation_id)), frame)
}

/// The pending request answered by a response with `correlation` (dropping requests that
/// got no response, e.g. an unrecognised `acks = 0` produce).
fn matching(queue: &mut VecDeque<Pending>, correlation: i32) -> Option<Pending> {
    let at = queue.iter().position(|p| p.correlation() == correlation)?;
    queue.drain(..at);
    queue.pop_front()
}

/// The answer for a fetch sent with `MaxWaitMs = 0`: `first` if it has records (or an
/// error), else the first re-sent reply with records, or the one at the deadline.
async fn settle(
    first: Vec<u8>,
    mut held: HeldFetch,
    upstream: SocketAddr,
    side: &mut Option<TcpStream>,
) -> Vec<u8> {
    let mut answer = first;
    loop {
        if fetch::fetch_answer(&answer, held.version) != FetchAnswer::Empty
            || Instant::now() >= held.deadline
        {
            return answer;
        }
        match tokio::time::timeout_at(held.deadline, held.produced.changed()).await {
            Ok(Ok(())) => {
                held.produced.borrow_and_update();
            }
            // The front is going away: wait out the deadline like the mock would.
            Ok(Err(_)) => tokio::time::sleep_until(held.deadline).await,
            Err(_) => {}
        }
        match refetch(&held.request, upstream, side).await {
            Ok(a) => answer = a,
            Err(e) => {
                tracing::debug!(error = %e, "prompt fetch: re-sent fetch failed");
                *side = None;
                return answer;
            }
        }
    }
}

/// Sends `request` on the second connection (opened on first use) and reads its answer.
async fn refetch(
    request: &[u8],
    upstream: SocketAddr,
    side: &mut Option<TcpStream>,
) -> Result<Vec<u8>, WireError> {
    if side.is_none() {
        let s = TcpStream::connect(upstream).await?;
        let _ = s.set_nodelay(true);
        *side = Some(s);
    }
    let s = side
        .as_mut()
        .ok_or(WireError::Malformed("no fetch connection"))?;
    write_frame(s, request).await?;
    read_frame(s)
        .await?
        .ok_or(WireError::Malformed("broker closed the fetch connection"))
}
