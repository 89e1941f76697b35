//! The checker reads a secured cluster (SASL_SSL through the development broker's secure
//! front) when given the shared Kafka client config, as `panoptes-check --kafka-config` does.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use panoptes_checker::{Checker, ReaderConfig};
use panoptes_runtime::config::kafka::{SaslMechanism, SecurityProtocol};
use panoptes_testkit::DevBroker;
use panoptes_testkit::kafka::{FrameProducer, frame_headers, test_jpeg};
use panoptes_testkit::tls::TestPki;

#[test]
fn the_checker_reads_frames_over_sasl_ssl() -> Result<()> {
    let pki = TestPki::generate()?;
    std::fs::write(pki.path("password"), "check-pass\n")?;
    let broker = DevBroker::start_sasl_ssl(2, &pki, &[("checker", "check-pass")])?;
    let t = broker.create_topics(2)?;
    let mut kafka = broker.client();
    kafka.security_protocol = SecurityProtocol::SaslSsl;
    kafka.tls = pki.client();
    kafka.sasl.mechanism = Some(SaslMechanism::ScramSha256);
    kafka.sasl.username = Some("checker".into());
    kafka.sasl.password_file = Some(pki.path("password"));

    let producer = FrameProducer::with_config(&kafka, &[])?;
    let jpeg = test_jpeg(64, 48);
    for seq in 0..10 {
        let h = frame_headers("cam0", seq, (64, 48), Duration::ZERO);
        producer.send(&t.frames, 0, &h, &jpeg)?;
    }
    producer.flush()?;

    let mut config = ReaderConfig::new("unused:1");
    config.kafka = kafka;
    config.frames_topic = t.frames.clone();
    config.detections_topic = t.detections.clone();
    config.dlq_topic = t.dlq.clone();
    let checker = Checker::start(config)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while checker.progress().frames < 10 {
        if Instant::now() > deadline || checker.is_finished() {
            bail!("checker read {:?} over SASL_SSL", checker.progress());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    checker.finish()?;
    Ok(())
}
