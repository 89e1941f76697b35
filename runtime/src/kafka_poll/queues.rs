//! A consumer read one queue per partition, by one thread that sleeps until there is
//! something to read.
//!
//! Contract:
//! - [`QueueWaker`] owns a socket pair. librdkafka queues watched through it
//!   ([`QueueWaker::watch_partition`], [`QueueWaker::watch_consumer`]) write one byte to it
//!   when they get an element after they were last read (librdkafka's queue IO event: at
//!   most one byte per queue between two reads of that queue), and so does any [`Wake`]
//!   handle. [`QueueWaker::wait`] sleeps until a byte arrives or its timeout passes, and
//!   never spins.
//! - [`WatchedPartition`] is one partition split off the consumer's queue
//!   (`rd_kafka_queue_get_partition` + forward to none: rust-rdkafka's `split_partition_queue`)
//!   with its IO event on the waker. Split it *before* assigning the partition: librdkafka
//!   2.x keeps an application-set forward across fetch starts (`RD_KAFKA_Q_F_FWD_APP`), so
//!   no record of it reaches the consumer's own queue. Not reading a partition queue is how
//!   a reader stops taking a partition's records without `pause` (which makes librdkafka
//!   drop what it prefetched and refetch late): librdkafka stops fetching for the partition
//!   once its queue holds `queued.max.messages.kbytes` (per partition with split queues).
//! - Drop a [`WatchedPartition`] before splitting the same partition again: dropping it
//!   turns off the IO event of the partition's (single) queue.
//! - Every librdkafka handle here holds an `Arc` of its consumer, so none outlives it.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;

/// The socket pair a reader thread sleeps on.
pub struct QueueWaker {
    /// The end librdkafka and [`Wake`] handles write to (non-blocking).
    event_end: Arc<UnixStream>,
    /// The end the thread reads.
    waiter: UnixStream,
}

/// Wakes the thread waiting on a [`QueueWaker`] (cheap to clone, never blocks).
#[derive(Clone)]
pub struct Wake(Arc<UnixStream>);

impl Wake {
    /// Makes the waiter's current or next [`QueueWaker::wait`] return at once.
    pub fn wake(&self) {
        // A full socket buffer already holds a wake-up: nothing is lost by ignoring it.
        let _ = std::io::Write::write(&mut &*self.0, &[1]);
    }
}

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wake")
    }
}

impl QueueWaker {
    /// A fresh socket pair.
    pub fn new() -> std::io::Result<Self> {
        let (event_end, waiter) = UnixStream::pair()?;
        event_end.set_nonblocking(true)?;
        Ok(Self {
            event_end: Arc::new(event_end),
            waiter,
        })
    }

    /// A handle other threads wake the waiter with.
    pub fn waker(&self) -> Wake {
        Wake(self.event_end.clone())
    }

    /// Sleeps until a watched queue or a [`Wake`] writes, or `timeout` passes; consumes
    /// every byte written so far. Returns whether something woke it.
    pub fn wait(&self, timeout: Duration) -> bool {
        let mut buf = [0u8; 256];
        let mut waiter = &self.waiter;
        if self
            .waiter
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))
            .is_err()
        {
            std::thread::sleep(timeout);
            return false;
        }
        let woken = matches!(waiter.read(&mut buf), Ok(n) if n > 0);
        if woken && self.waiter.set_nonblocking(true).is_ok() {
            while matches!(waiter.read(&mut buf), Ok(n) if n == buf.len()) {}
            let _ = self.waiter.set_nonblocking(false);
        }
        woken
    }

    /// Splits `partition` of `topic` off `consumer`'s queue and watches it. `None` when
    /// librdkafka refuses the topic or partition.
    pub fn watch_partition<C: ConsumerContext + 'static>(
        &self,
        consumer: &Arc<BaseConsumer<C>>,
        topic: &str,
        partition: i32,
    ) -> Option<WatchedPartition<C>> {
        let queue = consumer.split_partition_queue(topic, partition)?;
        let topic = std::ffi::CString::new(topic).ok()?;
        // SAFETY: a live client handle (the consumer is held by `queue` and by the watch);
        // this takes a second reference to the partition's queue, released in `Drop`.
        let native = unsafe {
            rdsys::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                partition,
            )
        };
        let watch = IoEvent::enable(native, &self.event_end, consumer.clone())?;
        Some(WatchedPartition {
            queue,
            _watch: watch,
        })
    }

    /// Watches `consumer`'s own queue (errors, commit results, and records of partitions
    /// not split off). Serve it with `consumer.poll(Duration::ZERO)`.
    pub fn watch_consumer<C: ConsumerContext + 'static>(
        &self,
        consumer: &Arc<BaseConsumer<C>>,
    ) -> Option<ConsumerWatch> {
        // SAFETY: a live client handle; the reference is released in `Drop`.
        let native = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        IoEvent::enable(native, &self.event_end, consumer.clone()).map(|w| ConsumerWatch {
            _watch: Box::new(w),
        })
    }
}

/// One partition's own queue, watched by a [`QueueWaker`].
pub struct WatchedPartition<C: ConsumerContext + 'static> {
    // Field order: the IO event goes first (rust-rdkafka's queue turns events off on drop).
    _watch: IoEvent<C>,
    queue: PartitionQueue<C>,
}

impl<C: ConsumerContext> WatchedPartition<C> {
    /// The next record or error of the partition, without waiting.
    pub fn poll(&self) -> Option<KafkaResult<BorrowedMessage<'_>>> {
        self.queue.poll(Duration::ZERO)
    }
}

/// The consumer's own queue, watched by a [`QueueWaker`] (type-erased: it only has to live).
pub struct ConsumerWatch {
    _watch: Box<dyn Send>,
}

/// A queue reference whose IO event writes to a [`QueueWaker`].
struct IoEvent<C: ConsumerContext + 'static> {
    queue: *mut rdsys::rd_kafka_queue_t,
    /// The fd librdkafka writes to stays open while the event is on.
    _socket: Arc<UnixStream>,
    /// Queue references must not outlive their client.
    _consumer: Arc<BaseConsumer<C>>,
}

// SAFETY: librdkafka queue handles are thread-safe; this one is only enabled and dropped.
unsafe impl<C: ConsumerContext> Send for IoEvent<C> {}

impl<C: ConsumerContext> IoEvent<C> {
    fn enable(
        queue: *mut rdsys::rd_kafka_queue_t,
        socket: &Arc<UnixStream>,
        consumer: Arc<BaseConsumer<C>>,
    ) -> Option<Self> {
        const PAYLOAD: [u8; 1] = [1];
        if queue.is_null() {
            return None;
        }
        // SAFETY: `queue` is a live reference; librdkafka copies the payload.
        unsafe {
            rdsys::rd_kafka_queue_io_event_enable(
                queue,
                socket.as_raw_fd(),
                PAYLOAD.as_ptr().cast(),
                1,
            );
        }
        Some(Self {
            queue,
            _socket: socket.clone(),
            _consumer: consumer,
        })
    }
}

impl<C: ConsumerContext> Drop for IoEvent<C> {
    fn drop(&mut self) {
        // SAFETY: turns the IO event off (fd -1) before the socket may close, then releases
        // the reference taken when it was enabled.
        unsafe {
            rdsys::rd_kafka_queue_io_event_enable(self.queue, -1, std::ptr::null(), 0);
            rdsys::rd_kafka_queue_destroy(self.queue);
        }
    }
}
