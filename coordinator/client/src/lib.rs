//! The member side of the coordination protocol (design brief, "Coordinator protocol").
//!
//! Ingest and worker nodes link this crate, not the coordinator: it holds what both sides
//! must agree on and nothing else.
//!
//! - [`keys`]: the Redis key names (the reference is `docs/coordination-keys.md`);
//! - [`records`]: the JSON and hash records stored under them;
//! - [`scripts`]: the Lua scripts that make every multi-key change atomic, including the
//!   leader-fenced writes the coordinator makes and the release a member makes;
//! - [`member`]: [`member::MemberAgent`], the thread a node runs to hold its lease, report its
//!   load and learn its assignments (pushed through pub/sub and polled);
//! - [`link`]: [`RedisLink`], how every process opens Redis (TLS, ACL user, password file);
//! - [`acl`]: the least-privilege Redis ACL users of each role, rendered as an ACL file;
//! - [`clock`]: the cluster clock (the Redis server's, estimated NTP-style), the one time
//!   base of the timestamps that cross machines (frame capture time, ages, latencies);
//! - [`models`]: the model repository (versioned, integrity-checked TorchScript models);
//! - [`sealed`]: camera passwords encrypted at rest (AEAD keyring with rotation);
//! - [`driver`]: [`driver::Driver`], the protocol's member side on top of the agent (start
//!   what is granted, stop what is revoked, hand over what moves, fail closed, drain), for
//!   any node that says what running an item means ([`driver::ItemRunner`]).

pub mod acl;
pub mod clock;
pub mod driver;
pub mod keys;
pub mod link;
pub mod member;
pub mod models;
pub mod records;
pub mod scripts;
pub mod sealed;

pub use driver::{Driver, DriverConfig, HandoverOutcome, ItemRunner, Prepared, Report};
pub use link::RedisLink;
pub use member::{Desired, Grant, LeaseFence, MemberAgent, MemberConfig};
pub use records::{AssignRecord, CameraRecord, MemberKind, MemberRecord, RegionRecord};

/// Why a coordination call failed.
#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    /// Redis did not answer or the connection broke: retryable.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// The write was rejected because the writer's leader token is stale (a deposed leader).
    #[error("fenced: this coordinator is no longer the leader")]
    Fenced,
    /// A record in Redis could not be parsed, or a setting is unusable: fatal for that call.
    #[error("invalid: {0}")]
    Invalid(String),
}

impl CoordError {
    /// Whether retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<redis::RedisError> for CoordError {
    fn from(e: redis::RedisError) -> Self {
        if e.to_string().contains("FENCED") {
            Self::Fenced
        } else if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            Self::Unavailable(e.to_string())
        } else {
            Self::Invalid(e.to_string())
        }
    }
}

/// Opens a synchronous connection to a bare URL (no TLS files, no ACL user) with read and
/// write timeouts of `timeout`: tests and development tools. Nodes open their configured
/// link with [`RedisLink::open`] once and connect through it.
pub fn connect(url: &str, timeout: std::time::Duration) -> Result<redis::Connection, CoordError> {
    RedisLink::url(url)?.connect(timeout)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
