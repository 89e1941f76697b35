//! Integration tests against the real `panoptes-devbroker` binary.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Control, DevBroker};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const T: Duration = Duration::from_secs(20);

fn producer(bootstrap: &str, extra: &[(&str, &str)]) -> FutureProducer {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    cfg.create().expect("producer")
}

fn consumer(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    extra: &[(&str, &str)],
) -> StreamConsumer {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-{topic}"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest");
    for (k, v) in extra {
        cfg.set(*k, *v);
    }
    let c: StreamConsumer = cfg.create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    c.assign(&tpl).unwrap();
    c
}

fn create_topic(b: &DevBroker, name: &str, partitions: i32) {
    let (s, v) = b.json(
        "POST",
        "/topics",
        Some(&format!(r#"{{"name":"{name}","partitions":{partitions}}}"#)),
    );
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["partitions"], partitions);
}

/// Receives messages until `n` arrived or the deadline passed; returns (partition, offset,
/// payload, headers).
async fn receive(
    c: &StreamConsumer,
    n: usize,
    within: Duration,
) -> Vec<(i32, i64, String, Vec<(String, String)>)> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c.recv()).await {
            Err(_) => break,
            Ok(Err(e)) => panic!("consume error: {e}"),
            Ok(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((
                    m.partition(),
                    m.offset(),
                    String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                    headers,
                ));
            }
        }
    }
    out
}

/// (1) 1000 messages through an idempotent producer, back in order per partition, headers intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_roundtrip_in_order_with_headers() {
    let b = common::start(&["--no-default-topics"]);
    create_topic(&b, "t.roundtrip", 4);
    let p = producer(&b.bootstrap, &[]);

    let mut pending = Vec::new();
    for i in 0..1000u32 {
        let payload = format!("frame-{i}");
        let key = i.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "seq",
                value: Some(&key),
            })
            .insert(Header {
                key: "camera",
                value: Some(&format!("cam-{}", i % 7)),
            });
        let rec = FutureRecord::to("t.roundtrip")
            .partition((i % 4) as i32)
            .key(&key)
            .payload(&payload)
            .headers(headers);
        pending.push(p.send_result(rec).map_err(|(e, _)| e).expect("enqueue"));
    }
    for (i, f) in pending.into_iter().enumerate() {
        let d = tokio::time::timeout(T, f)
            .await
            .expect("delivery timeout")
            .expect("producer alive")
            .map_err(|(e, _)| e)
            .expect("delivery");
        assert_eq!(d.partition, (i % 4) as i32);
        assert_eq!(
            d.offset,
            (i / 4) as i64,
            "idempotent producer keeps per-partition order"
        );
    }

    let c = consumer(&b.bootstrap, "t.roundtrip", 4, &[]);
    let got = receive(&c, 1000, T).await;
    assert_eq!(got.len(), 1000);
    let mut last: HashMap<i32, i64> = HashMap::new();
    for (part, off, payload, headers) in got {
        let seq: u32 = headers
            .iter()
            .find(|(k, _)| k == "seq")
            .unwrap()
            .1
            .parse()
            .unwrap();
        assert_eq!(payload, format!("frame-{seq}"));
        assert_eq!(part, (seq % 4) as i32);
        assert_eq!(off, i64::from(seq / 4));
        assert_eq!(headers[0].0, "seq");
        assert_eq!(
            headers[1],
            ("camera".to_owned(), format!("cam-{}", seq % 7))
        );
        let prev = last.insert(part, off).unwrap_or(-1);
        assert_eq!(off, prev + 1, "in order per partition");
    }
    assert!(last.values().all(|&o| o == 249));
}

/// (2) Topics have the requested partition counts, replication min(3, brokers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_have_requested_partitions() {
    let b = common::start(&[
        "--brokers",
        "2",
        "--default-partitions",
        "6",
        "--topic",
        "extra.topic:7",
    ]);
    create_topic(&b, "via.api", 3);
    let expected = [
        ("panoptes.frames", 6),
        ("panoptes.detections", 6),
        ("panoptes.detections.shadow", 6),
        ("panoptes.frames.dlq", 4),
        ("extra.topic", 7),
        ("via.api", 3),
    ];
    let expected: [(&str, i32); 6] = expected;

    let (s, v) = b.json("GET", "/topics", None);
    assert_eq!(s, 200);
    let listed: HashMap<String, i64> = v["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_owned(),
                t["partitions"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed.len(), expected.len());

    let client: rdkafka::producer::BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &b.bootstrap)
        .create()
        .unwrap();
    let md = client
        .client()
        .fetch_metadata(None, Duration::from_secs(10))
        .unwrap();
    assert_eq!(md.brokers().len(), 2);
    for (name, parts) in expected {
        assert_eq!(listed[name], i64::from(parts), "{name} in GET /topics");
        let t = md
            .topics()
            .iter()
            .find(|t| t.name() == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert_eq!(t.partitions().len(), parts as usize, "{name}");
        for p in t.partitions() {
            assert_eq!(p.replicas().len(), 2, "replication factor min(3, brokers)");
        }
    }
}

/// (3) All brokers down: produce times out or stays queued; up: delivered, data kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn brokers_down_and_up_keep_data() {
    let b = common::start(&["--no-default-topics", "--topic", "t.outage:2"]);
    // librdkafka backs off reconnects up to reconnect.backoff.max.ms (default 10 s; about 8 s
    // observed between POST /up and delivery with defaults); tests keep it short.
    let p = producer(
        &b.bootstrap,
        &[
            ("message.timeout.ms", "30000"),
            ("reconnect.backoff.max.ms", "500"),
        ],
    );
    for i in 0..10 {
        let payload = format!("before-{i}");
        let rec = FutureRecord::<(), _>::to("t.outage")
            .partition(i % 2)
            .payload(&payload);
        tokio::time::timeout(T, p.send(rec, Duration::from_secs(5)))
            .await
            .unwrap()
            .unwrap();
    }

    let (s, v) = b.json("POST", "/down", None);
    assert_eq!(s, 200);
    assert!(
        v["brokers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["up"] == false)
    );

    // A producer with a short message timeout fails while the brokers are down.
    let short = producer(&b.bootstrap, &[("message.timeout.ms", "1500")]);
    let rec = FutureRecord::<(), _>::to("t.outage")
        .partition(0)
        .payload("lost");
    let r = tokio::time::timeout(T, short.send(rec, Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(
        r.is_err(),
        "delivery must fail while all brokers are down: {r:?}"
    );

    // The long-timeout producer queues.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let payload = format!("during-{i}");
            let rec = FutureRecord::<(), _>::to("t.outage")
                .partition(i % 2)
                .payload(&payload);
            p.send(rec, Duration::from_secs(5)).await
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        tasks.iter().all(|t| !t.is_finished()),
        "nothing delivered while down"
    );

    let up_at = Instant::now();
    let (s, _) = b.json("POST", "/up", None);
    assert_eq!(s, 200);
    for t in tasks {
        tokio::time::timeout(T, t)
            .await
            .unwrap()
            .unwrap()
            .expect("queued message delivered after up");
    }
    let took = up_at.elapsed();
    eprintln!("queued messages delivered {took:?} after POST /up");
    assert!(took < Duration::from_secs(5), "reconnect took {took:?}");

    let c = consumer(&b.bootstrap, "t.outage", 2, &[]);
    let got = receive(&c, 20, T).await;
    let mut payloads: Vec<String> = got.into_iter().map(|m| m.2).collect();
    payloads.sort();
    let mut want: Vec<String> = (0..10)
        .flat_map(|i| [format!("before-{i}"), format!("during-{i}")])
        .collect();
    want.sort();
    assert_eq!(
        payloads, want,
        "data kept across down/up, nothing lost or duplicated"
    );
}

/// (4) Transactional producer: init/begin/commit/abort work, and a `read_committed` consumer
/// sees the committed records.
///
/// Known mock limit, pinned here so that a librdkafka upgrade that fixes it is noticed: the
/// mock writes no transaction markers and reports no aborted transactions (its last stable
/// offset is the high watermark), so records of an aborted transaction and of a still-open
/// one are visible to `read_committed` consumers too. Real Kafka hides them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_and_abort() {
    let b = common::start(&["--no-default-topics", "--topic", "t.txn:1"]);
    let p = producer(&b.bootstrap, &[("transactional.id", "devbroker-test-txn")]);
    p.init_transactions(T).expect("init_transactions");

    let send = |tag: &'static str| {
        let p = p.clone();
        async move {
            for i in 0..5 {
                let payload = format!("{tag}-{i}");
                let rec = FutureRecord::<(), _>::to("t.txn")
                    .partition(0)
                    .payload(&payload);
                tokio::time::timeout(T, p.send(rec, Duration::from_secs(5)))
                    .await
                    .unwrap()
                    .unwrap();
            }
        }
    };

    p.begin_transaction().unwrap();
    send("committed").await;
    p.commit_transaction(T).expect("commit");

    p.begin_transaction().unwrap();
    send("aborted").await;
    p.abort_transaction(T).expect("abort");

    p.begin_transaction().unwrap();
    send("after").await;
    p.commit_transaction(T).expect("commit 2");

    // A transaction left open while the consumer reads.
    p.begin_transaction().unwrap();
    send("open").await;

    let c = consumer(
        &b.bootstrap,
        "t.txn",
        1,
        &[("isolation.level", "read_committed")],
    );
    let got = receive(&c, 20, Duration::from_secs(10)).await;
    let offsets: Vec<i64> = got.iter().map(|m| m.1).collect();
    let payloads: Vec<String> = got.into_iter().map(|m| m.2).collect();
    eprintln!("read_committed consumer saw: {payloads:?} at offsets {offsets:?}");
    for i in 0..5 {
        assert!(payloads.contains(&format!("committed-{i}")), "{payloads:?}");
        assert!(payloads.contains(&format!("after-{i}")), "{payloads:?}");
    }
    let committed_first = payloads.iter().position(|p| p == "committed-0").unwrap();
    let after_first = payloads.iter().position(|p| p == "after-0").unwrap();
    assert!(
        committed_first < after_first,
        "log order kept: {payloads:?}"
    );

    // The mock limit: aborted and open transactional records leak through read_committed,
    // and no offsets are taken by transaction control markers.
    let leaked = payloads
        .iter()
        .filter(|p| p.starts_with("aborted") || p.starts_with("open"))
        .count();
    assert_eq!(
        leaked, 10,
        "mock behaviour changed (read_committed now hides aborted/open records?): update the \
         devbroker docs and this test: {payloads:?}"
    );
    assert_eq!(
        offsets,
        (0..20).collect::<Vec<i64>>(),
        "no control-marker offsets in the mock"
    );
    p.abort_transaction(T).expect("abort open transaction");
}

/// (5) Bad control input gives 4xx with a JSON error.
#[test]
fn bad_control_input_is_rejected() {
    let b = common::start(&["--no-default-topics", "--brokers", "3"]);
    assert_eq!(b.http("GET", "/healthz", None).0, 200);

    let bad = [
        (
            "POST",
            "/topics",
            Some(r#"{"name":"bad name!","partitions":3}"#),
            400,
        ),
        (
            "POST",
            "/topics",
            Some(r#"{"name":"","partitions":3}"#),
            400,
        ),
        (
            "POST",
            "/topics",
            Some(r#"{"name":"ok","partitions":0}"#),
            400,
        ),
        (
            "POST",
            "/topics",
            Some(r#"{"name":"ok","partitions":1025}"#),
            400,
        ),
        // Growable topics need a broker started with --grow.
        (
            "POST",
            "/topics",
            Some(r#"{"name":"ok","partitions":1,"max_partitions":4}"#),
            400,
        ),
        (
            "POST",
            "/topics",
            Some(r#"{"name":"ok","partitions":-3}"#),
            400,
        ),
        ("POST", "/topics", Some(r#"{"name":"ok"}"#), 422),
        ("POST", "/topics", Some("not json"), 400),
        ("POST", "/brokers/9/down", None, 404),
        ("POST", "/brokers/0/up", None, 404),
        ("POST", "/brokers/abc/down", None, 404),
        ("GET", "/nope", None, 404),
    ];
    for (m, path, body, want) in bad {
        let (s, v) = b.json(m, path, body);
        assert_eq!(s, want, "{m} {path} {body:?}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }
    let (_, v) = b.json("POST", "/brokers/9/down", None);
    assert!(
        v["error"].as_str().unwrap().contains("unknown broker"),
        "{v}"
    );

    // Creating the same topic twice: 409.
    assert_eq!(
        b.http("POST", "/topics", Some(r#"{"name":"dup","partitions":2}"#))
            .0,
        201
    );
    assert_eq!(
        b.http("POST", "/topics", Some(r#"{"name":"dup","partitions":2}"#))
            .0,
        409
    );
    // One broker down and up by id works.
    let (s, v) = b.json("POST", "/brokers/2/down", None);
    assert_eq!(s, 200);
    assert_eq!(v["brokers"][1]["up"], false);
    assert_eq!(v["brokers"][0]["up"], true);
    assert_eq!(b.http("POST", "/brokers/2/up", None).0, 200);
}

/// The process exits cleanly on SIGTERM and on stdin EOF when asked to.
#[test]
fn exits_on_sigterm_and_stdin_eof() {
    fn wait_exit(b: &mut DevBroker) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(s) = b.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "devbroker did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    let mut b = common::start(&["--no-default-topics"]);
    let pid = b.child.pid().to_string();
    let st = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(wait_exit(&mut b).success());

    let mut b = common::start(&["--no-default-topics", "--exit-on-stdin-eof"]);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        b.child.try_wait().unwrap().is_none(),
        "still running while stdin is open"
    );
    b.child.close_stdin();
    assert!(wait_exit(&mut b).success());
}
