//! How a stage's fatal failure reaches the node: typed, at once, first one wins.
//!
//! Every thread that can fail for good (a lane's inference thread, a partition's publisher,
//! coordinator mode's controller) holds a clone of the node's [`FailureReporter`]. Reporting
//! stores the [`StageFailure`] in one shared slot (the first one is kept: later ones are
//! usually consequences) and cancels the node's failure token, which `node::run` awaits next
//! to the shutdown signal, so the node starts its ordered shutdown at once and returns the
//! failure as [`crate::error::WorkerError::Stage`]. A thread that could die without saying
//! why (a panic) holds a [`FailureGuard`], which reports [`StageError::Ended`] when dropped
//! armed.

use std::sync::Arc;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::error::{Stage, StageError, StageFailure};

/// Clonable handle to report a stage's fatal failure.
#[derive(Clone, Debug)]
pub struct FailureReporter {
    slot: Arc<Mutex<Option<StageFailure>>>,
    token: CancellationToken,
}

impl FailureReporter {
    /// A reporter that cancels `token` on the first failure.
    pub fn new(token: CancellationToken) -> Self {
        Self {
            slot: Arc::default(),
            token,
        }
    }

    /// Reports a failure: logged, kept if it is the first, and the token is cancelled.
    pub fn report(&self, failure: StageFailure) {
        tracing::error!(stage = %failure.stage, error = %failure.error, "a stage failed");
        self.slot.lock().get_or_insert(failure);
        self.token.cancel();
    }

    /// Shorthand for [`Self::report`].
    pub fn stage_failed(&self, stage: Stage, error: impl Into<StageError>) {
        self.report(StageFailure {
            stage,
            error: error.into(),
        });
    }

    /// Whether a failure was reported.
    pub fn has_failed(&self) -> bool {
        self.slot.lock().is_some()
    }

    /// Takes the first failure reported, if any.
    pub fn take(&self) -> Option<StageFailure> {
        self.slot.lock().take()
    }

    /// A guard for the thread of `stage`: it reports [`StageError::Ended`] when dropped
    /// without [`FailureGuard::disarm`] (the thread panicked).
    pub fn guard(&self, stage: Stage) -> FailureGuard {
        FailureGuard {
            reporter: self.clone(),
            stage: Some(stage),
        }
    }
}

/// Reports its stage as ended unless disarmed; see [`FailureReporter::guard`].
#[derive(Debug)]
pub struct FailureGuard {
    reporter: FailureReporter,
    stage: Option<Stage>,
}

impl FailureGuard {
    /// The thread ends normally (or reported its own failure): nothing to report.
    pub fn disarm(mut self) {
        self.stage = None;
    }

    /// Reports `error` for the guarded stage, instead of [`StageError::Ended`].
    pub fn fail(mut self, error: impl Into<StageError>) {
        if let Some(stage) = self.stage.take() {
            self.reporter.stage_failed(stage, error);
        }
    }
}

impl Drop for FailureGuard {
    fn drop(&mut self) {
        if let Some(stage) = self.stage.take() {
            self.reporter.stage_failed(stage, StageError::Ended);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ModelError;

    #[test]
    fn the_first_failure_is_kept_and_the_token_fires() {
        let token = CancellationToken::new();
        let r = FailureReporter::new(token.clone());
        assert!(!r.has_failed());
        r.guard(Stage::Controller).disarm();
        assert!(!token.is_cancelled(), "a disarmed guard reports nothing");
        let inference = Stage::Inference {
            cluster: "local".into(),
        };
        r.guard(inference.clone()).fail(ModelError::Inference {
            model: "m".into(),
            message: "out of memory".into(),
        });
        assert!(token.is_cancelled());
        drop(r.guard(Stage::Controller));
        let first = r.take().expect("a failure");
        assert_eq!(first.stage, inference);
        assert!(matches!(first.error, StageError::Inference(_)));
        assert!(first.to_string().contains("out of memory"), "{first}");
    }

    #[test]
    fn a_guard_dropped_armed_reports_the_thread_ended() {
        let r = FailureReporter::new(CancellationToken::new());
        let handle = {
            let guard = r.guard(Stage::Controller);
            std::thread::spawn(move || {
                let _guard = guard;
                panic!("boom");
            })
        };
        assert!(handle.join().is_err());
        let f = r.take().expect("reported");
        assert_eq!(f.stage, Stage::Controller);
        assert!(matches!(f.error, StageError::Ended));
    }
}
