//! Kafka as a test sees it: frames written straight into a frames topic (as an ingest node
//! would, with the real envelope headers), and frames, detection records and a group's
//! committed offsets read back as a downstream consumer would. Every client is configured
//! from the shared [`KafkaClientConfig`] ([`client_config`]), so the same helpers work
//! against a secured broker (`DevBroker::start_secured`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
pub use panoptes_runtime::config::KafkaClientConfig;
use panoptes_schemas::{
    DetectionRecord, FrameEncoding, FrameHeaders, SCHEMA_VERSION, new_traceparent,
};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// A librdkafka configuration: `kafka`'s connection and security properties, then
/// `properties`, then `kafka`'s own overrides (the layering every node uses).
pub fn client_config(
    kafka: &KafkaClientConfig,
    properties: &[(&str, &str)],
) -> Result<ClientConfig> {
    let mut config: ClientConfig = kafka.connection_properties()?.into_iter().collect();
    for (k, v) in properties {
        config.set(*k, *v);
    }
    config.extend(kafka.override_properties());
    Ok(config)
}

/// Microseconds since the Unix epoch (the clock of `capture_time_us`).
pub fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The envelope of a JPEG frame of `camera` captured `age` ago, `size` as published (the
/// source the same size), with a fresh trace context.
pub fn frame_headers(camera: &str, seq: u64, size: (u32, u32), age: Duration) -> FrameHeaders {
    FrameHeaders {
        schema_version: SCHEMA_VERSION,
        camera_id: camera.into(),
        seq,
        capture_time_us: now_us() - age.as_micros() as i64,
        pts_ns: None,
        width: size.0,
        height: size.1,
        source_width: size.0,
        source_height: size.1,
        encoding: FrameEncoding::Jpeg,
        traceparent: new_traceparent(),
        owner_epoch: None,
        capture_clock: Default::default(),
    }
}

/// A grey `width`×`height` JPEG (quality 80) with one red square: a cheap frame to infer.
pub fn test_jpeg(width: u16, height: u16) -> Vec<u8> {
    let (w, h) = (usize::from(width), usize::from(height));
    let mut rgb = vec![90u8; w * h * 3];
    for y in h / 3..h * 2 / 3 {
        for x in w * 5 / 16..w / 2 {
            let i = (y * w + x) * 3;
            rgb[i..i + 3].copy_from_slice(&[230, 20, 20]);
        }
    }
    let mut out = Vec::new();
    jpeg_encoder::Encoder::new(&mut out, 80)
        .encode(&rgb, width, height, jpeg_encoder::ColorType::Rgb)
        .expect("encoding a test JPEG");
    out
}

/// A producer writing frame records straight into a frames topic.
pub struct FrameProducer {
    producer: BaseProducer,
}

impl FrameProducer {
    /// A producer on `bootstrap` (`linger.ms` 5) with the extra librdkafka `properties`.
    pub fn new(bootstrap: &str, properties: &[(&str, &str)]) -> Result<Self> {
        Self::with_config(&KafkaClientConfig::plaintext(bootstrap), properties)
    }

    /// A producer configured from the shared client config (e.g. a secured broker's).
    pub fn with_config(kafka: &KafkaClientConfig, properties: &[(&str, &str)]) -> Result<Self> {
        let mut config = client_config(kafka, &[("linger.ms", "5")])?;
        for (k, v) in properties {
            config.set(*k, *v);
        }
        Ok(Self {
            producer: config.create()?,
        })
    }

    /// Sends one record with exactly the header pairs given (valid or not) to `partition`.
    pub fn send_raw(
        &self,
        topic: &str,
        partition: i32,
        key: &str,
        headers: &[(&str, String)],
        payload: &[u8],
    ) -> Result<()> {
        let mut owned = OwnedHeaders::new();
        for (key, value) in headers {
            owned = owned.insert(Header {
                key,
                value: Some(value.as_bytes()),
            });
        }
        let rec = BaseRecord::to(topic)
            .partition(partition)
            .key(key)
            .payload(payload)
            .headers(owned);
        if let Err((e, _)) = self.producer.send(rec) {
            bail!("producing to {topic}/{partition}: {e}");
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Sends a frame with envelope `h`, keyed by its camera, to `partition`.
    pub fn send(
        &self,
        topic: &str,
        partition: i32,
        h: &FrameHeaders,
        payload: &[u8],
    ) -> Result<()> {
        let pairs: Vec<(&str, String)> = h.to_kafka_headers();
        self.send_raw(topic, partition, &h.camera_id, &pairs, payload)
    }

    /// Waits (≤ 10 s) until everything sent is acknowledged.
    pub fn flush(&self) -> Result<()> {
        Ok(self.producer.flush(Duration::from_secs(10))?)
    }
}

/// A consumer of every partition of `topic` from the beginning, in a fresh group, with the
/// extra librdkafka `properties`.
fn reader(
    kafka: &KafkaClientConfig,
    topic: &str,
    properties: &[(&str, &str)],
) -> Result<BaseConsumer> {
    let group = crate::basics::unique_name("reader");
    let mut config = client_config(
        kafka,
        &[
            ("group.id", group.as_str()),
            ("enable.auto.commit", "false"),
        ],
    )?;
    for (k, v) in properties {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer = config.create().context("creating consumer")?;
    let mut tpl = TopicPartitionList::new();
    for p in partition_ids(&consumer, topic)? {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    Ok(consumer)
}

/// The partition ids of `topic` in `consumer`'s metadata request (≤ 10 s).
fn partition_ids(consumer: &BaseConsumer, topic: &str) -> Result<Vec<i32>> {
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .context("topic missing from metadata")?;
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// The partitions of `topic` as a fresh client sees them (its own metadata request).
pub fn partition_count(bootstrap: &str, topic: &str) -> Result<usize> {
    let consumer: BaseConsumer = client_config(
        &KafkaClientConfig::plaintext(bootstrap.to_string()),
        &[("group.id", "partition-count")],
    )?
    .create()
    .context("creating consumer")?;
    Ok(partition_ids(&consumer, topic)?.len())
}

/// Frames for `cam0..cam<n>` (camera i → partition i), `fps` each, produced on a thread
/// (idempotent producer, sequence from 0) until [`Producing::finish`].
pub struct Producing {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<Result<u64>>,
}

impl Producing {
    /// Starts producing one 320×180 [`test_jpeg`] into `topic`'s partitions `0..partitions`.
    pub fn start(bootstrap: &str, topic: &str, partitions: i32, fps: u64) -> Self {
        let jpeg = test_jpeg(320, 180);
        let frames = (0..partitions).map(|_| vec![jpeg.clone()]).collect();
        Self::cycling(bootstrap, topic, frames, (320, 180), fps)
    }

    /// Starts producing into `topic`: camera i (partition i) sends `frames[i]` in turn,
    /// cycled, each `size` (width, height).
    pub fn cycling(
        bootstrap: &str,
        topic: &str,
        frames: Vec<Vec<Vec<u8>>>,
        size: (u32, u32),
        fps: u64,
    ) -> Self {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (b, t, s) = (bootstrap.to_string(), topic.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let p = FrameProducer::new(&b, &[("enable.idempotence", "true")])?;
            let (mut seq, started) = (0, Instant::now());
            while !s.load(Ordering::Acquire) {
                for (partition, jpegs) in frames.iter().enumerate() {
                    let h = frame_headers(&format!("cam{partition}"), seq, size, Duration::ZERO);
                    let jpeg = &jpegs[seq as usize % jpegs.len().max(1)];
                    p.send(&t, partition as i32, &h, jpeg)?;
                }
                seq += 1;
                let next = started + Duration::from_millis(seq * 1000 / fps.max(1));
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            p.flush()?;
            Ok(seq * frames.len() as u64)
        });
        Self { stop, thread }
    }

    /// Stops producing; returns how many frames went out.
    pub fn finish(self) -> Result<u64> {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the frame producer thread panicked"))?
    }
}

/// A consumer of `group`, used only to read its committed offsets.
pub fn offsets_reader(bootstrap: &str, group: &str) -> Result<BaseConsumer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?)
}

/// The group's committed offset per partition `0..partitions` (missing = nothing committed).
pub fn committed(c: &BaseConsumer, topic: &str, partitions: i32) -> Result<BTreeMap<i32, i64>> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c.committed_offsets(tpl, Duration::from_secs(10))?;
    Ok(got
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// Waits up to `timeout` until the group of `reader` has committed an offset beyond `past`
/// on every partition `0..partitions` of `topic`; returns those offsets.
pub fn wait_committed(
    what: &str,
    reader: &BaseConsumer,
    topic: &str,
    partitions: i32,
    past: i64,
    timeout: Duration,
) -> Result<BTreeMap<i32, i64>> {
    crate::basics::wait_until(what, timeout, || {
        committed(reader, topic, partitions)
            .ok()
            .filter(|c| c.len() == partitions as usize && c.values().all(|&o| o > past))
    })
}

/// Every detection record on `topic` (`read_committed`), in log order per partition, read
/// until 2 s pass without a new one.
pub fn all_records(bootstrap: &str, topic: &str) -> Result<Vec<DetectionRecord>> {
    let kafka = KafkaClientConfig::plaintext(bootstrap);
    let c = reader(&kafka, topic, &[("isolation.level", "read_committed")])?;
    let mut out = Vec::new();
    let mut idle = 0;
    while idle < 20 {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                idle = 0;
                out.push(DetectionRecord::from_json(m.payload().unwrap_or_default())?);
            }
            Some(Err(e)) => bail!("{e}"),
            None => idle += 1,
        }
    }
    Ok(out)
}

/// One frame record as read from Kafka.
#[derive(Debug, Clone)]
pub struct FrameRecord {
    /// Partition it was in.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// Record key.
    pub key: Option<String>,
    /// Parsed headers, or the parse error.
    pub headers: Result<FrameHeaders, String>,
    /// Raw header pairs (for leak checks).
    pub raw_headers: Vec<(String, Vec<u8>)>,
    /// Payload.
    pub payload: Vec<u8>,
}

/// A consumer reading every partition of one topic from the beginning.
pub struct TopicReader {
    consumer: BaseConsumer,
}

impl TopicReader {
    /// Assigns all partitions of `topic` from the start.
    pub fn new(bootstrap: &str, topic: &str) -> Result<Self> {
        Self::with_config(&KafkaClientConfig::plaintext(bootstrap), topic)
    }

    /// Like [`TopicReader::new`], configured from the shared client config.
    pub fn with_config(kafka: &KafkaClientConfig, topic: &str) -> Result<Self> {
        let consumer = reader(kafka, topic, &[("fetch.message.max.bytes", "2000000")])?;
        Ok(Self { consumer })
    }

    /// Reads for `duration`, appending what arrives to `out`.
    pub fn read_for(&self, duration: Duration, out: &mut Vec<FrameRecord>) -> Result<()> {
        let deadline = Instant::now() + duration;
        while Instant::now() < deadline {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let mut raw = Vec::new();
                    if let Some(h) = m.headers() {
                        for hdr in h.iter() {
                            raw.push((hdr.key.to_string(), hdr.value.unwrap_or_default().to_vec()));
                        }
                    }
                    let headers = FrameHeaders::from_kafka_headers(
                        raw.iter().map(|(k, v)| (k.as_str(), Some(v.as_slice()))),
                    )
                    .map_err(|e| e.to_string());
                    out.push(FrameRecord {
                        partition: m.partition(),
                        offset: m.offset(),
                        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                        headers,
                        raw_headers: raw,
                        payload: m.payload().unwrap_or_default().to_vec(),
                    });
                }
                Some(Err(e)) => bail!("consumer error: {e}"),
                None => {}
            }
        }
        Ok(())
    }
}

/// Groups records by camera id (records with bad headers under "").
pub fn by_camera(records: &[FrameRecord]) -> BTreeMap<String, Vec<&FrameRecord>> {
    let mut map: BTreeMap<String, Vec<&FrameRecord>> = BTreeMap::new();
    for r in records {
        let cam = r
            .headers
            .as_ref()
            .map(|h| h.camera_id.clone())
            .unwrap_or_default();
        map.entry(cam).or_default().push(r);
    }
    map
}
