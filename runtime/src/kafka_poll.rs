//! Serving a Kafka producer's events without busy-waiting.
//!
//! rust-rdkafka 0.39's `BaseProducer::poll(timeout)` loops `rd_kafka_queue_poll(remaining
//! milliseconds)` until its deadline; in the last sub-millisecond the remaining time truncates
//! to 0 ms and the loop spins on `clock_gettime` until the deadline passes. Its
//! `ThreadedProducer` calls `poll(100 ms)` forever, so every producer burned up to 1 ms of
//! CPU per 100 ms while idle (measured: docs/benchmarks.md, "The poll-thread finding"), and
//! `flush` polls in whole 100 ms rounds, so a flush waits at least 100 ms once anything is in
//! flight.
//!
//! Contract:
//! - [`PolledProducer`] is a drop-in for `ThreadedProducer`: a `BaseProducer` plus one thread
//!   (named [`POLL_THREAD`]) serving its delivery reports and errors. The thread sleeps in the
//!   kernel until librdkafka puts an event on the producer's queue (librdkafka's queue IO
//!   event: it writes one byte to a socket when the queue becomes non-empty), then serves
//!   every queued event with zero-timeout polls. An idle producer's thread wakes only every
//!   [`IDLE_WAKE`] to check whether it should stop.
//! - [`PolledProducer::flush`] waits in librdkafka (`rd_kafka_flush`, which with the event
//!   API waits for the outstanding-message count to reach zero) while the thread serves the
//!   reports, so it returns as soon as the last report was handled.
//! - [`flush_base`] flushes a `BaseProducer` that has no poll thread (a transactional
//!   producer polled by its owner) in 1 ms steps instead of 100 ms rounds.
//! - Dropping the handle stops and joins the thread, then the producer is dropped as before
//!   (purge, then rust-rdkafka's own bounded flush).
//! - librdkafka writes the IO event to the fd it is given, so the thread reads the *other* end
//!   of a socket pair (an earlier version handed librdkafka the end the thread read, so the
//!   thread only ever woke at its [`IDLE_WAKE`] and every delivery report waited up to
//!   500 ms: docs/benchmarks.md, "Consume rate").
//! - [`queues`]: the same IO-event wake-up for a consumer's per-partition queues, so that one
//!   thread can read many partitions, stop reading any of them, and sleep until one has data.

#![allow(unsafe_code)]

pub mod queues;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::TopicPartitionList;
use rdkafka::bindings as rdsys;
use rdkafka::client::Client;
use rdkafka::config::{ClientConfig, FromClientConfigAndContext};
use rdkafka::consumer::ConsumerGroupMetadata;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext, PurgeConfig};
use rdkafka::util::Timeout;

/// Name of the poll thread (as `top -H` and `/proc/<pid>/task/*/comm` show it).
pub const POLL_THREAD: &str = "kafka-poll";

/// How often an idle poll thread wakes to see whether it should stop.
pub const IDLE_WAKE: Duration = Duration::from_millis(500);

/// The main queue of a producer, with librdkafka's IO event pointed at a socket.
struct EventQueue {
    queue: *mut rdsys::rd_kafka_queue_t,
}

// SAFETY: librdkafka queue handles are thread-safe; the handle is used by the poll thread only
// and destroyed there.
unsafe impl Send for EventQueue {}

impl EventQueue {
    /// Points the IO event of `client`'s main queue at `fd`.
    fn enable<C: rdkafka::ClientContext>(client: &Client<C>, fd: i32) -> Self {
        const PAYLOAD: [u8; 1] = [1];
        // SAFETY: `native_ptr` is a live client handle for as long as `client`; the queue
        // reference is released in `Drop` (before the client, which the thread also holds).
        // librdkafka copies the payload.
        let queue = unsafe {
            let queue = rdsys::rd_kafka_queue_get_main(client.native_ptr());
            rdsys::rd_kafka_queue_io_event_enable(queue, fd, PAYLOAD.as_ptr().cast(), 1);
            queue
        };
        Self { queue }
    }

    fn len(&self) -> usize {
        // SAFETY: `queue` is a live queue reference.
        unsafe { rdsys::rd_kafka_queue_length(self.queue) }
    }
}

impl Drop for EventQueue {
    fn drop(&mut self) {
        // SAFETY: disables the IO event (fd -1) before the socket closes, then releases the
        // reference taken in `enable`.
        unsafe {
            rdsys::rd_kafka_queue_io_event_enable(self.queue, -1, std::ptr::null(), 0);
            rdsys::rd_kafka_queue_destroy(self.queue);
        }
    }
}

/// A `BaseProducer` whose events a thread of its own serves without busy-waiting (a drop-in
/// for rust-rdkafka's `ThreadedProducer`).
pub struct PolledProducer<C: ProducerContext + 'static> {
    producer: Arc<BaseProducer<C>>,
    stop: Arc<AtomicBool>,
    wake: UnixStream,
    thread: Option<JoinHandle<()>>,
}

impl<C: ProducerContext + 'static> FromClientConfigAndContext<C> for PolledProducer<C> {
    fn from_config_and_context(config: &ClientConfig, context: C) -> KafkaResult<Self> {
        let producer = Arc::new(BaseProducer::from_config_and_context(config, context)?);
        let socket_error =
            |e: std::io::Error| KafkaError::ClientCreation(format!("poll thread socket: {e}"));
        let (wake, waiter) = UnixStream::pair().map_err(socket_error)?;
        waiter
            .set_read_timeout(Some(IDLE_WAKE))
            .map_err(socket_error)?;
        // Non-blocking: librdkafka writes to it from its own threads and must never block.
        wake.set_nonblocking(true).map_err(socket_error)?;
        let event_end = wake.try_clone().map_err(socket_error)?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let producer = producer.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(POLL_THREAD.into())
                .spawn(move || serve(&producer, &event_end, waiter, &stop))
                .map_err(|e| KafkaError::ClientCreation(format!("poll thread: {e}")))?
        };
        Ok(Self {
            producer,
            stop,
            wake,
            thread: Some(thread),
        })
    }
}

/// The poll thread: sleep on the socket, serve what is queued, until told to stop.
/// librdkafka writes its IO event to `event_end`; the thread reads `waiter`, its peer.
fn serve<C: ProducerContext>(
    producer: &BaseProducer<C>,
    event_end: &UnixStream,
    mut waiter: UnixStream,
    stop: &AtomicBool,
) {
    let queue = EventQueue::enable(producer.client(), event_end.as_raw_fd());
    let mut buf = [0u8; 64];
    loop {
        // Serve first: events may have been queued before the IO event was enabled.
        while queue.len() > 0 {
            producer.poll(Duration::ZERO);
        }
        if stop.load(Ordering::Acquire) {
            break;
        }
        match waiter.read(&mut buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                // Cannot happen with a socket pair we own; never spin on it.
                tracing::warn!(error = %e, "kafka poll thread: socket read failed");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    drop(queue);
}

impl<C: ProducerContext + 'static> PolledProducer<C> {
    /// Enqueues a record (see `BaseProducer::send`); never blocks.
    #[allow(clippy::result_large_err, clippy::type_complexity)]
    pub fn send<'a, K, P>(
        &self,
        record: BaseRecord<'a, K, P, C::DeliveryOpaque>,
    ) -> Result<(), (KafkaError, BaseRecord<'a, K, P, C::DeliveryOpaque>)>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        self.producer.send(record)
    }
}

impl<C: ProducerContext + 'static> Producer<C> for PolledProducer<C> {
    fn client(&self) -> &Client<C> {
        self.producer.client()
    }

    fn in_flight_count(&self) -> i32 {
        self.producer.in_flight_count()
    }

    fn flush<T: Into<Timeout>>(&self, timeout: T) -> KafkaResult<()> {
        // With the event API librdkafka's flush does not poll: it waits until every message
        // was reported, which the poll thread does meanwhile.
        let ms = timeout.into().as_millis_i32();
        // SAFETY: a live producer handle.
        let err = unsafe { rdsys::rd_kafka_flush(self.producer.client().native_ptr(), ms) };
        match err {
            rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => Ok(()),
            e => Err(KafkaError::Flush(e.into())),
        }
    }

    fn purge(&self, flags: PurgeConfig) {
        self.producer.purge(flags)
    }

    fn init_transactions<T: Into<Timeout>>(&self, timeout: T) -> KafkaResult<()> {
        self.producer.init_transactions(timeout)
    }

    fn begin_transaction(&self) -> KafkaResult<()> {
        self.producer.begin_transaction()
    }

    fn send_offsets_to_transaction<T: Into<Timeout>>(
        &self,
        offsets: &TopicPartitionList,
        cgm: &ConsumerGroupMetadata,
        timeout: T,
    ) -> KafkaResult<()> {
        self.producer
            .send_offsets_to_transaction(offsets, cgm, timeout)
    }

    fn commit_transaction<T: Into<Timeout>>(&self, timeout: T) -> KafkaResult<()> {
        // rust-rdkafka's commit flushes in 100 ms polling rounds: flush here first, so that
        // its own flush finds nothing in flight.
        let timeout = timeout.into();
        self.flush(timeout)?;
        self.producer.commit_transaction(timeout)
    }

    fn abort_transaction<T: Into<Timeout>>(&self, timeout: T) -> KafkaResult<()> {
        self.producer.abort_transaction(timeout)
    }
}

impl<C: ProducerContext + 'static> Drop for PolledProducer<C> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the thread now rather than at its next idle check.
        let _ = std::io::Write::write(&mut &self.wake, &[0]);
        if let Some(t) = self.thread.take()
            && t.join().is_err()
        {
            tracing::warn!("kafka poll thread panicked");
        }
    }
}

/// Flushes a `BaseProducer` that no thread polls (e.g. a transactional producer polled by
/// its owner): serves its events and waits in 1 ms steps until nothing is in flight, or
/// `timeout` passes (`KafkaError::Flush(MessageTimedOut)`).
pub fn flush_base<C: ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> KafkaResult<()> {
    let deadline = Instant::now() + timeout;
    loop {
        producer.poll(Duration::ZERO);
        if producer.in_flight_count() == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(KafkaError::Flush(
                rdkafka::types::RDKafkaErrorCode::MessageTimedOut,
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

trait TimeoutMs {
    fn as_millis_i32(&self) -> i32;
}

impl TimeoutMs for Timeout {
    fn as_millis_i32(&self) -> i32 {
        match self {
            Timeout::After(d) => i32::try_from(d.as_millis()).unwrap_or(i32::MAX),
            Timeout::Never => -1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use rdkafka::ClientContext;
    use rdkafka::producer::DeliveryResult;

    use super::*;

    /// Counts failed deliveries.
    struct Failures(Arc<AtomicUsize>);

    impl ClientContext for Failures {}

    impl ProducerContext for Failures {
        type DeliveryOpaque = ();

        fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
            if result.is_err() {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    #[test]
    fn librdkafka_wakes_the_peer_of_the_socket_it_is_given() {
        // An earlier version read the very fd librdkafka wrote to, so it never woke on an
        // event. Here the failed delivery report (no broker) must reach the peer.
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("message.timeout.ms", "100")
            .set("log_level", "0");
        let producer: BaseProducer = config.create().unwrap();
        let (event_end, mut waiter) = UnixStream::pair().unwrap();
        event_end.set_nonblocking(true).unwrap();
        waiter
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let queue = EventQueue::enable(producer.client(), event_end.as_raw_fd());
        // librdkafka writes the IO event only when the queue goes from empty to one event.
        // On a busy machine the failed connection's error event may already wait there, and
        // the report would then queue behind it with no wake-up: serve what came before,
        // as the poll thread does.
        while queue.len() > 0 {
            producer.poll(Duration::ZERO);
        }
        producer
            .send(BaseRecord::<str, str>::to("t").payload("x"))
            .map_err(|(e, _)| e)
            .unwrap();
        let mut buf = [0u8; 8];
        let n = waiter
            .read(&mut buf)
            .expect("woken by librdkafka's IO event");
        assert!(n > 0);
        assert!(queue.len() > 0, "the report waits on the queue");
        drop(queue);
    }

    #[test]
    fn queue_waker_wakes_on_a_handle_and_times_out_without_one() {
        let waker = queues::QueueWaker::new().unwrap();
        assert!(!waker.wait(Duration::from_millis(20)));
        let wake = waker.waker();
        wake.wake();
        wake.wake();
        assert!(waker.wait(Duration::from_secs(20)));
        // Both bytes were consumed by the first wait.
        assert!(!waker.wait(Duration::from_millis(20)));
        let w = waker.waker();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w.wake();
        });
        assert!(waker.wait(Duration::from_secs(20)));
        t.join().unwrap();
    }

    #[test]
    fn reports_are_served_by_the_thread_and_flush_returns_once_they_are() {
        // No broker: the record times out and its (failed) report must still be served.
        let failures = Arc::new(AtomicUsize::new(0));
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("message.timeout.ms", "200")
            .set("log_level", "0");
        let producer: PolledProducer<Failures> = config
            .create_with_context(Failures(failures.clone()))
            .unwrap();
        producer
            .send(BaseRecord::<str, str>::to("t").payload("x"))
            .map_err(|(e, _)| e)
            .unwrap();
        let started = Instant::now();
        producer.flush(Duration::from_secs(10)).unwrap();
        assert_eq!(failures.load(Ordering::SeqCst), 1);
        assert_eq!(producer.in_flight_count(), 0);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // Dropping wakes and joins the thread at once, not at its next idle check.
        let dropped = Instant::now();
        drop(producer);
        assert!(dropped.elapsed() < IDLE_WAKE, "{:?}", dropped.elapsed());
    }
}
