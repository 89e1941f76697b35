//! The exactly-once publisher checks the assignment epoch before every commit: when the
//! epoch was superseded it aborts the open transaction, commits no input offset and releases
//! the partition (library-level: the static assignment cannot change at run time in the
//! binary yet).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use panoptes_runtime::config::KafkaClientConfig;
use panoptes_schemas::{
    FrameEncoding, FrameHeaders, FrameStatus, ModelRef, SCHEMA_VERSION, StageLatencies,
    new_traceparent,
};
use panoptes_testkit::{DevBroker, unique_name};
use panoptes_workers::assignment::StaticAssignment;
use panoptes_workers::config::KafkaConfig;
use panoptes_workers::metrics::WorkerMetrics;
use panoptes_workers::pipeline::partition::PartitionState;
use panoptes_workers::pipeline::publish::EosPartition;
use panoptes_workers::pipeline::work::{Outcome, Output, Position, RecordContext, now_us};
use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};

#[test]
fn superseded_epoch_aborts_and_releases() -> Result<()> {
    let broker = DevBroker::start(1)?;
    let frames = unique_name("frames");
    broker.create_topic(&frames, 1)?;
    let cfg = KafkaConfig {
        client: KafkaClientConfig {
            bootstrap_servers: broker.bootstrap.clone(),
            ..Default::default()
        },
        frames_topic: frames.clone(),
        detections_topic: unique_name("detections"),
        dlq_topic: unique_name("dlq"),
        group_id: unique_name("group"),
        ..KafkaConfig::default()
    };
    broker.create_topic(&cfg.detections_topic, 1)?;
    let metrics = WorkerMetrics::new()?;
    let link = panoptes_runtime::kafka_link::KafkaLink::new(
        &metrics.registry,
        "worker",
        panoptes_runtime::health::Readiness::default(),
    )?;
    let consumer = Arc::new(panoptes_workers::pipeline::consume::create(
        &cfg,
        "w-epoch",
        link.clone(),
    )?);
    let assignment = Arc::new(StaticAssignment::new(1));
    let state = PartitionState::new(0);
    let part = EosPartition {
        cfg: cfg.clone(),
        worker_id: "w-epoch".into(),
        state: state.clone(),
        group: consumer.group_metadata().expect("group metadata"),
        consumer: consumer.clone(),
        assignment: assignment.clone(),
        epoch: 1,
        commit_interval: Duration::from_millis(500),
        metrics: metrics.clone(),
        link,
    };
    let producer = part.producer()?;
    let (tx, rx) = crossbeam_channel::bounded(4);
    let thread = std::thread::spawn(move || part.run(&producer, rx));

    let ctx = RecordContext {
        worker_id: "w-epoch".into(),
        frames_topic: frames.clone(),
        model: ModelRef {
            name: "m".into(),
            version: "1".into(),
        },
        epoch: 1,
        partition_epochs: Default::default(),
    };
    let headers = FrameHeaders {
        schema_version: SCHEMA_VERSION,
        camera_id: "cam0".into(),
        seq: 0,
        capture_time_us: now_us(),
        pts_ns: None,
        width: 64,
        height: 64,
        source_width: 64,
        source_height: 64,
        encoding: FrameEncoding::Jpeg,
        traceparent: new_traceparent(),
        owner_epoch: None,
        capture_clock: Default::default(),
    };
    let pos = Position {
        partition: 0,
        offset: 0,
        idx: 0,
        instance: state.instance,
    };
    let record = ctx.record(
        pos,
        &headers,
        FrameStatus::SkippedStale,
        StageLatencies::default(),
    );
    tx.send(Outcome {
        pos,
        output: Output::Record(Box::new(record)),
        trace: Default::default(),
    })?;
    // The coordinator moves the partition before the transaction is due.
    assignment.set(0, Some(2));
    let result = thread.join().expect("publisher thread");
    assert!(result.is_ok(), "{result:?}");
    assert!(state.released.load(Ordering::Acquire), "partition released");
    let aborted = metrics.aborted.with_label_values(&["superseded"]).get();
    assert_eq!(aborted, 1);
    // No input offset was committed for the superseded epoch.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&frames, 0);
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    let offset = committed.elements()[0].offset();
    assert!(!matches!(offset, Offset::Offset(_)), "{offset:?}");
    drop(tx);
    Ok(())
}
