//! What every piece of the harness uses: where the workspace binaries are, unique names,
//! the listen address that picks a free port, and polling for a condition.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};

/// Listen address that makes a node pick a free port (it prints the bound one).
pub const FREE_PORT: &str = "127.0.0.1:0";

/// Path of a workspace binary built beside the running test.
pub fn bin_path(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Tests run from target/<profile>/deps/, binaries from target/<profile>/.
    let here = exe.parent().expect("exe dir");
    let path = [here.join(name), here.parent().unwrap_or(here).join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| here.join(name));
    assert!(
        path.is_file(),
        "{} not found: build the workspace binaries first (`cargo build --workspace --bins`)",
        path.display()
    );
    path
}

/// A name unique to this test process and call, e.g. for topics.
pub fn unique_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Polls `f` every 100 ms until it returns `Some`, or fails after `timeout`.
pub fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if std::time::Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
