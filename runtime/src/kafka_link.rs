//! What a node knows about its link to Kafka beyond "the broker answered": errors librdkafka
//! reports on its own (through a client context's `error` callback), classified into a
//! bounded set of kinds an operator can act on, counted, and turned into readiness.
//!
//! Contract:
//! - [`KafkaErrorKind::from_code`] classifies a librdkafka error code (`rd_kafka_resp_err_t`,
//!   the numbers `rdkafka::types::RDKafkaErrorCode` carries) into one of [`ERROR_KINDS`];
//!   every report increments `panoptes_<component>_kafka_errors_total{kind}`.
//! - `auth` (SASL failed), `tls` (handshake, certificate, CA), `authorization` (an ACL
//!   refused the principal) and `fatal` (the client can no longer be used, e.g. fatal
//!   idempotence or a fenced producer) set the readiness check [`CHECK`] false with the kind
//!   and librdkafka's reason. The first three clear on [`KafkaLink::connected`] (the node's
//!   broker probe succeeded, so the credentials work again); `fatal` clears only on
//!   [`KafkaLink::recovered`] (the node replaced the client), which counts
//!   `panoptes_<component>_kafka_client_rebuilds_total`.
//! - `transport` and `other` errors are counted and logged but leave readiness to the
//!   node's broker probe: a broker restarting is routine, a wrong password is not.
//!
//! This module does not link librdkafka: the node's client context passes the numeric code
//! (`code as i32`) and the reason string. Reasons come from librdkafka and never contain
//! the SASL password.

use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, IntCounterVec, Registry};

use crate::health::Readiness;

/// Name of the readiness check this module owns.
pub const CHECK: &str = "kafka_client";

/// Every value of the `kind` label, in a fixed list (bounded label set).
pub const ERROR_KINDS: &[&str] = &[
    "auth",
    "tls",
    "authorization",
    "fatal",
    "transport",
    "other",
];

/// What kind of problem a librdkafka error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaErrorKind {
    /// SASL authentication failed (wrong password, user or mechanism).
    Auth,
    /// TLS failed (unknown CA, refused client certificate, handshake).
    Tls,
    /// The broker refused an operation for this principal (ACLs).
    Authorization,
    /// The client instance is unusable (fatal idempotence/transaction error, fenced).
    Fatal,
    /// A connection broke or no broker is reachable (often transient).
    Transport,
    /// Anything else.
    Other,
}

impl KafkaErrorKind {
    /// Classifies a librdkafka error code (`rd_kafka_resp_err_t`).
    pub fn from_code(code: i32) -> Self {
        match code {
            // __AUTHENTICATION, UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE,
            // SASL_AUTHENTICATION_FAILED
            -169 | 33 | 34 | 58 => KafkaErrorKind::Auth,
            // __SSL
            -181 => KafkaErrorKind::Tls,
            // TOPIC_, GROUP_, CLUSTER_, TRANSACTIONAL_ID_, DELEGATION_TOKEN_AUTHORIZATION_FAILED
            29 | 30 | 31 | 53 | 65 => KafkaErrorKind::Authorization,
            // __FATAL, __FENCED, INVALID_PRODUCER_EPOCH, PRODUCER_FENCED
            -150 | -144 | 47 | 90 => KafkaErrorKind::Fatal,
            // __TRANSPORT, __RESOLVE, __ALL_BROKERS_DOWN
            -195 | -193 | -187 => KafkaErrorKind::Transport,
            _ => KafkaErrorKind::Other,
        }
    }

    /// Classifies an error with librdkafka's reason: a broken transport whose reason is a
    /// TLS alert or certificate failure (e.g. the broker refused the client certificate,
    /// which TLS 1.3 reports after the client's side of the handshake) is `tls`.
    pub fn classify(code: i32, reason: &str) -> Self {
        let kind = Self::from_code(code);
        let tls_words = ["SSL", "certificate", "TLS handshake"];
        if kind == KafkaErrorKind::Transport && tls_words.iter().any(|w| reason.contains(w)) {
            return KafkaErrorKind::Tls;
        }
        kind
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            KafkaErrorKind::Auth => "auth",
            KafkaErrorKind::Tls => "tls",
            KafkaErrorKind::Authorization => "authorization",
            KafkaErrorKind::Fatal => "fatal",
            KafkaErrorKind::Transport => "transport",
            KafkaErrorKind::Other => "other",
        }
    }

    /// Whether this kind makes the node not ready (an operator must act).
    pub fn blocks_readiness(self) -> bool {
        matches!(
            self,
            KafkaErrorKind::Auth
                | KafkaErrorKind::Tls
                | KafkaErrorKind::Authorization
                | KafkaErrorKind::Fatal
        )
    }

    /// What the operator should look at, for the readiness detail and the log.
    pub fn hint(self) -> &'static str {
        match self {
            KafkaErrorKind::Auth => {
                "SASL authentication failed: check kafka.sasl (mechanism, username, password file)"
            }
            KafkaErrorKind::Tls => {
                "TLS failed: check kafka.tls (ca_file trusts the brokers; client cert and key)"
            }
            KafkaErrorKind::Authorization => "the cluster's ACLs refuse this principal",
            KafkaErrorKind::Fatal => "the Kafka client hit a fatal error and must be replaced",
            KafkaErrorKind::Transport => "a broker connection failed",
            KafkaErrorKind::Other => "Kafka client error",
        }
    }
}

/// The last error that made the node not ready.
#[derive(Debug, Clone)]
struct Blocking {
    kind: KafkaErrorKind,
}

struct Inner {
    errors: IntCounterVec,
    rebuilds: IntCounter,
    readiness: Readiness,
    blocking: Mutex<Option<Blocking>>,
}

/// A node's Kafka link state: the error counter and the [`CHECK`] readiness check. Cheap
/// to clone; every client context of the node shares one.
#[derive(Clone)]
pub struct KafkaLink {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KafkaLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLink").finish_non_exhaustive()
    }
}

impl KafkaLink {
    /// Registers `panoptes_<component>_kafka_errors_total{kind}` in `registry` (every kind
    /// at 0, so a dashboard sees the series before the first error) and sets [`CHECK`]
    /// ready in `readiness`.
    pub fn new(
        registry: &Registry,
        component: &str,
        readiness: Readiness,
    ) -> Result<Self, prometheus::Error> {
        let errors = crate::metrics::counter_vec(
            registry,
            &format!("panoptes_{component}_kafka_errors_total"),
            "Errors reported by the Kafka client library, by kind (auth, tls, authorization, \
             fatal, transport, other).",
            &["kind"],
        )?;
        for kind in ERROR_KINDS {
            errors.with_label_values(&[kind]);
        }
        let rebuilds = crate::metrics::counter(
            registry,
            &format!("panoptes_{component}_kafka_client_rebuilds_total"),
            "Kafka clients replaced after a fatal error.",
        )?;
        readiness.set(CHECK, true, "no client error");
        Ok(Self {
            inner: Arc::new(Inner {
                errors,
                rebuilds,
                readiness,
                blocking: Mutex::new(None),
            }),
        })
    }

    /// Records an error reported by librdkafka: `code` as `rd_kafka_resp_err_t`, `reason`
    /// as librdkafka words it. Returns its kind.
    pub fn report(&self, code: i32, reason: &str) -> KafkaErrorKind {
        let kind = KafkaErrorKind::classify(code, reason);
        self.inner.errors.with_label_values(&[kind.label()]).inc();
        if kind.blocks_readiness() {
            tracing::error!(
                kind = kind.label(),
                code,
                reason,
                hint = kind.hint(),
                "Kafka client error"
            );
            self.block(kind, reason);
        } else {
            tracing::warn!(kind = kind.label(), code, reason, "Kafka client error");
        }
        kind
    }

    /// Records a fatal client error found by the node itself (e.g. `fatal_error()` after a
    /// failed send).
    pub fn fatal(&self, reason: &str) {
        self.inner
            .errors
            .with_label_values(&[KafkaErrorKind::Fatal.label()])
            .inc();
        tracing::error!(kind = "fatal", reason, "Kafka client fatal error");
        self.block(KafkaErrorKind::Fatal, reason);
    }

    fn block(&self, kind: KafkaErrorKind, reason: &str) {
        let mut blocking = lock(&self.inner.blocking);
        // A fatal error is not hidden by a later, milder one.
        if blocking
            .as_ref()
            .is_some_and(|b| b.kind == KafkaErrorKind::Fatal && kind != KafkaErrorKind::Fatal)
        {
            return;
        }
        *blocking = Some(Blocking { kind });
        self.inner.readiness.set(
            CHECK,
            false,
            format!("{}: {} ({reason})", kind.label(), kind.hint()),
        );
    }

    /// The node's broker probe succeeded: clears an `auth`, `tls` or `authorization` state
    /// (the credentials work now), never a `fatal` one.
    pub fn connected(&self) {
        let mut blocking = lock(&self.inner.blocking);
        if blocking
            .as_ref()
            .is_some_and(|b| b.kind != KafkaErrorKind::Fatal)
        {
            *blocking = None;
            self.inner.readiness.set(CHECK, true, "no client error");
        }
    }

    /// The node replaced the client after a fatal error: counts it and clears every state.
    pub fn recovered(&self) {
        self.inner.rebuilds.inc();
        *lock(&self.inner.blocking) = None;
        self.inner
            .readiness
            .set(CHECK, true, "client replaced after a fatal error");
    }

    /// The kind currently keeping the node not ready, if any.
    pub fn blocking(&self) -> Option<KafkaErrorKind> {
        lock(&self.inner.blocking).as_ref().map(|b| b.kind)
    }

    /// Errors counted so far of `kind`.
    pub fn count(&self, kind: KafkaErrorKind) -> u64 {
        self.inner.errors.with_label_values(&[kind.label()]).get()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_is_bounded_and_known_codes_map() {
        for (code, kind) in [
            (-169, KafkaErrorKind::Auth),
            (58, KafkaErrorKind::Auth),
            (-181, KafkaErrorKind::Tls),
            (29, KafkaErrorKind::Authorization),
            (-150, KafkaErrorKind::Fatal),
            (90, KafkaErrorKind::Fatal),
            (-195, KafkaErrorKind::Transport),
            (-187, KafkaErrorKind::Transport),
            (-192, KafkaErrorKind::Other),
            (i32::MAX, KafkaErrorKind::Other),
        ] {
            assert_eq!(KafkaErrorKind::from_code(code), kind, "{code}");
            assert!(ERROR_KINDS.contains(&kind.label()));
        }
        let alert = "ssl://127.0.0.1:1/bootstrap: Receive failed: error:0A00045C:SSL routines::\
                     tlsv13 alert certificate required: SSL alert number 116";
        assert_eq!(KafkaErrorKind::classify(-195, alert), KafkaErrorKind::Tls);
        assert_eq!(
            KafkaErrorKind::classify(-195, "Connection refused"),
            KafkaErrorKind::Transport
        );
    }

    #[test]
    fn readiness_follows_errors_and_recovery() {
        let registry = Registry::new();
        let readiness = Readiness::default();
        let link = KafkaLink::new(&registry, "test", readiness.clone()).unwrap();
        assert!(readiness.is_ready());
        let families = registry.gather();
        let errors = families
            .iter()
            .find(|f| f.name() == "panoptes_test_kafka_errors_total")
            .unwrap();
        assert_eq!(errors.get_metric().len(), ERROR_KINDS.len());

        assert_eq!(link.report(-195, "broker down"), KafkaErrorKind::Transport);
        assert!(
            readiness.is_ready(),
            "transport errors leave readiness to the probe"
        );

        link.report(-169, "SASL authentication error: Authentication failed");
        assert!(!readiness.is_ready());
        let detail = readiness.snapshot()[CHECK].detail.clone();
        assert!(
            detail.starts_with("auth: SASL authentication failed"),
            "{detail}"
        );
        assert!(detail.contains("Authentication failed"), "{detail}");
        assert_eq!(link.count(KafkaErrorKind::Auth), 1);
        link.connected();
        assert!(readiness.is_ready());

        link.fatal("fatal idempotence error");
        link.report(-181, "SSL handshake failed");
        assert_eq!(link.blocking(), Some(KafkaErrorKind::Fatal));
        link.connected();
        assert!(
            !readiness.is_ready(),
            "a probe does not clear a fatal error"
        );
        link.recovered();
        assert!(readiness.is_ready());
        assert_eq!(link.count(KafkaErrorKind::Fatal), 1);
        assert_eq!(link.count(KafkaErrorKind::Tls), 1);
    }
}
