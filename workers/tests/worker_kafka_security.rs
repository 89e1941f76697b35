//! A worker on a secured Kafka link, configured only through its typed `[kafka]` section:
//! frames consumed and detection records published (acknowledged) over SASL_SSL
//! (SCRAM-SHA-256) through the development broker's secure front; with a wrong password the
//! worker names the kind (`auth`) and the fix in its log and does not start.

mod common;

use std::time::Duration;

use anyhow::Result;
use common::node::start_worker;
use panoptes_runtime::config::KafkaClientConfig;
use panoptes_runtime::config::kafka::{SaslMechanism, SecurityProtocol};
use panoptes_testkit::kafka::{FrameProducer, frame_headers, test_jpeg};
use panoptes_testkit::tls::TestPki;
use panoptes_testkit::{DevBroker, Topics, unique_name, wait_until};
use panoptes_testkit_stack::worker;

fn secured() -> Result<(TestPki, DevBroker, Topics)> {
    let pki = TestPki::generate()?;
    std::fs::write(pki.path("right"), "worker-pass\n")?;
    std::fs::write(pki.path("wrong"), "not-it\n")?;
    let broker = DevBroker::start_sasl_ssl(1, &pki, &[("worker", "worker-pass")])?;
    let t = broker.create_topics(1)?;
    Ok((pki, broker, t))
}

fn kafka(pki: &TestPki, broker: &DevBroker, password: &str) -> KafkaClientConfig {
    let mut k = broker.client();
    k.security_protocol = SecurityProtocol::SaslSsl;
    k.tls = pki.client();
    k.sasl.mechanism = Some(SaslMechanism::ScramSha256);
    k.sasl.username = Some("worker".into());
    k.sasl.password_file = Some(pki.path(password));
    k
}

/// Sum of every series of `name` in a metrics text.
fn total(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[test]
fn worker_consumes_and_publishes_over_sasl_ssl() -> Result<()> {
    let (pki, broker, t) = secured()?;
    let k = kafka(&pki, &broker, "right");
    let producer = FrameProducer::with_config(&k, &[])?;
    let jpeg = test_jpeg(320, 180);
    for seq in 0..6 {
        let h = frame_headers("cam0", seq, (320, 180), Duration::ZERO);
        producer.send(&t.frames, 0, &h, &jpeg)?;
    }
    producer.flush()?;

    let model = &common::models().reference;
    let w = start_worker(&unique_name("w"), &broker.bootstrap, &t, "g", model, |c| {
        c.kafka.client = k.clone();
    })?;
    w.wait_ready(Duration::from_secs(30))?;
    wait_until("6 records acknowledged", Duration::from_secs(30), || {
        (total(&w.metrics(), "panoptes_worker_records_total{") >= 6.0).then_some(())
    })?;
    let m = w.metrics();
    assert_eq!(
        total(&m, "panoptes_worker_kafka_errors_total{kind=\"auth\"}"),
        0.0
    );
    assert_eq!(
        total(&m, "panoptes_worker_kafka_errors_total{kind=\"tls\"}"),
        0.0
    );
    Ok(())
}

#[test]
fn worker_with_a_wrong_password_names_the_kind_and_stops() -> Result<()> {
    let (pki, broker, t) = secured()?;
    let model = &common::models().reference;
    let (m, manifest) = (&model.model_path, &model.manifest_path);
    let mut c = worker::config(&unique_name("w"), &broker.bootstrap, &t, "g", m, manifest);
    c.kafka.client = kafka(&pki, &broker, "wrong");
    let (mut proc, _file) = panoptes_testkit::node::spawn(
        "worker-wrong-pass",
        "panoptes-worker",
        &c,
        &[("RUST_BACKTRACE", "0")],
    )?;
    wait_until("the worker gives up", Duration::from_secs(40), || {
        (!proc.is_running()).then_some(())
    })?;
    let log = proc.log_text();
    assert!(
        log.contains("kind=\"auth\"") || log.contains("kind=auth"),
        "{log}"
    );
    assert!(
        log.contains("SASL authentication failed: check kafka.sasl"),
        "{log}"
    );
    assert!(!log.contains("not-it"), "the password reached the log");
    Ok(())
}
