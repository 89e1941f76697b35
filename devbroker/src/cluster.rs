//! Ownership of the mock cluster.
//!
//! [`rdkafka::mocking::MockCluster`] wraps a raw pointer and is neither `Send` nor `Sync`, so
//! it lives on one dedicated thread for its whole life. [`ClusterHandle`] sends commands to
//! that thread and awaits the replies; it is cheap to clone and safe to share.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::mocking::MockCluster;
use serde::Serialize;
use tokio::sync::oneshot;

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
    Shutdown,
}

struct Shared {
    tx: Mutex<Option<mpsc::Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    topics: Mutex<BTreeMap<String, i32>>,
    brokers: Mutex<Vec<bool>>,
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

    /// Topics created through this handle, with their partition counts, sorted by name.
    pub fn topics(&self) -> Vec<TopicSpec> {
        lock(&self.shared.topics)
            .iter()
            .map(|(name, &partitions)| TopicSpec {
                name: name.clone(),
                partitions,
            })
            .collect()
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
    let cluster = match MockCluster::new(broker_count) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if ready.send(Ok(cluster.bootstrap_servers())).is_err() {
        return;
    }
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
                let _ = reply.send(r.map_err(ClusterError::from));
            }
            Command::Shutdown => break,
        }
    }
    drop(cluster);
}
