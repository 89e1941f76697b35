//! Ownership of the mock cluster.
//!
//! [`rdkafka::mocking::MockCluster`] wraps a raw pointer and is neither `Send` nor `Sync`, so
//! it lives on one dedicated thread for its whole life. [`ClusterHandle`] sends commands to
//! that thread and awaits the replies; it is cheap to clone and safe to share.
//!
//! The cluster is created by an idle client with `test.mock.num.brokers` (librdkafka's own
//! way), not by `MockCluster::new`: only then can the raw mock handle be had (through
//! `rd_kafka_handle_mock_cluster`) for the one operation the safe API lacks, changing a
//! broker's advertised address ([`ClusterHandle::advertise`]), which the secure front needs
//! so that clients stay on its TLS/SASL listeners.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rdkafka::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::{MockCluster, MockCoordinator};
use rdkafka::producer::{BaseProducer, Producer};
use serde::Serialize;
use tokio::sync::oneshot;

use crate::coordinators::{CoordinatorKind, Coordinators, Placement, RegisterError};
use crate::topics::{self, TopicSpec, TopicSpecError};

/// Errors from operations on the mock cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No broker with this id (ids run from 1 to the broker count).
    #[error("unknown broker id {id}: brokers are numbered 1..={count}")]
    UnknownBroker {
        /// The id asked for.
        id: i32,
        /// Number of brokers in the cluster.
        count: i32,
    },
    /// The topic already exists (created before, or auto-created by a client's metadata
    /// request).
    #[error("topic {0:?} already exists")]
    TopicExists(String),
    /// The topic specification is invalid.
    #[error(transparent)]
    InvalidTopic(#[from] TopicSpecError),
    /// librdkafka reported an error.
    #[error("mock cluster: {0}")]
    Kafka(#[from] KafkaError),
    /// A coordinator key could not be registered.
    #[error(transparent)]
    Coordinator(#[from] RegisterError),
    /// The cluster thread has stopped.
    #[error("mock cluster is stopped")]
    Stopped,
}

/// State of one mock broker as seen by the control API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BrokerState {
    /// Broker id (1-based, as reported in metadata).
    pub id: i32,
    /// Whether the broker accepts connections.
    pub up: bool,
}

type Reply<T> = oneshot::Sender<Result<T, ClusterError>>;

enum Command {
    CreateTopic {
        name: String,
        partitions: i32,
        replication: i32,
        reply: Reply<()>,
    },
    SetUp {
        /// `None` means every broker.
        broker: Option<i32>,
        up: bool,
        reply: Reply<()>,
    },
    ProduceErrors {
        errors: Vec<InjectedError>,
        reply: Reply<()>,
    },
    Advertise {
        broker: i32,
        host: String,
        port: u16,
        reply: Reply<()>,
    },
    /// Registers coordinator keys (placed where the mock hashes them, then kept on live
    /// brokers); replies with every registered key's placement.
    Coordinate {
        kind: CoordinatorKind,
        keys: Vec<String>,
        reply: Reply<Vec<Placement>>,
    },
    Shutdown,
}

struct Shared {
    tx: Mutex<Option<mpsc::Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    topics: Mutex<BTreeMap<String, i32>>,
    brokers: Mutex<Vec<bool>>,
    growth: Arc<crate::front::growth::Growth>,
}

/// Handle to the mock cluster thread.
#[derive(Clone)]
pub struct ClusterHandle {
    bootstrap: Arc<str>,
    broker_count: i32,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHandle")
            .field("bootstrap", &self.bootstrap)
            .field("broker_count", &self.broker_count)
            .finish_non_exhaustive()
    }
}

impl ClusterHandle {
    /// Starts a mock cluster with `broker_count` brokers on its own thread.
    pub fn start(broker_count: i32) -> Result<Self, ClusterError> {
        let (tx, rx) = mpsc::channel::<Command>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, KafkaError>>();
        let thread = std::thread::Builder::new()
            .name("mock-cluster".into())
            .spawn(move || cluster_thread(broker_count, rx, ready_tx))
            .map_err(|_| ClusterError::Stopped)?;
        let bootstrap = ready_rx.recv().map_err(|_| ClusterError::Stopped)??;
        Ok(Self {
            bootstrap: bootstrap.into(),
            broker_count,
            shared: Arc::new(Shared {
                tx: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                topics: Mutex::new(BTreeMap::new()),
                brokers: Mutex::new(vec![true; usize::try_from(broker_count).unwrap_or(0)]),
                growth: Arc::default(),
            }),
        })
    }

    /// The cluster's `bootstrap.servers` list.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Number of brokers.
    pub fn broker_count(&self) -> i32 {
        self.broker_count
    }

    /// Topics created through this handle, with their partition counts (for a growable
    /// topic, those created so far), sorted by name.
    pub fn topics(&self) -> Vec<TopicSpec> {
        lock(&self.shared.topics)
            .iter()
            .map(|(name, &partitions)| TopicSpec {
                name: name.clone(),
                partitions: self
                    .shared
                    .growth
                    .counts(name)
                    .map_or(partitions, |c| c.visible),
            })
            .collect()
    }

    /// Creates a topic clients see with `partitions` partitions and may grow to `max`
    /// through CreatePartitions ([`crate::front::growth`]): the mock holds `max` from the
    /// start and the fronts hide the rest.
    pub async fn create_growable_topic(
        &self,
        name: &str,
        partitions: i32,
        max: i32,
        replication: i32,
    ) -> Result<(), ClusterError> {
        self.create_topic(name, max, replication).await?;
        self.shared.growth.add(name, partitions, max);
        Ok(())
    }

    /// The growable topics ([`crate::front::growth`]), shared with the fronts.
    pub fn growth(&self) -> Arc<crate::front::growth::Growth> {
        self.shared.growth.clone()
    }

    /// The brokers and whether each is up.
    pub fn brokers(&self) -> Vec<BrokerState> {
        lock(&self.shared.brokers)
            .iter()
            .zip(1..)
            .map(|(&up, id)| BrokerState { id, up })
            .collect()
    }

    /// Creates a topic after validating its name and partition count.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication: i32,
    ) -> Result<(), ClusterError> {
        topics::validate_name(name)?;
        topics::validate_partitions(i64::from(partitions))?;
        let name = name.to_owned();
        self.call(|reply| Command::CreateTopic {
            name: name.clone(),
            partitions,
            replication,
            reply,
        })
        .await?;
        lock(&self.shared.topics).insert(name, partitions);
        Ok(())
    }

    /// Takes one broker (`Some(id)`) or all brokers (`None`) down (`up == false`) or back up.
    ///
    /// Down closes the broker's connections and refuses new ones; its data and port are kept.
    /// Registered coordinator keys ([`Self::coordinate`]) on a broker that went down move
    /// to a live broker, and back to it when it comes back.
    pub async fn set_up(&self, broker: Option<i32>, up: bool) -> Result<(), ClusterError> {
        if let Some(id) = broker
            && !(1..=self.broker_count).contains(&id)
        {
            return Err(ClusterError::UnknownBroker {
                id,
                count: self.broker_count,
            });
        }
        self.call(|reply| Command::SetUp { broker, up, reply })
            .await
            .map_err(|e| match (e, broker) {
                (
                    ClusterError::Kafka(KafkaError::MockCluster(RDKafkaErrorCode::UnknownBroker)),
                    Some(id),
                ) => ClusterError::UnknownBroker {
                    id,
                    count: self.broker_count,
                },
                (e, _) => e,
            })?;
        let mut states = lock(&self.shared.brokers);
        match broker {
            None => states.iter_mut().for_each(|s| *s = up),
            Some(id) => {
                if let Some(s) = usize::try_from(id - 1).ok().and_then(|i| states.get_mut(i)) {
                    *s = up;
                }
            }
        }
        Ok(())
    }

    /// Registers group ids or transactional ids whose coordinator the cluster keeps on a
    /// live broker (see [`crate::coordinators`]); `keys` empty only lists. Returns every
    /// registered key with its coordinator.
    pub async fn coordinate(
        &self,
        kind: CoordinatorKind,
        keys: Vec<String>,
    ) -> Result<Vec<Placement>, ClusterError> {
        self.call(|reply| Command::Coordinate { kind, keys, reply })
            .await
    }

    /// Makes the next Produce requests (of any client, one error per request, in order)
    /// fail with `errors`: for tests of a client's error handling.
    pub async fn fail_produce(&self, errors: Vec<InjectedError>) -> Result<(), ClusterError> {
        self.call(|reply| Command::ProduceErrors { errors, reply })
            .await
    }

    /// Makes broker `broker` advertise `host:port` in metadata and coordinator answers
    /// instead of its own listener (it keeps listening there). Used to put the secure front
    /// in front of each broker.
    pub async fn advertise(&self, broker: i32, host: &str, port: u16) -> Result<(), ClusterError> {
        if !(1..=self.broker_count).contains(&broker) {
            return Err(ClusterError::UnknownBroker {
                id: broker,
                count: self.broker_count,
            });
        }
        let host = host.to_owned();
        self.call(|reply| Command::Advertise {
            broker,
            host,
            port,
            reply,
        })
        .await
    }

    /// Stops the cluster thread and destroys the mock cluster (closing its listeners).
    /// Idempotent; later calls on any clone fail with [`ClusterError::Stopped`].
    pub fn shutdown(&self) {
        if let Some(tx) = lock(&self.shared.tx).take() {
            let _ = tx.send(Command::Shutdown);
        }
        if let Some(thread) = lock(&self.shared.thread).take() {
            let _ = thread.join();
        }
    }

    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, ClusterError> {
        let (reply, rx) = oneshot::channel();
        {
            let tx = lock(&self.shared.tx);
            let tx = tx.as_ref().ok_or(ClusterError::Stopped)?;
            tx.send(make(reply)).map_err(|_| ClusterError::Stopped)?;
        }
        rx.await.map_err(|_| ClusterError::Stopped)?
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn cluster_thread(
    broker_count: i32,
    rx: mpsc::Receiver<Command>,
    ready: mpsc::Sender<Result<String, KafkaError>>,
) {
    // The owner of the mock cluster: a producer that never produces. The mock lives as long
    // as it does. librdkafka keeps one cluster connection per client; the owner's must not
    // reach a secure front (which would log a plaintext client every second), so it may
    // only use IPv6 while the brokers listen on 127.0.0.1: it never connects anywhere, and
    // its context drops the resulting resolve errors.
    let owner: Result<BaseProducer<SilentOwner>, KafkaError> = ClientConfig::new()
        .set("test.mock.num.brokers", broker_count.to_string())
        .set("broker.address.family", "v6")
        .set("topic.metadata.refresh.interval.ms", "-1")
        .set("reconnect.backoff.ms", "10000")
        .set("log_level", "0")
        .create_with_context(SilentOwner);
    let owner = match owner {
        Ok(o) => o,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let Some(cluster) = owner.client().mock_cluster() else {
        let _ = ready.send(Err(KafkaError::MockCluster(RDKafkaErrorCode::Fail)));
        return;
    };
    if ready.send(Ok(cluster.bootstrap_servers())).is_err() {
        return;
    }
    let mut coords = Placements {
        table: Coordinators::default(),
        up: vec![true; usize::try_from(broker_count).unwrap_or(0)],
    };
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Command::CreateTopic {
                name,
                partitions,
                replication,
                reply,
            } => {
                let r = cluster
                    .create_topic(&name, partitions, replication)
                    .map_err(|e| match e {
                        KafkaError::MockCluster(RDKafkaErrorCode::TopicAlreadyExists) => {
                            ClusterError::TopicExists(name.clone())
                        }
                        e => ClusterError::Kafka(e),
                    });
                let _ = reply.send(r);
            }
            Command::SetUp { broker, up, reply } => {
                let id = broker.unwrap_or(-1);
                let r = if up {
                    cluster.broker_up(id)
                } else {
                    cluster.broker_down(id)
                };
                let r = r.map_err(ClusterError::from).and_then(|()| {
                    coords.set_up(broker, up);
                    coords.settle(&cluster, up)
                });
                let _ = reply.send(r);
            }
            Command::Coordinate { kind, keys, reply } => {
                let _ = reply.send(coords.register(&cluster, kind, &keys));
            }
            Command::ProduceErrors { errors, reply } => {
                let codes: Vec<_> = errors.iter().map(|e| e.code()).collect();
                cluster.request_errors(rdkafka::types::RDKafkaApiKey::Produce, &codes);
                let _ = reply.send(Ok(()));
            }
            Command::Advertise {
                broker,
                host,
                port,
                reply,
            } => {
                let _ = reply.send(set_advertised(&owner, broker, &host, port));
            }
            Command::Shutdown => break,
        }
    }
    drop(cluster);
    drop(owner);
}

/// The cluster thread's coordinator bookkeeping: the table and which brokers are up.
struct Placements {
    table: Coordinators,
    /// `up[i]`: broker `i + 1`.
    up: Vec<bool>,
}

impl Placements {
    fn set_up(&mut self, broker: Option<i32>, up: bool) {
        match broker {
            None => self.up.iter_mut().for_each(|u| *u = up),
            Some(id) => {
                if let Some(u) = usize::try_from(id - 1)
                    .ok()
                    .and_then(|i| self.up.get_mut(i))
                {
                    *u = up;
                }
            }
        }
    }

    /// Pins new keys where the mock hashes them, then keeps every key on a live broker.
    fn register<C: rdkafka::ClientContext>(
        &mut self,
        cluster: &MockCluster<'_, C>,
        kind: CoordinatorKind,
        keys: &[String],
    ) -> Result<Vec<Placement>, ClusterError> {
        let count = i32::try_from(self.up.len()).unwrap_or(i32::MAX);
        for key in self.table.new_keys(kind, keys)? {
            let broker = Coordinators::hashed(&key, count);
            // Pinned explicitly, so that the table and the mock agree whatever its hash.
            cluster.coordinator(mock_key(kind, &key), broker)?;
            self.table.place(kind, key, broker);
        }
        self.settle(cluster, false)?;
        Ok(self.table.list())
    }

    /// Puts every key where it belongs now: back home first if a broker `returned` (see
    /// [`Coordinators::moves_home`]), then off any broker that is down (see
    /// [`Coordinators::moves_for`]).
    fn settle<C: rdkafka::ClientContext>(
        &mut self,
        cluster: &MockCluster<'_, C>,
        returned: bool,
    ) -> Result<(), ClusterError> {
        if returned {
            let home = self.table.moves_home(&self.up);
            self.apply(cluster, home, "coordinator moved back to its home broker")?;
        }
        let off = self.table.moves_for(&self.up);
        self.apply(cluster, off, "coordinator moved to a live broker")
    }

    /// Pins each moved key in the mock and records it, logging `why`.
    fn apply<C: rdkafka::ClientContext>(
        &mut self,
        cluster: &MockCluster<'_, C>,
        moves: Vec<Placement>,
        why: &str,
    ) -> Result<(), ClusterError> {
        for m in moves {
            cluster.coordinator(mock_key(m.kind, &m.key), m.broker)?;
            tracing::info!(kind = m.kind.as_str(), key = %m.key, broker = m.broker, "{why}");
            self.table.place(m.kind, m.key, m.broker);
        }
        Ok(())
    }
}

fn mock_key(kind: CoordinatorKind, key: &str) -> MockCoordinator {
    match kind {
        CoordinatorKind::Group => MockCoordinator::Group(key.to_string()),
        CoordinatorKind::Transaction => MockCoordinator::Transaction(key.to_string()),
    }
}

/// An error the control API can make the mock answer Produce requests with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InjectedError {
    /// `OUT_OF_ORDER_SEQUENCE_NUMBER`: on the first request in flight, a fatal idempotence
    /// error in librdkafka.
    OutOfOrderSequenceNumber,
    /// `NOT_LEADER_FOR_PARTITION`: retriable.
    NotLeaderForPartition,
    /// `TOPIC_AUTHORIZATION_FAILED`: an ACL refusal.
    TopicAuthorizationFailed,
    /// The broker drops the connection.
    Transport,
}

impl InjectedError {
    fn code(self) -> rdkafka::bindings::rd_kafka_resp_err_t {
        use rdkafka::bindings::rd_kafka_resp_err_t as E;
        match self {
            InjectedError::OutOfOrderSequenceNumber => {
                E::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER
            }
            InjectedError::NotLeaderForPartition => E::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
            InjectedError::TopicAuthorizationFailed => {
                E::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED
            }
            InjectedError::Transport => E::RD_KAFKA_RESP_ERR__TRANSPORT,
        }
    }
}

/// The mock owner's context: its own (never wanted) connection errors are not news.
struct SilentOwner;

impl rdkafka::ClientContext for SilentOwner {
    fn log(&self, _: rdkafka::config::RDKafkaLogLevel, _: &str, _: &str) {}
    fn error(&self, _: KafkaError, _: &str) {}
}

impl rdkafka::producer::ProducerContext for SilentOwner {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// `rd_kafka_mock_broker_set_host_port`, which rust-rdkafka does not wrap.
#[allow(unsafe_code)]
fn set_advertised(
    owner: &BaseProducer<SilentOwner>,
    broker: i32,
    host: &str,
    port: u16,
) -> Result<(), ClusterError> {
    let host = std::ffi::CString::new(host).map_err(|_| {
        ClusterError::Kafka(KafkaError::MockCluster(RDKafkaErrorCode::InvalidArgument))
    })?;
    // SAFETY: `owner` is a live client handle for the whole call (borrowed), so
    // `native_ptr` is valid; the mock cluster it returns is owned by that client and lives
    // until the client is destroyed, which cannot happen while it is borrowed. A null
    // handle (no mock cluster) is checked before use. `set_host_port` copies `host` under
    // the cluster's lock and keeps no pointer to it; `host` outlives the call.
    unsafe {
        let mock = rdkafka::bindings::rd_kafka_handle_mock_cluster(owner.client().native_ptr());
        if mock.is_null() {
            return Err(ClusterError::Stopped);
        }
        rdkafka::bindings::rd_kafka_mock_broker_set_host_port(
            mock,
            broker,
            host.as_ptr(),
            i32::from(port),
        );
    }
    Ok(())
}
