//! `--listen`, `--advertise-host`, `--front-port` (a broker in a container): the brokers are
//! served on consecutive fixed ports of the asked address, `BOOTSTRAP` and the metadata name
//! the advertised host, and a client that bootstraps there produces and consumes through
//! them (the fronts relay to the mock, which itself only listens on loopback).

mod common;

use std::net::TcpListener;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

/// A port `p` with `p` and `p + 1` free on 127.0.0.1 at the time of asking.
fn two_free_ports() -> u16 {
    for _ in 0..50 {
        let first = TcpListener::bind("127.0.0.1:0").expect("bind");
        let p = first.local_addr().expect("addr").port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no two consecutive free ports");
}

#[test]
fn brokers_listen_on_fixed_ports_and_advertise_the_given_host() {
    let port = two_free_ports();
    let b = common::start(&[
        "--brokers",
        "2",
        "--listen",
        "127.0.0.1",
        "--advertise-host",
        "localhost",
        "--front-port",
        &port.to_string(),
    ]);
    assert_eq!(
        b.bootstrap,
        format!("localhost:{port},localhost:{}", port + 1)
    );

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &b.bootstrap)
        .set("group.id", "listen-test")
        .set("broker.address.family", "v4")
        .create()
        .expect("consumer");
    let md = consumer
        .fetch_metadata(Some("panoptes.frames"), Duration::from_secs(10))
        .expect("metadata");
    let mut advertised: Vec<(String, i32)> = md
        .brokers()
        .iter()
        .map(|br| (br.host().to_string(), br.port()))
        .collect();
    advertised.sort();
    let p = i32::from(port);
    assert_eq!(
        advertised,
        vec![("localhost".into(), p), ("localhost".into(), p + 1)]
    );

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &b.bootstrap)
        .set("broker.address.family", "v4")
        .create()
        .expect("producer");
    for i in 0..10 {
        let payload = format!("frame-{i}");
        producer
            .send(
                BaseRecord::to("panoptes.frames")
                    .partition(i % 2)
                    .key("k")
                    .payload(&payload),
            )
            .expect("enqueue");
    }
    producer.flush(Duration::from_secs(10)).expect("flush");

    let mut tpl = TopicPartitionList::new();
    for partition in 0..2 {
        tpl.add_partition_offset("panoptes.frames", partition, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut got = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while got < 10 && std::time::Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("message");
            assert!(m.payload().is_some_and(|p| p.starts_with(b"frame-")));
            got += 1;
        }
    }
    assert_eq!(got, 10, "messages back through the fronts");
}
