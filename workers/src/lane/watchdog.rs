//! The lane's watchdog: a thread per lane that keeps a broker outage from wedging a
//! partition for good, in every mode.
//!
//! Every 250 ms it looks at the lane's runs: one whose librdkafka transaction call hangs
//! past its own timeout ([`publish::exactly_once::STUCK_CALL`]) is marked failed (the
//! thread is left to librdkafka, which offers no way to cancel a call). Without a
//! controller (static and Redis sources) it restarts failed runs itself, from the committed
//! offsets at their epoch, retrying every second until they start, and replaces an
//! at-least-once producer that librdkafka failed fatally; coordinator mode's controller
//! restarts failed runs there. The lane's readiness check is false, naming the partitions,
//! while a run is restarting or waiting to start again. The thread holds the lane weakly
//! and ends with it or its shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use panoptes_runtime::kafka_link::KafkaErrorKind;
use rdkafka::producer::Producer;

use super::{Lane, LaneCore};
use crate::config::{AssignmentSource, WorkerConfig};
use crate::error::WorkerError;
use crate::pipeline::publish;

/// How often the watchdog looks at the lane's partition runs.
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// How long a run that could not be started again waits before the next try.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

impl Lane {
    /// Wraps `core` and starts its watchdog.
    pub(super) fn watched(core: LaneCore) -> Result<Self, WorkerError> {
        let core = Arc::new(core);
        let weak = Arc::downgrade(&core);
        let stop = core.consumer_stop.clone();
        std::thread::Builder::new()
            .name(format!("watchdog-{}", core.cluster))
            .spawn(move || {
                while !stop.is_cancelled() {
                    std::thread::sleep(WATCH_EVERY);
                    match weak.upgrade() {
                        Some(core) if !stop.is_cancelled() => core.upkeep(),
                        _ => return,
                    }
                }
            })?;
        Ok(Self { core })
    }
}

impl LaneCore {
    /// One watchdog pass (see the module documentation).
    fn upkeep(&self) {
        for p in self.stuck_commits(publish::exactly_once::STUCK_CALL) {
            let newly = self
                .parts
                .lock()
                .get(&p)
                .filter(|r| !r.state.failed.swap(true, Ordering::AcqRel))
                .map(|r| r.state.current_call());
            if let Some(call) = newly {
                tracing::error!(cluster = %self.cluster, partition = p, call, "a transaction call hangs past its timeout: restarting the partition with a fresh producer");
            }
        }
        let failed = self.failed();
        if self.ctx.config.assignment.source != AssignmentSource::Coordinator {
            self.replace_fatal_alo();
            for p in &failed {
                let epoch = self.parts.lock().get(p).map(|r| r.state.epoch);
                if let Some(epoch) = epoch {
                    self.ctx.metrics.partition_restarts.inc();
                    self.abort_partition(*p);
                    self.restarts.lock().insert(*p, (epoch, Instant::now()));
                }
            }
            self.start_due();
        }
        let mut broken: Vec<String> = failed
            .iter()
            .map(|p| format!("partition {p} restarting"))
            .collect();
        broken.extend(
            self.restarts
                .lock()
                .keys()
                .map(|p| format!("partition {p} waiting to start again")),
        );
        let check = readiness_check(&self.ctx.config, &self.cluster);
        if !broken.is_empty() {
            self.unhealthy.store(true, Ordering::Release);
            self.ctx.readiness.set(&check, false, broken.join(", "));
        } else if self.unhealthy.swap(false, Ordering::AcqRel) {
            self.ctx
                .readiness
                .set(&check, true, "every partition run recovered");
        }
    }

    /// Starts the runs whose restart is due; one that fails waits [`RESTART_BACKOFF`].
    fn start_due(&self) {
        let due: Vec<(i32, u64)> = self
            .restarts
            .lock()
            .iter()
            .filter(|(_, (_, at))| *at <= Instant::now())
            .map(|(&p, &(epoch, _))| (p, epoch))
            .collect();
        for (p, epoch) in due {
            match self.start_partition(p, epoch) {
                Ok(()) => {
                    self.restarts.lock().remove(&p);
                    tracing::info!(cluster = %self.cluster, partition = p, epoch, "partition restarted from the committed offsets");
                }
                Err(e) => {
                    tracing::warn!(cluster = %self.cluster, partition = p, error = %e, "partition could not start again: retrying");
                    self.restarts
                        .lock()
                        .insert(p, (epoch, Instant::now() + RESTART_BACKOFF));
                }
            }
        }
    }

    /// At-least-once: a producer librdkafka failed fatally (fatal idempotence) can send
    /// nothing more. It is replaced, and every run restarted from the committed offsets (the
    /// records it held were never acknowledged). Counted and flipped in `/readyz` through
    /// the node's `KafkaLink` until the replacement is in place.
    fn replace_fatal_alo(&self) {
        let Some(old) = self.alo.lock().clone() else {
            return;
        };
        let Some((code, reason)) = old.client().fatal_error() else {
            return;
        };
        let link = &self.ctx.kafka_link;
        if link.blocking() != Some(KafkaErrorKind::Fatal) {
            link.fatal(&format!("at-least-once producer: {code:?}: {reason}"));
        }
        let fresh = match publish::alo_producer(
            &self.kafka,
            &self.ctx.config.worker_id,
            self.ctx.metrics.clone(),
            link.clone(),
        ) {
            Ok(p) => Arc::new(p),
            Err(e) => {
                tracing::error!(error = %e, "cannot replace the at-least-once producer");
                return;
            }
        };
        *self.alo.lock() = Some(fresh);
        let runs: Vec<(i32, u64)> = self
            .parts
            .lock()
            .values()
            .map(|r| (r.state.partition, r.state.epoch))
            .collect();
        for (p, epoch) in runs {
            self.ctx.metrics.partition_restarts.inc();
            self.abort_partition(p);
            self.restarts.lock().insert(p, (epoch, Instant::now()));
        }
        link.recovered();
        tracing::warn!(cluster = %self.cluster, "at-least-once producer replaced after a fatal error");
    }
}

/// Name of a lane's readiness check: `partitions` in the worker's own region,
/// `partitions:<cluster>` elsewhere.
pub(super) fn readiness_check(config: &WorkerConfig, cluster: &str) -> String {
    if cluster == config.region {
        "partitions".into()
    } else {
        format!("partitions:{cluster}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_checks_are_per_cluster() {
        let c = WorkerConfig {
            region: "eu".into(),
            ..WorkerConfig::default()
        };
        assert_eq!(readiness_check(&c, "eu"), "partitions");
        assert_eq!(readiness_check(&c, "us"), "partitions:us");
    }
}
