//! A real `redis-server` (installed by `scripts/setup.sh`) on a free port, in memory only
//! (`--save '' --appendonly no`), killed when the handle is dropped; plus helpers that write
//! the coordinator's assignment records (key schema: `docs/coordination-keys.md`).

use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::process::ChildProcess;

/// A running `redis-server`.
pub struct RedisServer {
    /// `redis://127.0.0.1:<port>/0`.
    pub url: String,
    /// The port.
    pub port: u16,
    child: ChildProcess,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers `PING`.
    pub fn start() -> Result<Self> {
        let mut last = None;
        // A port picked free can be taken before redis binds it: try a few.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let p = port.to_string();
            let mut child = ChildProcess::spawn(
                "redis",
                Path::new("redis-server"),
                &[
                    "--port",
                    &p,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                &[],
            )
            .context("redis-server not found: run scripts/setup.sh")?;
            let url = format!("redis://127.0.0.1:{port}/0");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while std::time::Instant::now() < deadline && child.is_running() {
                if let Ok(mut c) = connect(&url)
                    && ::redis::cmd("PING").query::<String>(&mut c).is_ok()
                {
                    return Ok(Self { url, port, child });
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            last = Some(child.log_text());
        }
        bail!("redis-server did not start: {}", last.unwrap_or_default())
    }

    /// A fresh synchronous connection (2 s timeouts).
    pub fn connection(&self) -> Result<::redis::Connection> {
        connect(&self.url)
    }

    /// Writes the assignment record of partition `partition` of `cluster`'s frames topic:
    /// `owner` at `epoch` (as the coordinator's grant would, without its fencing).
    pub fn set_assignment(
        &self,
        cluster: &str,
        frames_topic: &str,
        partition: i32,
        owner: &str,
        epoch: u64,
    ) -> Result<()> {
        let mut c = self.connection()?;
        ::redis::cmd("HSET")
            .arg(assignment_key(cluster, frames_topic, partition))
            .arg("owner")
            .arg(owner)
            .arg("epoch")
            .arg(epoch)
            .query::<()>(&mut c)?;
        Ok(())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.is_running()
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }
}

/// `panoptes:assign:<cluster>:<frames topic>:<partition>` (as in
/// `panoptes_coordinator_client::keys::partition_assign`).
pub fn assignment_key(cluster: &str, frames_topic: &str, partition: i32) -> String {
    format!("panoptes:assign:{cluster}:{frames_topic}:{partition}")
}

fn connect(url: &str) -> Result<::redis::Connection> {
    let c = ::redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    c.set_write_timeout(Some(Duration::from_secs(2)))?;
    Ok(c)
}
