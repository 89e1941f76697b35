//! Child processes that die with the test: stdout lines are collected for handshake lines
//! (`KEY=value`), stderr goes to a log file that the test can read afterwards.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

static OWN_PROCESS_GROUPS: AtomicBool = AtomicBool::new(false);

/// From now on (`true`), every [`ChildProcess`] this process spawns leads a process group of
/// its own. A terminal's Ctrl-C goes to its whole foreground process group; with this set it
/// reaches only this process, which can then stop its children in order (ingest before
/// workers before the broker) instead of having them all stop at once. Used by
/// `panoptes-loadtest demo`; tests leave it off.
pub fn spawn_in_own_process_groups(on: bool) {
    OWN_PROCESS_GROUPS.store(on, Ordering::SeqCst);
}

/// A running child process, killed (SIGKILL) when dropped unless stopped before.
pub struct ChildProcess {
    name: String,
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    log: tempfile::NamedTempFile,
}

impl ChildProcess {
    /// Spawns `program` with `args` and extra `env`; stdin is a pipe held open until drop.
    pub fn spawn(name: &str, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let log = tempfile::Builder::new()
            .prefix(&format!("panoptes-{name}-"))
            .suffix(".log")
            .tempfile()?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log.reopen()?));
        for (k, v) in env {
            cmd.env(k, v);
        }
        if OWN_PROCESS_GROUPS.load(Ordering::SeqCst) {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", program.display()))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            name: name.to_string(),
            child,
            lines: rx,
            seen: Vec::new(),
            log,
        })
    }

    /// Waits for a stdout line starting with `prefix` and returns the rest of it.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        if let Some(l) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return Ok(l[prefix.len()..].to_string());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) => {
                    let hit = line.strip_prefix(prefix).map(str::to_string);
                    self.seen.push(line);
                    if let Some(v) = hit {
                        return Ok(v);
                    }
                }
                Err(_) => bail!(
                    "{}: no `{prefix}` line within {timeout:?}; stderr:\n{}",
                    self.name,
                    tail(&self.log_text(), 40)
                ),
            }
            if Instant::now() >= deadline {
                bail!("{}: no `{prefix}` line within {timeout:?}", self.name);
            }
        }
    }

    /// Everything the process wrote to stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Path of the stderr log.
    pub fn log_path(&self) -> PathBuf {
        self.log.path().to_path_buf()
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status if it has exited (`Child::try_wait`).
    pub fn try_wait(&mut self) -> std::io::Result<Option<std::process::ExitStatus>> {
        self.child.try_wait()
    }

    /// Closes its stdin (a process started with `--exit-on-stdin-eof` then stops).
    pub fn close_stdin(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal (`kill -<sig>`).
    pub fn signal(&self, sig: &str) -> Result<()> {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()?;
        if !status.success() {
            bail!("kill -{sig} {} failed", self.pid());
        }
        Ok(())
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit; returns whether it exited successfully.
    pub fn terminate(&mut self, timeout: Duration) -> Result<bool> {
        self.signal("TERM")?;
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.success());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Ok(false)
    }

    /// Resident memory in KiB (from /proc), if running.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where Debian's `faketime` package puts libfaketime (`scripts/setup.sh` installs it).
pub const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The environment that runs a process with its wall clock (`CLOCK_REALTIME`) shifted by
/// `offset` (libfaketime syntax: `"+5s"`, `"-5s"`), like a machine whose clock is off. Pass it
/// as a node's extra `env`. Fails when libfaketime or a C compiler is missing.
///
/// Three settings keep every other clock and timed wait true, as on such a machine
/// (measured with Debian's libfaketime 0.9.10):
/// - `FAKETIME_DONT_FAKE_MONOTONIC=1`: Rust puts `Instant`-based deadlines into futexes, so a
///   faked monotonic clock would stretch or hang its timed waits;
/// - `FAKETIME_FORCE_MONOTONIC_FIX=0`: otherwise every `pthread_cond_timedwait` on a
///   monotonic condition variable returns at once (fixed upstream after 0.9.10);
/// - [`CND_SHIM_C`], preloaded before libfaketime: libfaketime does not hook C11
///   `cnd_timedwait`, which librdkafka uses on glibc, so its waits ran 5 s long (clock ahead)
///   or returned at once (behind): transactions of a worker 5 s ahead took 5 s per flush.
pub fn faketime_env(offset: &str) -> Result<Vec<(&'static str, String)>> {
    if !Path::new(LIBFAKETIME).exists() {
        bail!("{LIBFAKETIME} is missing: install Debian's faketime package (scripts/setup.sh)");
    }
    let shim = cnd_shim()?;
    Ok(vec![
        ("LD_PRELOAD", format!("{}:{LIBFAKETIME}", shim.display())),
        ("FAKETIME", offset.to_string()),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1".to_string()),
        ("FAKETIME_FORCE_MONOTONIC_FIX", "0".to_string()),
    ])
}

/// C11 `cnd_timedwait` routed through `pthread_cond_timedwait`, which libfaketime hooks
/// (glibc implements one with the other on the same types, so the casts are exact).
pub const CND_SHIM_C: &str = r#"#include <errno.h>
#include <pthread.h>
#include <threads.h>
int cnd_timedwait(cnd_t *restrict c, mtx_t *restrict m, const struct timespec *restrict ts) {
  int r = pthread_cond_timedwait((pthread_cond_t *)c, (pthread_mutex_t *)m, ts);
  return r == 0 ? thrd_success : r == ETIMEDOUT ? thrd_timedout : thrd_error;
}
"#;

/// [`CND_SHIM_C`] built once per machine (`cc`, from `build-essential`) into the temporary
/// folder; concurrent builders each write their own file and rename it into place.
fn cnd_shim() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join("panoptes-faketime-cnd-shim-v1");
    let lib = dir.join("libcnd_shim.so");
    if lib.exists() {
        return Ok(lib);
    }
    std::fs::create_dir_all(&dir)?;
    let own = format!("{}", std::process::id());
    let src = dir.join(format!("cnd_shim-{own}.c"));
    let tmp = dir.join(format!("libcnd_shim-{own}.so"));
    std::fs::write(&src, CND_SHIM_C)?;
    let status = Command::new("cc")
        .args(["-shared", "-fPIC", "-O1", "-o"])
        .arg(&tmp)
        .arg(&src)
        .status()
        .context("running cc (build-essential) for the faketime shim")?;
    let _ = std::fs::remove_file(&src);
    if !status.success() {
        bail!("cc could not build {}", tmp.display());
    }
    std::fs::rename(&tmp, &lib)?;
    Ok(lib)
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
