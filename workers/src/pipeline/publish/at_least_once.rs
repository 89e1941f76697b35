//! At-least-once publishing ([`DeliveryMode::AtLeastOnce`]): one idempotent
//! [`PolledProducer`] per lane (a poll thread that never busy-waits), shared by the partitions'
//! publisher threads.
//!
//! Every send is registered in the partition's [`CommitTracker`] first; the delivery callback
//! ([`AckContext`]) marks it acknowledged, and the consumer thread commits the offset after
//! the longest acknowledged prefix. A crash re-processes the unacknowledged tail: duplicates
//! are possible, loss is not.
//!
//! [`DeliveryMode::AtLeastOnce`]: crate::config::DeliveryMode::AtLeastOnce
//! [`CommitTracker`]: crate::pipeline::partition::CommitTracker

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};
use panoptes_runtime::kafka_link::KafkaLink;
use panoptes_runtime::kafka_poll::PolledProducer;
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryResult, ProducerContext};

use crate::config::KafkaConfig;
use crate::error::PublishError;
use crate::metrics::WorkerMetrics;
use crate::pipeline::consume::LinkContext;
use crate::pipeline::partition::PartitionState;
use crate::pipeline::publish::record::{base_config, encode_traced, send_queued};
use crate::pipeline::publish::sequencer::Sequencer;
use crate::pipeline::work::Outcome;

/// Per-message state carried to the delivery callback.
pub struct Ack {
    state: Arc<PartitionState>,
    idx: u64,
    status: &'static str,
}

/// Producer context marking acknowledgements in the commit trackers; client errors go to
/// the node's [`KafkaLink`] like the consumer's.
pub struct AckContext {
    metrics: WorkerMetrics,
    link: KafkaLink,
}

impl ClientContext for AckContext {
    fn error(&self, error: KafkaError, reason: &str) {
        LinkContext::report(&self.link, &error, reason);
    }
}

impl ProducerContext for AckContext {
    type DeliveryOpaque = Box<Ack>;

    fn delivery(&self, result: &DeliveryResult<'_>, ack: Self::DeliveryOpaque) {
        // The frame no longer occupies the worker either way; only the commit waits.
        ack.state.done(1);
        match result {
            Ok(_) => {
                ack.state.tracker.lock().ack(ack.idx);
                self.metrics.records.with_label_values(&[ack.status]).inc();
            }
            Err((e, _)) => {
                // Not acknowledged: the offset never gets committed past this record. The
                // run is marked failed, so it is restarted from the committed offsets (the
                // lane's watchdog, or coordinator mode's controller) and the record made
                // again: nothing is lost, and the partition does not stall.
                tracing::error!(error = %e, partition = ack.state.partition, "delivery failed: the partition run restarts");
                if !ack.state.aborted() {
                    ack.state
                        .failed
                        .store(true, std::sync::atomic::Ordering::Release);
                }
                self.metrics
                    .publish_errors
                    .with_label_values(&["delivery"])
                    .inc();
            }
        }
    }
}

/// A lane's at-least-once producer.
pub type AloProducer = PolledProducer<AckContext>;

/// Creates the at-least-once producer; its client errors go to `link`.
pub fn alo_producer(
    cfg: &KafkaConfig,
    worker_id: &str,
    metrics: WorkerMetrics,
    link: KafkaLink,
) -> Result<AloProducer, PublishError> {
    Ok(base_config(cfg, worker_id)?.create_with_context(AckContext { metrics, link })?)
}

/// One partition's at-least-once publisher loop; returns when every sender is gone.
pub fn run_alo(
    producer: &AloProducer,
    cfg: &KafkaConfig,
    state: Arc<PartitionState>,
    rx: Receiver<Outcome>,
    metrics: WorkerMetrics,
) -> Result<(), PublishError> {
    let mut seq = Sequencer::default();
    loop {
        if state.aborted() {
            return Ok(());
        }
        let outcome = match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(o) if o.pos.instance == state.instance => o,
            Ok(_) | Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        for mut o in seq.push(outcome) {
            let (encoded, span) = encode_traced(cfg, &mut o, &metrics)?;
            let _log = span.log_span(&o.trace).entered();
            state.tracker.lock().push(o.pos.idx, o.pos.offset);
            let ack = Box::new(Ack {
                state: state.clone(),
                idx: o.pos.idx,
                status: encoded.status,
            });
            #[expect(clippy::result_large_err, reason = "rdkafka hands the record back")]
            let send = |rec| producer.send(rec);
            let sent = send_queued(&encoded, ack, send, std::thread::sleep);
            span.end(sent.as_ref().err().map(|e| e.to_string()).as_deref());
            sent?;
        }
    }
}
