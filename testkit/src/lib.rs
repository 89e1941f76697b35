//! Test harness shared by the integration tests, benchmarks and load runs of every Panoptes
//! crate (a tool crate: no product crate depends on it outside `[dev-dependencies]`).
//!
//! Everything here starts *real* components as child processes, on free ports, and kills them
//! when the handle is dropped ([`ChildProcess`]):
//!
//! - [`DevBroker`]: the development Kafka broker (`panoptes-devbroker`), with [`Topics`]
//!   unique per test so tests run in parallel;
//! - [`CamSim`]: the camera simulator (`panoptes-camsim`);
//! - [`RedisServer`]: a `redis-server`;
//! - [`Node`]: a Panoptes node started from its **typed** configuration, serialized to TOML
//!   (feature `ingest`: module `ingest` with `IngestConfig`; feature `coordinator`:
//!   `coordinator` with `CoordinatorConfig`; workers: `panoptes_testkit_stack::worker`);
//! - [`kafka`]: frames written straight into a topic ([`kafka::FrameProducer`]) and frames,
//!   detection records and committed offsets read back;
//! - [`wait_until`] and, with feature `checker`, `settle`: waiting for a condition, and for
//!   the checker's accounting to come to rest;
//! - `panoptes_testkit_stack::Stack` (crate `testkit/stack`): a whole deployment (Redis, a
//!   broker per region, the simulator, coordinators, ingest nodes, workers, all in coordinator
//!   mode). It and the worker's config live apart because they link libtorch (see that crate).
//!
//! Smaller pieces: [`basics`] (binary paths, unique names, free ports, `wait_until`), [`http`]
//! (GET/POST helpers and metric parsing), [`otlp`] (a real OTLP trace receiver, HTTP and gRPC), [`props`] (proptest strategies: hostile config
//! files), [`sys`] (process CPU and memory readings),
//! [`fixtures`] (test data shared across crates), [`process`] (the child-process handle, and
//! `faketime_env` to start a node with a skewed wall clock),
//! [`tls`] (a throw-away PKI for real TLS handshakes).
//!
//! Binaries are looked up next to the test executable ([`bin_path`]); they exist when the
//! tests run through `cargo test --workspace` / `cargo nextest run --workspace`. A test starts
//! a stack with `Stack::start(StackSpec::single_region(cameras, partitions))`, then adds
//! members with `start_ingest`/`start_worker` and waits with `wait_settled`.

pub mod basics;
pub mod broker;
pub mod camsim;
#[cfg(feature = "coordinator")]
pub mod coordinator;
pub mod fixtures;
pub mod http;
#[cfg(feature = "ingest")]
pub mod ingest;
pub mod kafka;
pub mod node;
pub mod otlp;
pub mod process;
pub mod props;
pub mod redis;
#[cfg(feature = "checker")]
pub mod settle;
pub mod sys;
pub mod tls;

pub use basics::{FREE_PORT, bin_path, unique_name, wait_until};
pub use broker::{BrokerSecurity, DevBroker, Topics};
pub use camsim::CamSim;
#[cfg(feature = "coordinator")]
pub use coordinator::Coordinator;
pub use http::{get_text, metric_value, post_json};
pub use node::Node;
pub use process::ChildProcess;
pub use redis::RedisServer;
