//! Coordinators move off a broker that goes down (`POST /coordinators`, `crate::coordinators`):
//! a transactional producer and a consumer group whose coordinator was the downed broker
//! keep working against the real `panoptes-devbroker` binary, and the coordinators move back
//! when the old one comes back (clients follow them again).

mod common;

use std::time::{Duration, Instant};

use common::Control;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const T: Duration = Duration::from_secs(10);
/// Both hash onto broker 1 in the mock (crc32 % 3).
const GROUP: &str = "panoptes-workers";
const TXN: &str = "panoptes-worker.panoptes.frames.0";
const TOPIC: &str = "t.coord";

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "500");
    c
}

/// Where each registered key is coordinated, from `GET /coordinators`.
fn placed(b: &common::DevBroker, key: &str) -> i64 {
    let (s, v) = b.json("GET", "/coordinators", None);
    assert_eq!(s, 200, "{v}");
    v["coordinators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["key"] == key)
        .unwrap_or_else(|| panic!("{key} not registered: {v}"))["broker"]
        .as_i64()
        .unwrap()
}

/// One transaction of one record on `partition`, with the consumer's offset in it.
fn transaction(p: &BaseProducer, c: &BaseConsumer, partition: i32, offset: i64) {
    p.begin_transaction().expect("begin");
    p.send(
        BaseRecord::<(), _>::to(TOPIC)
            .partition(partition)
            .payload("x"),
    )
    .map_err(|(e, _)| e)
    .expect("send");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, partition, Offset::Offset(offset))
        .unwrap();
    let group = c.group_metadata().expect("group metadata");
    p.send_offsets_to_transaction(&tpl, &group, T)
        .expect("send_offsets_to_transaction");
    p.commit_transaction(T).expect("commit");
}

#[test]
fn coordinators_move_off_a_down_broker_and_back() {
    let b = common::start(&[
        "--no-default-topics",
        "--brokers",
        "3",
        "--topic",
        &format!("{TOPIC}:6"),
    ]);
    // Bad registrations are refused.
    for body in [
        r#"{"group":[""]}"#,
        r#"{"groups":["x"]}"#,
        r#"{"transaction":"x"}"#,
    ] {
        let (s, v) = b.json("POST", "/coordinators", Some(body));
        assert_eq!(s, 400, "{body}: {v}");
    }
    let body = format!(r#"{{"group":["{GROUP}"],"transaction":["{TXN}"]}}"#);
    let (s, v) = b.json("POST", "/coordinators", Some(&body));
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (placed(&b, GROUP), placed(&b, TXN)),
        (1, 1),
        "the mock's hash"
    );

    let c: BaseConsumer = client(&b.bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let md = c.fetch_metadata(Some(TOPIC), T).unwrap();
    let partition = md.topics()[0]
        .partitions()
        .iter()
        .find(|p| p.leader() != 1)
        .expect("a partition led by broker 2 or 3")
        .id();

    let (s, v) = b.json("POST", "/brokers/1/down", None);
    assert_eq!(s, 200, "{v}");
    let (group_at, txn_at) = (placed(&b, GROUP), placed(&b, TXN));
    assert!(
        group_at != 1 && txn_at != 1,
        "moved off broker 1: group {group_at}, txn {txn_at}"
    );

    // Without the move, both block on broker 1 until their timeouts.
    let started = Instant::now();
    let p: BaseProducer = client(&b.bootstrap)
        .set("transactional.id", TXN)
        .create()
        .unwrap();
    p.init_transactions(T)
        .expect("init_transactions with broker 1 down");
    transaction(&p, &c, partition, 1);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, partition, Offset::Offset(7))
        .unwrap();
    c.commit(&tpl, CommitMode::Sync)
        .expect("group commit with broker 1 down");
    let took = started.elapsed();
    eprintln!("init + transaction + group commit with the coordinator's broker down: {took:?}");
    assert!(took < T, "{took:?}");

    // Back up: the coordinators move home again, and clients follow.
    let (s, _) = b.json("POST", "/brokers/1/up", None);
    assert_eq!(s, 200);
    assert_eq!((placed(&b, GROUP), placed(&b, TXN)), (1, 1));
    transaction(&p, &c, partition, 2);
    let committed = c.committed_offsets(tpl, T).expect("committed offsets");
    let got = committed.find_partition(TOPIC, partition).unwrap().offset();
    assert_eq!(got, Offset::Offset(7));
}
