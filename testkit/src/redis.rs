//! A real `redis-server` (installed by `scripts/setup.sh`) on a free port, in memory only
//! (`--save '' --appendonly no`) unless persistence is turned on for a restart, killed when
//! the handle is dropped; plus helpers that write
//! the coordinator's assignment records (key schema: `docs/coordination-keys.md`).
//!
//! [`RedisServer::start_secured`] starts it the way production runs it: TLS only (no plain
//! port; certificates from a [`TestPki`], client certificates required with `mutual_tls`)
//! and ACL users rendered by `panoptes_coordinator_client::acl` (the `default` user off; an
//! `admin` user for the harness itself). [`RedisServer::client_config`] gives the
//! [`RedisClientConfig`] a node of a given user would be configured with. Every connection
//! is opened through `panoptes_coordinator_client::RedisLink`, as the nodes do.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use panoptes_coordinator_client::RedisLink;
use panoptes_coordinator_client::acl::{AclUser, Role, password_hash, render};
use panoptes_runtime::config::RedisClientConfig;

use crate::process::ChildProcess;
use crate::tls::TestPki;

/// The harness's own user on a secured server (full access).
pub const ADMIN_USER: &str = "admin";

/// The camera keyring test coordinators and ingest nodes get (`$PANOPTES_CAMERA_KEYS`, see
/// `panoptes_coordinator_client::sealed`): a fixed, public test key, so camera passwords are
/// sealed in every test deployment as in production.
pub const TEST_CAMERA_KEYS: &str = "test1:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";

/// TLS and ACL set-up of a secured server.
pub struct Security {
    /// The certificates (server, client, wrong CA).
    pub pki: TestPki,
    dir: tempfile::TempDir,
    mutual: bool,
    /// User name → password file.
    passwords: BTreeMap<String, PathBuf>,
}

/// A running `redis-server`.
pub struct RedisServer {
    /// `redis://127.0.0.1:<port>/0`, or `rediss://127.0.0.1:<port>/0` when secured.
    pub url: String,
    /// The port.
    pub port: u16,
    child: ChildProcess,
    persist_dir: Option<std::path::PathBuf>,
    security: Option<Security>,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers `PING`.
    pub fn start() -> Result<Self> {
        Self::launch(None)
    }

    /// Starts a TLS-only `redis-server` with ACL users: `users` (name and role; each gets a
    /// random password in a file) plus [`ADMIN_USER`]. With `mutual_tls`, clients must
    /// present a certificate signed by the test CA.
    pub fn start_secured(users: &[(&str, Role)], mutual_tls: bool) -> Result<Self> {
        let pki = TestPki::generate()?;
        let dir = tempfile::tempdir().context("folder for the ACL file")?;
        let mut passwords = BTreeMap::new();
        let mut acl = Vec::new();
        let admin = (ADMIN_USER, Role::Admin);
        for (name, role) in users.iter().chain(std::iter::once(&admin)) {
            let password = format!("{:032x}", rand_u128());
            let file = dir.path().join(format!("{name}.password"));
            std::fs::write(&file, format!("{password}\n"))?;
            passwords.insert(name.to_string(), file);
            acl.push(AclUser {
                name: name.to_string(),
                role: role.clone(),
                password_sha256: password_hash(&password),
            });
        }
        let text = render(&acl)?;
        std::fs::write(dir.path().join("users.acl"), text)?;
        Self::launch(Some(Security {
            pki,
            dir,
            mutual: mutual_tls,
            passwords,
        }))
    }

    fn launch(security: Option<Security>) -> Result<Self> {
        let mut last = None;
        let scheme = if security.is_some() {
            "rediss"
        } else {
            "redis"
        };
        // A port picked free can be taken before redis binds it: try a few.
        for _ in 0..3 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let url = format!("{scheme}://127.0.0.1:{port}/0");
            let args = server_args(port, security.as_ref(), None);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut child = ChildProcess::spawn("redis", Path::new("redis-server"), &args, &[])
                .context("redis-server not found: run scripts/setup.sh")?;
            let admin = admin_config(&url, security.as_ref());
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            if answers_ping(&mut child, &admin, deadline, Duration::from_millis(50)) {
                return Ok(Self {
                    url,
                    port,
                    child,
                    persist_dir: None,
                    security,
                });
            }
            last = Some(child.log_text());
        }
        bail!("redis-server did not start: {}", last.unwrap_or_default())
    }

    /// The TLS and ACL set-up, when secured.
    pub fn security(&self) -> Option<&Security> {
        self.security.as_ref()
    }

    /// What a node authenticating as `user` is configured with: the URL, the client TLS
    /// files (with the client certificate when the server requires one) and the user's
    /// password file. On a server that is not secured: the bare URL.
    pub fn client_config(&self, user: &str) -> RedisClientConfig {
        client_config(&self.url, self.security.as_ref(), user)
    }

    /// The harness's own configuration (the bare URL, or [`ADMIN_USER`] when secured).
    pub fn admin_config(&self) -> RedisClientConfig {
        admin_config(&self.url, self.security.as_ref())
    }

    /// A fresh synchronous connection (2 s timeouts), as the admin user when secured.
    pub fn connection(&self) -> Result<::redis::Connection> {
        connect(&self.admin_config())
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

    /// SET + PUBLISH of `group`'s rollout record, as the coordinator's operator API writes it
    /// (without its compare-and-set): workers following the group pick it up at once.
    pub fn write_rollout(
        &self,
        group: &str,
        record: &panoptes_schemas::model::ModelRollout,
    ) -> Result<()> {
        use panoptes_coordinator_client::keys;
        let mut c = self.connection()?;
        ::redis::cmd("SET")
            .arg(keys::rollout(group))
            .arg(record.to_json())
            .query::<()>(&mut c)?;
        ::redis::cmd("PUBLISH")
            .arg(keys::rollout_notify(group))
            .arg(record.generation)
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
        let args = server_args(
            self.port,
            self.security.as_ref(),
            self.persist_dir.as_deref(),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let admin = self.admin_config();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        // The old socket can linger for a moment: retry until the deadline.
        while std::time::Instant::now() < deadline {
            let mut child = ChildProcess::spawn("redis", Path::new("redis-server"), &args, &[])?;
            if answers_ping(&mut child, &admin, deadline, Duration::from_millis(20)) {
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

fn client_config(url: &str, security: Option<&Security>, user: &str) -> RedisClientConfig {
    let Some(sec) = security else {
        return RedisClientConfig::from(url);
    };
    RedisClientConfig {
        redis_url: url.to_string(),
        redis_tls: if sec.mutual {
            sec.pki.client_mutual()
        } else {
            sec.pki.client()
        },
        redis_username: Some(user.to_string()),
        redis_password_file: sec.passwords.get(user).cloned(),
    }
}

fn admin_config(url: &str, security: Option<&Security>) -> RedisClientConfig {
    client_config(url, security, ADMIN_USER)
}

/// `redis-server` arguments: `port` on 127.0.0.1 (the TLS port only, when secured, with the
/// ACL file), no RDB snapshots, append-only persistence into `persist_dir` (fsync on every
/// write) or none.
fn server_args(port: u16, security: Option<&Security>, persist_dir: Option<&Path>) -> Vec<String> {
    let port = port.to_string();
    let mut args: Vec<String> = match security {
        None => vec!["--port".into(), port],
        Some(sec) => {
            let p = |name: &str| sec.pki.path(name).to_string_lossy().to_string();
            let auth = if sec.mutual { "yes" } else { "no" };
            vec![
                "--port".into(),
                "0".into(),
                "--tls-port".into(),
                port,
                "--tls-cert-file".into(),
                p("server.pem"),
                "--tls-key-file".into(),
                p("server.key"),
                "--tls-ca-cert-file".into(),
                p("ca.pem"),
                "--tls-auth-clients".into(),
                auth.into(),
                "--aclfile".into(),
                sec.dir
                    .path()
                    .join("users.acl")
                    .to_string_lossy()
                    .to_string(),
            ]
        }
    };
    args.extend(
        [
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            // `CONFIG SET dir` from local clients (for `enable_persistence`).
            "--enable-protected-configs",
            "local",
        ]
        .map(String::from),
    );
    match persist_dir {
        Some(d) => {
            let d = d.to_string_lossy().to_string();
            args.extend(["--dir".into(), d]);
            args.extend(["--appendonly", "yes", "--appendfsync", "always"].map(String::from));
        }
        None => args.extend(["--appendonly", "no"].map(String::from)),
    }
    args
}

/// Polls every `every` until the server answers `PING` (true), it exits or `deadline`
/// passes (false).
fn answers_ping(
    child: &mut ChildProcess,
    config: &RedisClientConfig,
    deadline: std::time::Instant,
    every: Duration,
) -> bool {
    while std::time::Instant::now() < deadline && child.is_running() {
        if let Ok(mut c) = connect(config)
            && ::redis::cmd("PING").query::<String>(&mut c).is_ok()
        {
            return true;
        }
        std::thread::sleep(every);
    }
    false
}

fn connect(config: &RedisClientConfig) -> Result<::redis::Connection> {
    Ok(RedisLink::open(config)?.connect(Duration::from_secs(2))?)
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    // Two std RandomState hashers (randomly keyed per process and instance) are plenty for a
    // throw-away test password.
    let mut v = 0u128;
    for _ in 0..2 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(v);
        v = (v << 64) | u128::from(h.finish());
    }
    v
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
