//! A real `redis-server` (installed by `scripts/setup.sh`) on a free port, in memory only
//! (`--save '' --appendonly no`) unless persistence is turned on for a restart, killed when
//! the handle is dropped; plus helpers that write
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
    persist_dir: Option<std::path::PathBuf>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers `PING`.
    pub fn start() -> Result<Self> {
        let mut last = None;
        // A port picked free can be taken before redis binds it: try a few.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let p = port.to_string();
            let args = server_args(&p, None);
            let mut child = ChildProcess::spawn("redis", Path::new("redis-server"), &args, &[])
                .context("redis-server not found: run scripts/setup.sh")?;
            let url = format!("redis://127.0.0.1:{port}/0");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            if answers_ping(&mut child, &url, deadline, Duration::from_millis(50)) {
                return Ok(Self {
                    url,
                    port,
                    child,
                    persist_dir: None,
                });
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

    /// Turns on append-only persistence at run time (`CONFIG SET`): files in `dir`, fsync on
    /// every write (`appendfsync always`, so an acknowledged write survives a `kill -9`).
    /// Waits (≤ 10 s) until the initial AOF rewrite is done. [`RedisServer::restart`] keeps
    /// these settings.
    pub fn enable_persistence(&mut self, dir: &Path) -> Result<()> {
        let mut c = self.connection()?;
        for (k, v) in [
            ("dir", dir.to_string_lossy().to_string()),
            ("appendfsync", "always".into()),
            ("appendonly", "yes".into()),
        ] {
            ::redis::cmd("CONFIG")
                .arg("SET")
                .arg(k)
                .arg(&v)
                .query::<()>(&mut c)
                .with_context(|| format!("CONFIG SET {k} {v}"))?;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let info: String = ::redis::cmd("INFO").arg("persistence").query(&mut c)?;
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}:")))
                    .map(|v| v.trim().to_string())
            };
            if field("aof_enabled").as_deref() == Some("1")
                && field("aof_rewrite_in_progress").as_deref() == Some("0")
                && field("aof_rewrite_scheduled").as_deref() == Some("0")
            {
                break;
            }
            if std::time::Instant::now() > deadline {
                bail!("redis did not finish its AOF rewrite: {info}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.persist_dir = Some(dir.to_path_buf());
        Ok(())
    }

    /// Kills the server (SIGKILL: no shutdown save) and waits until it has exited.
    pub fn kill(&mut self) -> Result<()> {
        self.child.signal("KILL")?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.child.is_running() {
            if std::time::Instant::now() > deadline {
                bail!("redis-server did not exit after SIGKILL");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Starts a new `redis-server` on the same port (after [`RedisServer::kill`]; a running
    /// one is killed first), with the persistence settings of
    /// [`RedisServer::enable_persistence`] if they were made (it then loads its AOF), and
    /// waits until it answers `PING`.
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_running() {
            self.kill()?;
        }
        let p = self.port.to_string();
        let dir = self
            .persist_dir
            .as_ref()
            .map(|d| d.to_string_lossy().to_string());
        let args = server_args(&p, dir.as_deref());
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        // The old socket can linger for a moment: retry until the deadline.
        while std::time::Instant::now() < deadline {
            let mut child = ChildProcess::spawn("redis", Path::new("redis-server"), &args, &[])?;
            if answers_ping(&mut child, &self.url, deadline, Duration::from_millis(20)) {
                self.child = child;
                return Ok(());
            }
            last = child.log_text();
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("redis-server did not restart on port {}: {last}", self.port)
    }
}

/// `panoptes:assign:<cluster>:<frames topic>:<partition>` (as in
/// `panoptes_coordinator_client::keys::partition_assign`).
pub fn assignment_key(cluster: &str, frames_topic: &str, partition: i32) -> String {
    format!("panoptes:assign:{cluster}:{frames_topic}:{partition}")
}

/// `redis-server` arguments: port `port` on 127.0.0.1, no RDB snapshots, append-only
/// persistence into `persist_dir` (fsync on every write) or none.
fn server_args<'a>(port: &'a str, persist_dir: Option<&'a str>) -> Vec<&'a str> {
    let mut args = vec![
        "--port",
        port,
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        // `CONFIG SET dir` from local clients (for `enable_persistence`).
        "--enable-protected-configs",
        "local",
    ];
    match persist_dir {
        Some(d) => args.extend(["--dir", d, "--appendonly", "yes", "--appendfsync", "always"]),
        None => args.extend(["--appendonly", "no"]),
    }
    args
}

/// Polls every `every` until the server at `url` answers `PING` (true), it exits or
/// `deadline` passes (false).
fn answers_ping(
    child: &mut ChildProcess,
    url: &str,
    deadline: std::time::Instant,
    every: Duration,
) -> bool {
    while std::time::Instant::now() < deadline && child.is_running() {
        if let Ok(mut c) = connect(url)
            && ::redis::cmd("PING").query::<String>(&mut c).is_ok()
        {
            return true;
        }
        std::thread::sleep(every);
    }
    false
}

fn connect(url: &str) -> Result<::redis::Connection> {
    let c = ::redis::Client::open(url)?.get_connection_with_timeout(Duration::from_secs(2))?;
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    c.set_write_timeout(Some(Duration::from_secs(2)))?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restart_keeps_persisted_writes() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let mut server = RedisServer::start()?;
        server.enable_persistence(dir.path())?;
        ::redis::cmd("SET")
            .arg("k")
            .arg("v")
            .query::<()>(&mut server.connection()?)?;
        server.kill()?;
        server.restart()?;
        let v: String = ::redis::cmd("GET")
            .arg("k")
            .query(&mut server.connection()?)?;
        assert_eq!(v, "v");
        Ok(())
    }
}
