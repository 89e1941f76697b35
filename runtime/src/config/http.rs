//! The `[http]` section every node has: where its HTTP server (`/healthz`, `/readyz`,
//! `/metrics` and the node's own routes, see [`crate::health`]) listens.
//!
//! One type for all nodes; only the default port differs, so it is a const parameter:
//! each node names its section `HttpConfig<its port>` and an empty `[http]` table still
//! means "127.0.0.1:<that node's port>".

use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize};

/// HTTP listener settings; `DEFAULT_PORT` is the node's well-known port on 127.0.0.1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpConfig<const DEFAULT_PORT: u16> {
    /// Address to listen on; port 0 picks a free port (the bound address is logged and, for
    /// nodes that print it, written to stdout as `HTTP=http://addr`).
    pub listen: SocketAddr,
}

impl<const DEFAULT_PORT: u16> Default for HttpConfig<DEFAULT_PORT> {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
        }
    }
}

/// The section as written: serde's derive does not handle const generics, so the section is
/// read through this shape and the node's default filled in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    listen: Option<SocketAddr>,
}

impl<'de, const DEFAULT_PORT: u16> Deserialize<'de> for HttpConfig<DEFAULT_PORT> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let section = HttpSection::deserialize(deserializer)?;
        Ok(Self {
            listen: section.listen.unwrap_or(Self::default().listen),
        })
    }
}
