//! Exactly-once publishing ([`DeliveryMode::ExactlyOnce`]): each partition thread owns a
//! transactional producer (`transactional.id = panoptes-worker.<frames topic>.<partition>`).
//!
//! Records and the input offset (`send_offsets_to_transaction` with the consumer's group
//! metadata) go in one transaction, committed every `commit_interval`. Before each commit
//! the thread checks the assignment epoch; a superseded epoch aborts the transaction and
//! releases the partition, and an assignment source that does not answer aborts it too
//! (fail closed) and stops the worker. A check that went stale before the commit itself (the
//! process was paused, or the broker was slow, for [`RECHECK_AFTER`] or more after it) is
//! made again between sending the offsets and committing: a worker thawed after losing its
//! partition must not land the transaction it was in the middle of. Only a pause inside the
//! commit call itself is left to the broker's fencing of the transactional id. The plain
//! commit that mirrors the offset after each transaction (for brokers that do not store
//! transactional offsets) is fenced the same way: only while the epoch is current.
//!
//! A broker outage never wedges the thread for good. Every librdkafka transaction call is
//! bounded ([`CALL_TIMEOUT`]) and marks its start in the partition state, so a call that
//! hangs past its own timeout (librdkafka was seen blocking inside
//! `send_offsets_to_transaction` after the coordinator's broker came back) is noticed by
//! the lane's watchdog ([`STUCK_CALL`]) and the run restarted with a fresh producer. A
//! commit step that fails with a retriable error (a timeout while a broker is away) is
//! retried, the transaction kept open, until [`COMMIT_DEADLINE`]: aborting would throw
//! away records the development broker has already shown to readers, and on Kafka the
//! retry is what librdkafka asks for. An error that requires an abort, a fatal one (fatal
//! idempotence, a fenced producer: reported to the node's [`KafkaLink`], `/readyz` false
//! until a fresh producer is initialised) or the deadline ends the run; the lane restarts
//! it from the committed offsets on a fresh producer.
//!
//! [`DeliveryMode::ExactlyOnce`]: crate::config::DeliveryMode::ExactlyOnce

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use panoptes_runtime::kafka_link::{KafkaErrorKind, KafkaLink};
use panoptes_runtime::kafka_poll::flush_base;
use rdkafka::consumer::{CommitMode, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::assignment::Assignment;
use crate::config::KafkaConfig;
use crate::error::PublishError;
use crate::metrics::WorkerMetrics;
use crate::pipeline::partition::PartitionState;
use crate::pipeline::publish::record::{base_config, encode_traced, send_queued};
use crate::pipeline::publish::sequencer::Sequencer;
use crate::pipeline::work::Outcome;

/// The transactional id of a partition's producer.
pub fn transactional_id(frames_topic: &str, partition: i32) -> String {
    format!("panoptes-worker.{frames_topic}.{partition}")
}

/// Everything an exactly-once partition thread needs.
pub struct EosPartition {
    /// Kafka settings.
    pub cfg: KafkaConfig,
    /// This worker (client id).
    pub worker_id: String,
    /// Partition state shared with the consumer.
    pub state: Arc<PartitionState>,
    /// The consumer's group metadata, for `send_offsets_to_transaction`.
    pub group: ConsumerGroupMetadata,
    /// The frames consumer: after each transaction commits, the same offset is also
    /// committed the plain way. Redundant on Kafka (the transaction stored it already); it
    /// is what makes a restart resume on brokers whose `TxnOffsetCommit` does not store
    /// offsets, such as librdkafka's mock cluster (whose handler is a stub). Fenced by an
    /// epoch check of its own (`EosPartition::mirror_offsets`).
    pub consumer: Arc<crate::pipeline::consume::FramesConsumer>,
    /// Assignment (epoch check before each commit).
    pub assignment: Arc<dyn Assignment>,
    /// Epoch the records were produced under.
    pub epoch: u64,
    /// Transaction length.
    pub commit_interval: Duration,
    /// Metrics.
    pub metrics: WorkerMetrics,
    /// The node's Kafka link: fatal producer errors flip `/readyz` there.
    pub link: KafkaLink,
}

/// Bound of one librdkafka transaction call (init, send offsets, commit, abort).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// A call still running this long after it began hangs past its own timeout: the lane's
/// watchdog restarts the run with a fresh producer.
pub const STUCK_CALL: Duration = Duration::from_secs(8);
/// How long the steps of one commit are retried after retriable errors (a broker away)
/// before the run is given up; well inside `transaction.timeout.ms` (60 s).
pub const COMMIT_DEADLINE: Duration = Duration::from_secs(40);

/// How old the epoch check may be when the transaction is committed before it is made again.
/// A healthy round of sending the offsets takes milliseconds; anything longer means the
/// answer may be out of date (a paused process, a stalled broker).
pub const RECHECK_AFTER: Duration = Duration::from_millis(100);

/// The transaction being filled.
struct OpenTxn {
    began: Instant,
    records: usize,
    last_offset: i64,
    statuses: BTreeMap<&'static str, u64>,
}

/// How a commit attempt ended, when it did not fail.
enum Committed {
    /// Committed (or nothing was due): go on.
    Yes,
    /// The epoch was superseded: aborted, partition released, the run ends.
    Released,
}

impl EosPartition {
    /// Creates the transactional producer and initialises its id (fencing older instances
    /// on a real broker).
    ///
    /// A broker connection is made first (metadata requests for the detections topic,
    /// which the producer needs anyway): `init_transactions` on a producer with no broker
    /// up finds none to ask for its transaction coordinator ("No brokers available for
    /// Transactions") and retries on librdkafka's fixed 500 ms timer, which was most of a
    /// partition's start and a quarter of a takeover (docs/benchmarks.md, "Worker failover
    /// at 64 partitions per worker").
    pub fn producer(&self) -> Result<BaseProducer, PublishError> {
        let tid = transactional_id(&self.cfg.frames_topic, self.state.partition);
        let mut cc = base_config(&self.cfg, &self.worker_id)?;
        cc.set("transactional.id", &tid)
            .set("transaction.timeout.ms", "60000");
        let t = Instant::now();
        let producer: BaseProducer = cc.create()?;
        let created = t.elapsed();
        // Twice: the first answer comes from a bootstrap broker, which librdkafka then
        // decommissions in favour of the brokers the metadata names; the second connects
        // one of those. Errors (broker away) are left to `init_transactions` to report.
        let deadline = Instant::now() + CALL_TIMEOUT;
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            let _ = producer
                .client()
                .fetch_metadata(Some(&self.cfg.detections_topic), left);
        }
        let connected = t.elapsed();
        producer.init_transactions(CALL_TIMEOUT * 2)?;
        tracing::info!(
            partition = self.state.partition,
            create_ms = created.as_millis() as u64,
            metadata_ms = (connected - created).as_millis() as u64,
            init_ms = (t.elapsed() - connected).as_millis() as u64,
            "transactional producer ready"
        );
        if self.link.blocking() == Some(KafkaErrorKind::Fatal) {
            // A fresh producer is in place of the one that failed fatally.
            self.link.recovered();
        }
        Ok(producer)
    }

    /// The partition's loop; returns when every sender is gone (after committing what is
    /// open) or after releasing the partition.
    pub fn run(&self, producer: &BaseProducer, rx: Receiver<Outcome>) -> Result<(), PublishError> {
        let r = self.run_loop(producer, rx);
        if r.is_err() {
            self.note_fatal(producer);
        }
        r
    }

    /// A fatal producer error (fatal idempotence, fenced) goes to the node's link: counted,
    /// `/readyz` false until a fresh producer is initialised ([`Self::producer`]).
    fn note_fatal(&self, producer: &BaseProducer) {
        if let Some((code, reason)) = producer.client().fatal_error() {
            self.link.fatal(&format!(
                "partition {} transactional producer: {code:?}: {reason}",
                self.state.partition
            ));
        }
    }

    fn run_loop(&self, producer: &BaseProducer, rx: Receiver<Outcome>) -> Result<(), PublishError> {
        let mut seq = Sequencer::default();
        let mut open: Option<OpenTxn> = None;
        let started = Instant::now();
        let mut first = true;
        loop {
            if self.state.aborted() {
                // Taken away: nothing more is committed for this run.
                if open.is_some() {
                    self.count_abort("revoked");
                    self.abort(producer)?;
                }
                tracing::info!(
                    partition = self.state.partition,
                    epoch = self.epoch,
                    "partition stopped"
                );
                return Ok(());
            }
            let (received, closed) = self.receive(&rx, open.as_ref());
            for o in received.map(|o| seq.push(o)).unwrap_or_default() {
                self.add(producer, &mut open, o)?;
            }
            let due = open
                .as_ref()
                .is_some_and(|t| t.began.elapsed() >= self.commit_interval);
            if let Some(txn) = open.take_if(|_| (due || closed) && !self.state.aborted()) {
                let (began, t) = (txn.began, Instant::now());
                if let Committed::Released = self.commit(producer, txn)? {
                    return Ok(());
                }
                if std::mem::take(&mut first) {
                    // A takeover's last step: what it waited for, what committing took.
                    tracing::info!(
                        partition = self.state.partition,
                        first_record_ms = (began - started).as_millis() as u64,
                        commit_ms = t.elapsed().as_millis() as u64,
                        "first transaction committed"
                    );
                }
            }
            if closed && open.is_none() {
                return Ok(());
            }
        }
    }

    /// Waits for the next outcome of this run, at most until the open transaction is due
    /// (and 100 ms). Returns it (if any) and whether the channel is closed.
    fn receive(&self, rx: &Receiver<Outcome>, open: Option<&OpenTxn>) -> (Option<Outcome>, bool) {
        let wait = open
            .map(|t| (t.began + self.commit_interval).saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_millis(100))
            .min(Duration::from_millis(100));
        match rx.recv_timeout(wait) {
            Ok(o) if o.pos.instance != self.state.instance => (None, false),
            Ok(o) => (Some(o), false),
            Err(RecvTimeoutError::Timeout) => (None, false),
            Err(RecvTimeoutError::Disconnected) => (None, true),
        }
    }

    /// Adds one outcome to the open transaction (beginning one if none is open).
    fn add(
        &self,
        producer: &BaseProducer,
        open: &mut Option<OpenTxn>,
        mut o: Outcome,
    ) -> Result<(), PublishError> {
        if open.is_none() {
            producer.begin_transaction()?;
        }
        let txn = open.get_or_insert_with(|| OpenTxn {
            began: Instant::now(),
            records: 0,
            last_offset: -1,
            statuses: BTreeMap::new(),
        });
        let (encoded, span) = encode_traced(&self.cfg, &mut o, &self.metrics)?;
        let _log = span.log_span(&o.trace).entered();
        #[expect(clippy::result_large_err, reason = "rdkafka hands the record back")]
        let send = |rec| producer.send(rec);
        send_queued(&encoded, (), send, |d| {
            // Serve reports, then sleep: poll(d) would spin through its last millisecond.
            producer.poll(Duration::ZERO);
            std::thread::sleep(d);
        })?;
        span.end(None);
        producer.poll(Duration::ZERO);
        // Handed to the producer (bounded by its own queue): the frame is done here.
        self.state.done(1);
        txn.records += 1;
        txn.last_offset = o.pos.offset;
        *txn.statuses.entry(encoded.status).or_default() += 1;
        Ok(())
    }

    /// Checks the assignment, then commits the transaction with its input offset.
    fn commit(&self, producer: &BaseProducer, txn: OpenTxn) -> Result<Committed, PublishError> {
        let p = self.state.partition;
        let checked = Instant::now();
        if !self.epoch_current(producer)? {
            return self.release(producer);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.cfg.frames_topic,
            p,
            Offset::Offset(txn.last_offset + 1),
        )?;
        match self.commit_offsets(producer, &tpl, checked) {
            Ok(true) => {}
            Ok(false) => return self.release(producer),
            // Already aborted and counted by the re-check (fail closed).
            Err(e @ PublishError::Assignment(_)) => return Err(e),
            Err(e) => {
                self.count_abort("commit_failed");
                let _ = self.abort(producer);
                return Err(e);
            }
        }
        for (status, count) in txn.statuses {
            self.metrics
                .records
                .with_label_values(&[status])
                .inc_by(count);
        }
        tracing::debug!(
            partition = p,
            next_offset = txn.last_offset + 1,
            records = txn.records,
            "transaction committed"
        );
        self.mirror_offsets(&tpl);
        Ok(Committed::Yes)
    }

    /// Mirrors the committed transaction's offset into the group with a plain commit.
    ///
    /// Kafka stores the offsets sent inside the transaction, so there this is redundant; the
    /// development broker (librdkafka's mock) does not, and without the mirror a restarted
    /// worker would start over. A plain commit is not fenced by the transaction, so it is
    /// fenced here like the transaction itself: only while this run's epoch is still current,
    /// checked again now (the commit may have taken long). A worker that lost the partition
    /// meanwhile can therefore not move the group's offset behind its successor's.
    fn mirror_offsets(&self, tpl: &TopicPartitionList) {
        let p = self.state.partition;
        match self.assignment.check(p, self.epoch) {
            Ok(true) => {
                if let Err(e) = self.consumer.commit(tpl, CommitMode::Async) {
                    tracing::warn!(error = %e, partition = p, "plain offset commit failed");
                }
            }
            Ok(false) => {
                tracing::info!(
                    partition = p,
                    epoch = self.epoch,
                    "epoch superseded after the commit: offsets not mirrored"
                );
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "assignment check failed: offsets not mirrored");
            }
        }
    }

    /// Counts an aborted transaction under `reason`.
    fn count_abort(&self, reason: &str) {
        self.metrics.aborted.with_label_values(&[reason]).inc();
    }

    /// Asks the assignment source whether this run's epoch is still current. Fail closed: an
    /// unanswered check aborts the transaction and is an error.
    fn epoch_current(&self, producer: &BaseProducer) -> Result<bool, PublishError> {
        self.assignment
            .check(self.state.partition, self.epoch)
            .map_err(|e| {
                tracing::error!(
                    partition = self.state.partition,
                    error = %e,
                    "assignment check failed: aborting"
                );
                self.count_abort("assignment_unavailable");
                let _ = self.abort(producer);
                e.into()
            })
    }

    /// The epoch was superseded: aborts the open transaction and releases the partition.
    fn release(&self, producer: &BaseProducer) -> Result<Committed, PublishError> {
        tracing::warn!(
            partition = self.state.partition,
            epoch = self.epoch,
            "epoch superseded: aborting and releasing"
        );
        self.count_abort("superseded");
        self.abort(producer)?;
        self.state.released.store(true, Ordering::Release);
        Ok(Committed::Released)
    }

    /// The offsets into the transaction, then the commit, each retried after retriable
    /// errors until [`COMMIT_DEADLINE`]; between the two, the epoch check made at `checked`
    /// is repeated if it went stale ([`RECHECK_AFTER`]). `Ok(false)`: superseded at that
    /// re-check, nothing committed (the transaction is still open).
    fn commit_offsets(
        &self,
        producer: &BaseProducer,
        tpl: &TopicPartitionList,
        checked: Instant,
    ) -> Result<bool, PublishError> {
        let deadline = Instant::now() + COMMIT_DEADLINE;
        self.retrying("send_offsets_to_transaction", deadline, || {
            producer.send_offsets_to_transaction(tpl, &self.group, CALL_TIMEOUT)
        })?;
        if checked.elapsed() >= RECHECK_AFTER && !self.epoch_current(producer)? {
            return Ok(false);
        }
        // rust-rdkafka's commit flushes first (a `BaseProducer` serves delivery reports only
        // when polled), each with the whole timeout: flushed here as a step of its own, so
        // that each call stays within one CALL_TIMEOUT and a flush timeout is retried.
        // kafka_poll::flush_base: rust-rdkafka's own flush polls in whole 100 ms rounds.
        self.retrying("flush", deadline, || flush_base(producer, CALL_TIMEOUT))?;
        self.retrying("commit_transaction", deadline, || {
            producer.commit_transaction(CALL_TIMEOUT)
        })?;
        Ok(true)
    }

    /// Runs one bounded transaction call, marking its start for the lane's watchdog, and
    /// again after each retriable failure until `deadline` (or until the run is stopped).
    fn retrying(
        &self,
        what: &'static str,
        deadline: Instant,
        mut call: impl FnMut() -> Result<(), KafkaError>,
    ) -> Result<(), PublishError> {
        let mut attempts = 0u32;
        loop {
            if self.state.aborted() {
                return Err(KafkaError::Canceled.into());
            }
            attempts += 1;
            let r = self.state.bounded_call(what, &mut call);
            match r {
                Ok(()) => {
                    if attempts > 1 {
                        tracing::info!(
                            partition = self.state.partition,
                            what,
                            attempts,
                            "transaction step done after retries"
                        );
                    }
                    return Ok(());
                }
                Err(e) if retriable(&e) && Instant::now() < deadline => {
                    tracing::warn!(partition = self.state.partition, what, attempts, error = %e, "transaction step failed: retrying");
                    self.metrics
                        .publish_errors
                        .with_label_values(&["txn_retry"])
                        .inc();
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Aborts the open transaction. A `BaseProducer` serves delivery reports only when
    /// polled, and librdkafka's abort waits for outstanding messages: flush (which polls)
    /// first. Both bounded, and marked for the watchdog.
    fn abort(&self, producer: &BaseProducer) -> Result<(), PublishError> {
        if let Err(e) = self
            .state
            .bounded_call("flush", || flush_base(producer, CALL_TIMEOUT))
        {
            tracing::debug!(error = %e, "flush before abort");
        }
        self.state.bounded_call("abort_transaction", || {
            producer.abort_transaction(CALL_TIMEOUT)
        })?;
        Ok(())
    }
}

/// Whether a transaction step may simply be tried again: librdkafka says so (a timeout, a
/// coordinator away) and the transaction need not be aborted, or the flush before the
/// commit timed out (records still waiting for a partition's leader).
fn retriable(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(e) => e.is_retriable() && !e.txn_requires_abort() && !e.is_fatal(),
        KafkaError::Flush(code) => *code == rdkafka::error::RDKafkaErrorCode::OperationTimedOut,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_timeouts_are_retried_other_errors_not() {
        use rdkafka::error::RDKafkaErrorCode as C;
        assert!(retriable(&KafkaError::Flush(C::OperationTimedOut)));
        assert!(!retriable(&KafkaError::Flush(C::Fail)));
        assert!(!retriable(&KafkaError::Canceled));
    }

    #[test]
    fn transactional_ids_are_per_partition() {
        assert_eq!(
            transactional_id("panoptes.frames", 3),
            "panoptes-worker.panoptes.frames.3"
        );
    }
}
