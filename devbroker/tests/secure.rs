//! The secure front against real librdkafka clients: TLS handshakes with the right and a
//! wrong CA, mutual TLS, and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) over TLS with the
//! right and a wrong password or an unoffered mechanism. Clients are configured from the
//! shared `KafkaClientConfig` every node uses; round trips produce and consume through
//! every broker's front.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use panoptes_runtime::config::KafkaClientConfig;
use panoptes_runtime::config::kafka::{SaslMechanism, SecurityProtocol};
use panoptes_testkit::tls::TestPki;
use panoptes_testkit::{BrokerSecurity, DevBroker, unique_name};
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const PARTITIONS: i32 = 2;
const T: Duration = Duration::from_secs(20);

/// Every error librdkafka reports, as (code, reason).
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<(RDKafkaErrorCode, String)>>>);

impl Errors {
    fn has(&self, code: RDKafkaErrorCode) -> Option<String> {
        let errors = self.0.lock().unwrap();
        errors
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, r)| r.clone())
    }
}

impl ClientContext for Errors {
    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code().unwrap_or(RDKafkaErrorCode::Fail);
        self.0.lock().unwrap().push((code, reason.to_string()));
    }
}

impl ProducerContext for Errors {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

impl ConsumerContext for Errors {}

fn config(kafka: &KafkaClientConfig) -> ClientConfig {
    let mut c: ClientConfig = kafka
        .connection_properties()
        .expect("valid client config")
        .into_iter()
        .collect();
    c.set("reconnect.backoff.max.ms", "500");
    c
}

/// Produces to every partition, then reads it all back, through the fronts.
fn round_trip(broker: &DevBroker, kafka: &KafkaClientConfig) {
    let topic = unique_name("secure");
    broker.create_topic(&topic, PARTITIONS as u32).unwrap();
    let errors = Errors::default();
    let producer: BaseProducer<Errors> = config(kafka)
        .set("linger.ms", "1")
        .create_with_context(errors.clone())
        .unwrap();
    for p in 0..PARTITIONS {
        let payload = format!("hello {p}");
        producer
            .send(
                BaseRecord::to(&topic)
                    .partition(p)
                    .key("k")
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer
        .flush(T)
        .unwrap_or_else(|e| panic!("flush: {e}; client errors: {:?}", errors.0.lock().unwrap()));

    let consumer: BaseConsumer<Errors> = config(kafka)
        .set("group.id", unique_name("g"))
        .set("enable.auto.commit", "false")
        .create_with_context(errors.clone())
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + T;
    while got.len() < PARTITIONS as usize && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            got.push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    got.sort();
    assert_eq!(
        got,
        vec!["hello 0", "hello 1"],
        "errors: {:?}",
        errors.0.lock().unwrap()
    );
}

/// Polls a producer that tries to send until librdkafka reports `code`; returns the reason.
fn expect_error(kafka: &KafkaClientConfig, code: RDKafkaErrorCode) -> String {
    expect_one_of(kafka, &[code]).1
}

/// Polls a producer that tries to send until librdkafka reports one of `codes`.
fn expect_one_of(
    kafka: &KafkaClientConfig,
    codes: &[RDKafkaErrorCode],
) -> (RDKafkaErrorCode, String) {
    let errors = Errors::default();
    let producer: BaseProducer<Errors> = config(kafka)
        .set("message.timeout.ms", "20000")
        .create_with_context(errors.clone())
        .unwrap();
    producer
        .send(BaseRecord::to("panoptes.frames").key("k").payload("x"))
        .map_err(|(e, _)| e)
        .unwrap();
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        producer.poll(Duration::from_millis(100));
        if let Some(found) = codes.iter().find_map(|&c| errors.has(c).map(|r| (c, r))) {
            // Nothing got through: the record is still waiting, undelivered.
            assert_eq!(producer.in_flight_count(), 1);
            return found;
        }
    }
    panic!(
        "no {codes:?} error within {T:?}; got {:?}",
        errors.0.lock().unwrap()
    );
}

fn tls_client(broker: &DevBroker, tls: panoptes_runtime::tls::TlsFiles) -> KafkaClientConfig {
    let mut c = broker.client();
    c.security_protocol = SecurityProtocol::Ssl;
    c.tls = tls;
    c
}

#[test]
fn tls_round_trip_and_a_wrong_ca_is_refused() {
    let pki = TestPki::generate().unwrap();
    let broker = DevBroker::start_secured(
        2,
        &BrokerSecurity {
            tls: Some(pki.server()),
            ..BrokerSecurity::default()
        },
    )
    .unwrap();
    round_trip(&broker, &tls_client(&broker, pki.client()));

    let reason = expect_error(
        &tls_client(&broker, pki.client_wrong_ca()),
        RDKafkaErrorCode::SSL,
    );
    assert!(reason.contains("certificate verify failed"), "{reason}");

    // A plaintext client on the TLS listener does not get through either.
    let errors = Errors::default();
    let plain: BaseProducer<Errors> = config(&broker.client())
        .create_with_context(errors.clone())
        .unwrap();
    assert!(
        plain
            .client()
            .fetch_metadata(None, Duration::from_secs(3))
            .is_err()
    );
}

#[test]
fn mutual_tls_requires_a_client_certificate_from_the_ca() {
    let pki = TestPki::generate().unwrap();
    let broker = DevBroker::start_secured(
        2,
        &BrokerSecurity {
            tls: Some(pki.server_mutual()),
            ..BrokerSecurity::default()
        },
    )
    .unwrap();
    round_trip(&broker, &tls_client(&broker, pki.client_mutual()));
    // Without a certificate the server ends the handshake (with TLS 1.3 after the client
    // considers it done), so librdkafka reports SSL or a broken transport; either way
    // nothing is delivered.
    let (code, reason) = expect_one_of(
        &tls_client(&broker, pki.client()),
        &[
            RDKafkaErrorCode::SSL,
            RDKafkaErrorCode::BrokerTransportFailure,
        ],
    );
    eprintln!("without a client certificate: {code:?}: {reason}");
}

struct SaslSetup {
    pki: TestPki,
    broker: DevBroker,
    dir: tempfile::TempDir,
}

fn sasl_setup(mechanisms: Option<&str>) -> SaslSetup {
    let pki = TestPki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(
        &users,
        "# dev users\ningest:ingest-pass:with-colon\nworker:w0rker\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("right"), "ingest-pass:with-colon\n").unwrap();
    std::fs::write(dir.path().join("wrong"), "not-the-password\n").unwrap();
    let broker = DevBroker::start_secured(
        2,
        &BrokerSecurity {
            tls: Some(pki.server()),
            sasl_users_file: Some(users),
            sasl_mechanisms: mechanisms.map(str::to_string),
        },
    )
    .unwrap();
    SaslSetup { pki, broker, dir }
}

fn sasl_client(s: &SaslSetup, mechanism: SaslMechanism, password: &str) -> KafkaClientConfig {
    let mut c = tls_client(&s.broker, s.pki.client());
    c.security_protocol = SecurityProtocol::SaslSsl;
    c.sasl.mechanism = Some(mechanism);
    c.sasl.username = Some("ingest".into());
    c.sasl.password_file = Some(s.dir.path().join(password));
    c
}

#[test]
fn sasl_ssl_plain_and_scram_work_and_a_wrong_password_fails() {
    let s = sasl_setup(None);
    for m in [
        SaslMechanism::Plain,
        SaslMechanism::ScramSha256,
        SaslMechanism::ScramSha512,
    ] {
        round_trip(&s.broker, &sasl_client(&s, m, "right"));
    }
    for m in [SaslMechanism::Plain, SaslMechanism::ScramSha512] {
        let reason = expect_error(
            &sasl_client(&s, m, "wrong"),
            RDKafkaErrorCode::Authentication,
        );
        assert!(reason.contains("Authentication failed"), "{m:?}: {reason}");
        assert!(!reason.contains("not-the-password"), "{reason}");
    }
}

#[test]
fn an_unoffered_mechanism_is_refused() {
    let s = sasl_setup(Some("SCRAM-SHA-512"));
    round_trip(
        &s.broker,
        &sasl_client(&s, SaslMechanism::ScramSha512, "right"),
    );
    let reason = expect_error(
        &sasl_client(&s, SaslMechanism::Plain, "right"),
        RDKafkaErrorCode::Authentication,
    );
    assert!(reason.contains("PLAIN"), "{reason}");
}
