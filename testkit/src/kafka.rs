//! Reading frame records back from the broker, as a downstream consumer would.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use panoptes_schemas::FrameHeaders;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

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
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", crate::unique_name("reader"))
            .set("enable.auto.commit", "false")
            .set("fetch.message.max.bytes", "2000000")
            .create()
            .context("creating consumer")?;
        let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .context("topic missing from metadata")?;
        let mut tpl = TopicPartitionList::new();
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
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
                Some(Err(e)) => anyhow::bail!("consumer error: {e}"),
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
