//! Reading back what the worker left in Kafka: the group's committed offsets and every
//! detection record of a topic.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use panoptes_schemas::DetectionRecord;
use panoptes_testkit::unique_name;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

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

/// Every detection record on `topic` (`read_committed`), in log order per partition, read
/// until 2 s pass without a new one.
pub fn all_records(bootstrap: &str, topic: &str) -> Result<Vec<DetectionRecord>> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", unique_name("reader"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()?;
    let md = c.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .context("topic")?;
    let mut tpl = TopicPartitionList::new();
    for p in t.partitions() {
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)?;
    }
    c.assign(&tpl)?;
    let mut out = Vec::new();
    let mut idle = 0;
    while idle < 20 {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                idle = 0;
                out.push(DetectionRecord::from_json(m.payload().unwrap_or_default())?);
            }
            Some(Err(e)) => anyhow::bail!("{e}"),
            None => idle += 1,
        }
    }
    Ok(out)
}
