//! One cancellation tree per process, cancelled on SIGINT or SIGTERM.
//!
//! Components take child tokens: intake stops first (its token is cancelled), then each
//! component drains within its own deadline and flushes its producers before returning.

use tokio_util::sync::CancellationToken;

/// Returns the root token of the process and spawns the task that cancels it on a signal.
/// Must be called inside a tokio runtime.
pub fn root_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
