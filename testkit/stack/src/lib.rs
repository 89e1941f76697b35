//! The parts of the one test harness (`panoptes-testkit`) that start workers, in a crate of
//! their own (a tool crate: only `[dev-dependencies]` and other tools use it).
//!
//! - [`worker`]: `panoptes-worker` nodes started from the typed `WorkerConfig`;
//! - [`stack`]: [`Stack`], a whole deployment (Redis, a broker per region, the simulator,
//!   coordinators, ingest nodes, workers, all in coordinator mode), for the cluster tests, the
//!   failover benchmark and the demo, load and chaos runs.
//!
//! Why apart from `panoptes-testkit`: both link `panoptes-workers`, hence libtorch, which only
//! loads in binaries that carry its rpath (`workers/build/libtorch_rpath.rs`). Cargo unifies a
//! crate's features across a workspace build, so a testkit feature would have put libtorch
//! into every test binary of the workspace (the camera simulator's and the coordinator's
//! included); a separate crate reaches only the tests that depend on it (`workers`,
//! `loadtest`).

pub mod stack;
pub mod worker;

pub use stack::{Stack, StackCamera, StackSpec};
