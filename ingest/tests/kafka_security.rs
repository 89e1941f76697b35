//! An ingest node on a secured Kafka link, configured only through its typed `[kafka]`
//! section: frames published over SASL_SSL (SCRAM-SHA-512, the password from
//! `$PANOPTES_KAFKA_PASSWORD`) through the development broker's secure front; and with a wrong password or an untrusted broker certificate, `/readyz`
//! false naming the kind and the reason, `panoptes_ingest_kafka_errors_total{kind}` counting,
//! and the frames that could not be published counted rather than lost silently.

mod common;

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use panoptes_ingest::config::IngestConfig;
use panoptes_runtime::config::KafkaClientConfig;
use panoptes_runtime::config::kafka::{SaslMechanism, SecurityProtocol};
use panoptes_runtime::tls::TlsFiles;
use panoptes_testkit::kafka::{TopicReader, by_camera};
use panoptes_testkit::tls::TestPki;
use panoptes_testkit::{CamSim, DevBroker, Node, ingest, unique_name, wait_until};

const CAMERA: &str = "seccam";

struct Setup {
    pki: TestPki,
    broker: DevBroker,
    topic: String,
}

/// A broker with TLS and SASL fronts, user `ingest` with password `right-pass`.
fn secured_broker() -> Result<Setup> {
    let pki = TestPki::generate()?;
    // The PKI's temporary folder holds the users file and the password files too.
    std::fs::write(pki.path("right"), "right-pass\n")?;
    std::fs::write(pki.path("wrong"), "wrong-pass\n")?;
    let broker = DevBroker::start_sasl_ssl(2, &pki, &[("ingest", "right-pass")])?;
    let topic = unique_name("frames");
    broker.create_topic(&topic, 2)?;
    Ok(Setup { pki, broker, topic })
}

/// The `[kafka]` client section of a node using `password` and trusting `tls`.
fn kafka_section(s: &Setup, tls: TlsFiles, password: &Path) -> KafkaClientConfig {
    let mut k = s.broker.client();
    k.security_protocol = SecurityProtocol::SaslSsl;
    k.tls = tls;
    k.sasl.mechanism = Some(SaslMechanism::ScramSha512);
    k.sasl.username = Some("ingest".into());
    k.sasl.password_file = Some(password.to_path_buf());
    k.properties
        .insert("reconnect.backoff.max.ms".into(), "500".into());
    k
}

fn node_config(s: &Setup, kafka: KafkaClientConfig, sim: Option<&CamSim>) -> IngestConfig {
    let mut c = ingest::config(&unique_name("ingest"), &s.broker.bootstrap, &s.topic);
    c.kafka.client = kafka;
    // Frames that cannot reach the broker fail (and are counted) after 3 s.
    c.kafka.producer.message_timeout = Duration::from_secs(3);
    if let Some(sim) = sim {
        let url = sim.url(CAMERA, None);
        c.cameras = vec![ingest::camera(CAMERA, url, 5, (320, 180), None)];
    }
    c
}

/// Waits until `/readyz` reports the `kafka_client` check failed; returns its detail.
fn wait_unready(node: &Node, timeout: Duration) -> Result<String> {
    wait_until("kafka_client check failing", timeout, || {
        let r = node.get_json("/readyz");
        let check = &r["checks"]["kafka_client"];
        (r["ready"] == false && check["ok"] == false)
            .then(|| check["detail"].as_str().unwrap_or_default().to_string())
    })
}

#[test]
fn ingest_publishes_frames_over_sasl_ssl() -> Result<()> {
    let s = secured_broker()?;
    let sim = CamSim::with_cameras(&[&format!("id={CAMERA},fps=5,width=320,height=180")])?;
    let kafka = kafka_section(&s, s.pki.client(), &s.pki.path("right"));
    // The node takes its password from the environment (no password_file), the test's
    // reader from the file.
    let mut from_env = kafka.clone();
    from_env.sasl.password_file = None;
    let env = [(panoptes_runtime::config::kafka::PASSWORD_ENV, "right-pass")];
    let node = ingest::start(&node_config(&s, from_env, Some(&sim)), &env)?;
    node.wait_ready(Duration::from_secs(20))?;
    node.wait_streaming(CAMERA, Duration::from_secs(20))?;

    let reader = TopicReader::with_config(&kafka, &s.topic)?;
    let mut records = Vec::new();
    reader.read_for(Duration::from_secs(4), &mut records)?;
    let frames = by_camera(&records).get(CAMERA).map_or(0, Vec::len);
    assert!(frames >= 5, "only {frames} frames over SASL_SSL");
    for kind in ["auth", "tls", "fatal"] {
        let series = format!("panoptes_ingest_kafka_errors_total{{kind=\"{kind}\"}}");
        assert_eq!(node.metric(&series), Some(0.0), "{series}");
    }
    Ok(())
}

#[test]
fn wrong_password_and_wrong_ca_make_ingest_unready_with_the_reason() -> Result<()> {
    let s = secured_broker()?;
    let sim = CamSim::with_cameras(&[&format!("id={CAMERA},fps=5,width=320,height=180")])?;

    let kafka = kafka_section(&s, s.pki.client(), &s.pki.path("wrong"));
    let node = ingest::start(&node_config(&s, kafka, Some(&sim)), &[])?;
    let detail = wait_unready(&node, Duration::from_secs(20))?;
    assert!(
        detail.starts_with("auth: SASL authentication failed"),
        "{detail}"
    );
    assert!(detail.contains("Authentication failed"), "{detail}");
    assert!(!detail.contains("wrong-pass"), "{detail}");
    let auth = node.metric("panoptes_ingest_kafka_errors_total{kind=\"auth\"}");
    assert!(auth.unwrap_or(0.0) >= 1.0, "auth errors: {auth:?}");
    // The camera keeps streaming; what it produced meanwhile fails after message_timeout
    // and is counted.
    node.wait_streaming(CAMERA, Duration::from_secs(20))?;
    let timed_out = "panoptes_ingest_publish_errors_total{reason=\"timed_out\"}";
    wait_until(
        "undelivered frames counted",
        Duration::from_secs(20),
        || node.metric(timed_out).filter(|&v| v >= 1.0),
    )?;
    let (status, _) =
        panoptes_testkit::get_text(&format!("{}/readyz", node.http)).unwrap_or((0, String::new()));
    assert_eq!(status, 503);
    let log = node.proc.log_text();
    assert!(!log.contains("wrong-pass"), "the password reached the log");

    let kafka = kafka_section(&s, s.pki.client_wrong_ca(), &s.pki.path("right"));
    let node = ingest::start(&node_config(&s, kafka, None), &[])?;
    let detail = wait_unready(&node, Duration::from_secs(20))?;
    assert!(detail.starts_with("tls: TLS failed"), "{detail}");
    assert!(detail.contains("certificate verify failed"), "{detail}");
    let tls = node.metric("panoptes_ingest_kafka_errors_total{kind=\"tls\"}");
    assert!(tls.unwrap_or(0.0) >= 1.0, "tls errors: {tls:?}");
    Ok(())
}

#[test]
fn a_sasl_section_without_a_password_refuses_to_start() -> Result<()> {
    let s = secured_broker()?;
    let mut kafka = kafka_section(&s, s.pki.client(), &s.pki.path("right"));
    kafka.sasl.password_file = Some(s.pki.path("missing"));
    let log = panoptes_testkit::node::expect_refusal(
        "ingest-nopass",
        "panoptes-ingest",
        &node_config(&s, kafka, None),
    )?;
    assert!(log.contains("kafka.sasl"), "{log}");
    assert!(log.contains("cannot read"), "{log}");
    Ok(())
}

/// Highest sequence number of `CAMERA` on `topic` so far.
fn max_seq(kafka: &KafkaClientConfig, topic: &str) -> Result<u64> {
    let reader = TopicReader::with_config(kafka, topic)?;
    let mut records = Vec::new();
    reader.read_for(Duration::from_secs(2), &mut records)?;
    Ok(by_camera(&records)
        .get(CAMERA)
        .and_then(|r| {
            r.iter()
                .filter_map(|r| r.headers.as_ref().ok())
                .map(|h| h.seq)
                .max()
        })
        .unwrap_or(0))
}

#[test]
fn a_fatal_producer_error_replaces_the_producer_and_is_counted() -> Result<()> {
    let broker = DevBroker::start(1)?;
    let topic = broker.frames_topic(1)?;
    let sim = CamSim::with_cameras(&[&format!("id={CAMERA},fps=5,width=320,height=180")])?;
    let mut c = ingest::config(&unique_name("ingest"), &broker.bootstrap, &topic);
    c.cameras = vec![ingest::camera(
        CAMERA,
        sim.url(CAMERA, None),
        5,
        (320, 180),
        None,
    )];
    let node = ingest::start(&c, &[])?;
    node.wait_ready(Duration::from_secs(20))?;
    node.wait_streaming(CAMERA, Duration::from_secs(20))?;
    let kafka = broker.client();
    let before = max_seq(&kafka, &topic)?;

    // The next Produce request fails with OUT_OF_ORDER_SEQUENCE_NUMBER while it is the
    // only one in flight: librdkafka raises a fatal idempotence error.
    broker.fail_next_produce_fatally()?;
    wait_until("the producer replaced", Duration::from_secs(20), || {
        node.metric("panoptes_ingest_kafka_client_rebuilds_total")
            .filter(|&v| v >= 1.0)
    })?;
    let fatal = node.metric("panoptes_ingest_kafka_errors_total{kind=\"fatal\"}");
    assert!(fatal.unwrap_or(0.0) >= 1.0, "fatal errors: {fatal:?}");
    node.wait_ready(Duration::from_secs(10))?;
    // Frames flow again through the fresh producer.
    wait_until(
        "frames after the replacement",
        Duration::from_secs(20),
        || max_seq(&kafka, &topic).ok().filter(|&s| s >= before + 10),
    )?;
    Ok(())
}
