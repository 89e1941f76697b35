//! `panoptes-devbroker`: the development Kafka broker of Panoptes (a tool crate: it never ships
//! in a product image; production points at Apache Kafka, Redpanda or a managed Kafka).
//!
//! This crate hosts librdkafka's Kafka-protocol mock cluster
//! ([`rdkafka::mocking::MockCluster`]) in a small process. Clients talk the real Kafka wire
//! protocol to it over TCP on loopback, so the demo and every integration test of the
//! project run against a broker without Apache Kafka being installed.
//!
//! On start it creates the mock cluster with the requested number of brokers, creates the
//! project's topics (see [`cli::Args`]), then prints exactly two lines to stdout and flushes:
//!
//! ```text
//! BOOTSTRAP=127.0.0.1:40001,127.0.0.1:40002,127.0.0.1:40003
//! CONTROL=http://127.0.0.1:40100
//! ```
//!
//! With the secure front ([`front`]: `--tls-cert`/`--tls-key`, `--sasl-users-file`), or
//! listeners for other hosts (`--listen`, `--advertise-host`, `--front-port`: a container),
//! `BOOTSTRAP` lists the fronts' listeners instead, and every broker advertises its front so
//! clients never leave them.
//!
//! `--prompt-fetch` puts a plain front before each broker that answers waiting fetches as
//! soon as records are produced ([`front::prompt`]): the mock alone holds an empty fetch for
//! the consumer's whole `fetch.wait.max.ms`, which delays every record by 0–50 ms (the
//! latency sawtooth of docs/benchmarks.md).
//!
//! Everything else is logged to stderr. The `CONTROL` URL serves a small JSON API
//! (see [`control`]) to list and create topics and to take brokers down and back up.
//! The process exits cleanly on SIGINT/SIGTERM, and also when its stdin reaches end of file
//! if started with `--exit-on-stdin-eof` (so a test harness that dies takes it along).
//!
//! # Limits (this is not a production broker)
//!
//! - **In memory only**: nothing is persisted; all data is lost when the process exits.
//! - **About 5 MB retained per partition**: older records are dropped (log start offset
//!   moves forward), so consumers must keep up and checkers must read while the test runs.
//! - **No fencing of transactional producers by transactional id**: a second producer that
//!   initialises the same `transactional.id` does not fence the first. Tests that need
//!   fencing must check the application-side defence (the assignment epoch) instead.
//! - **No read-committed isolation**: the mock writes no transaction control markers and
//!   reports no aborted transactions in fetch responses (its last stable offset is the high
//!   watermark), so a `read_committed` consumer also sees records of aborted and still-open
//!   transactions. Transactional producers can init/begin/commit/abort, but tests must not
//!   rely on aborted records being hidden.
//! - **Broker down/up does not move partition leadership**: while one broker is down, the
//!   partitions it leads are unavailable. Coordinators do move, for the keys registered
//!   with `POST /coordinators` ([`coordinators`]): a group's or transactional id's
//!   coordinator on a broker that goes down moves to a live broker, as on Kafka, and back
//!   when it returns (Kafka's preferred-leader election, at once); keys never registered
//!   stay on the broker the mock hashes them to, up or down. Data and listening ports are kept across down/up.
//!   Clients reconnect per their `reconnect.backoff.max.ms` (librdkafka default 10 s: about
//!   8 s observed from "up" to resumed deliveries; tests should set it to ~500 ms).
//! - The admin API (CreateTopics) is not supported; create topics through the CLI or the
//!   control API. Unknown topics are auto-created by the mock on metadata requests.
//!   CreatePartitions is answered for topics started `--growable` ([`front::growth`]: the
//!   mock holds their maximum from the start and the fronts hide what was not created).
//!
//! Production deployments point at Apache Kafka, Redpanda or a managed Kafka; nothing in the
//! project may depend on behaviour specific to this mock.

pub mod backlog;
pub mod cli;
pub mod cluster;
pub mod control;
pub mod coordinators;
pub mod front;
pub mod topics;

use std::io::Write;

use anyhow::Context;
use tokio::sync::oneshot;

pub use cli::Args;
pub use cluster::{ClusterError, ClusterHandle};

/// Runs the development broker until SIGINT/SIGTERM (or stdin EOF when asked for).
///
/// Creates the mock cluster and the topics, binds the control API, prints the
/// `BOOTSTRAP=` and `CONTROL=` lines to stdout, then serves until asked to stop.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let wanted = args.topics_to_create()?;
    let growable = args.growable_topics()?;
    let replication = i32::from(args.brokers.min(3));

    let cluster = ClusterHandle::start(i32::from(args.brokers)).context("starting mock cluster")?;
    tracing::info!(brokers = args.brokers, bootstrap = %cluster.bootstrap(), "mock cluster up");
    let brokers = front::upstreams(cluster.bootstrap())
        .with_context(|| format!("mock bootstrap list {:?}", cluster.bootstrap()))?;
    let widened = backlog::widen(&brokers);
    if widened < brokers.len() {
        tracing::warn!(
            widened,
            brokers = brokers.len(),
            "could not raise the accept backlog of every mock broker: bursts of connections may wait 1 s"
        );
    }

    for spec in &wanted {
        let max = growable.iter().find(|g| g.0 == spec.name).map(|g| g.2);
        match max {
            Some(max) => {
                cluster
                    .create_growable_topic(&spec.name, spec.partitions, max, replication)
                    .await
            }
            None => {
                cluster
                    .create_topic(&spec.name, spec.partitions, replication)
                    .await
            }
        }
        .with_context(|| format!("creating topic {}", spec.name))?;
        tracing::info!(topic = %spec.name, partitions = spec.partitions, ?max, replication, "created topic");
    }

    // Kept alive until the process stops: dropping a front closes its listener.
    let (fronts, bootstrap) = if args.fronted() {
        start_fronts(&args, &cluster, brokers).await?
    } else {
        (Vec::new(), cluster.bootstrap().to_string())
    };

    let listener = tokio::net::TcpListener::bind(args.control)
        .await
        .with_context(|| format!("binding control API on {}", args.control))?;
    let control_addr = listener.local_addr()?;

    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "BOOTSTRAP={bootstrap}")?;
        writeln!(out, "CONTROL=http://{control_addr}")?;
        out.flush()?;
    }
    tracing::info!(control = %control_addr, "control API listening");

    let app = control::router(cluster.clone());
    let shutdown = shutdown_signal(args.exit_on_stdin_eof);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("control API server")?;

    drop(fronts);
    cluster.shutdown();
    tracing::info!("devbroker stopped");
    Ok(())
}

/// Starts one front per mock broker (`upstreams`, in bootstrap order; secure with `--tls-*`,
/// `--sasl-*`; where `--listen` and `--front-port` say) and makes each broker advertise its
/// front (under `--advertise-host`), so clients that bootstrap from the fronts stay on them.
/// Returns the fronts and the bootstrap list clients use.
async fn start_fronts(
    args: &Args,
    cluster: &ClusterHandle,
    upstreams: Vec<std::net::SocketAddr>,
) -> anyhow::Result<(Vec<front::Front>, String)> {
    panoptes_runtime::tls::install_crypto_provider();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            let files = panoptes_runtime::tls::TlsFiles {
                ca_file: args.tls_client_ca.clone(),
                cert_file: Some(cert.clone()),
                key_file: Some(key.clone()),
            };
            let config = panoptes_runtime::tls::server_config(&files, &[])?;
            Some(tokio_rustls::TlsAcceptor::from(config))
        }
        _ => None,
    };
    let sasl = match &args.sasl_users_file {
        Some(path) => {
            let mut mechanisms = args.sasl_mechanisms.clone();
            mechanisms.sort();
            mechanisms.dedup();
            Some(front::SaslSettings {
                users: front::sasl::Users::from_file(path)?,
                mechanisms,
            })
        }
        None => None,
    };
    let growth = args.grows().then(|| cluster.growth());
    if let Some(g) = &growth {
        g.serve();
    }
    let config = std::sync::Arc::new(front::FrontConfig {
        tls,
        sasl,
        prompt_fetch: args.prompt_fetch,
        growth,
    });
    let mut fronts = Vec::with_capacity(upstreams.len());
    let mut bootstrap = Vec::with_capacity(upstreams.len());
    for (id, upstream) in (1u8..).zip(upstreams) {
        let listen = args.front_listen(id, upstream)?;
        let front = front::Front::bind(listen, upstream, i32::from(id), config.clone())
            .await
            .with_context(|| format!("binding the front of broker {id} on {listen}"))?;
        let host = args.advertised_host(front.addr);
        cluster
            .advertise(i32::from(id), &host, front.addr.port())
            .await
            .with_context(|| format!("advertising the front of broker {id}"))?;
        tracing::info!(broker = id, front = %front.addr, advertised = %host, %upstream, protocol = config.protocol(), "front up");
        bootstrap.push(match args.advertise_host {
            Some(_) => format!("{host}:{}", front.addr.port()),
            None => front.addr.to_string(),
        });
        fronts.push(front);
    }
    Ok((fronts, bootstrap.join(",")))
}

/// Resolves when the process is asked to stop: SIGINT, SIGTERM, or (when `stdin_eof` is
/// set) end of file on stdin.
async fn shutdown_signal(stdin_eof: bool) {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };

    let term = async {
        #[cfg(unix)]
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await;
    };

    let eof = async {
        if stdin_eof {
            let (tx, rx) = oneshot::channel();
            // A detached std thread (not tokio's blocking pool) so that a blocked read never
            // holds up runtime shutdown.
            let spawned = std::thread::Builder::new()
                .name("stdin-eof".into())
                .spawn(move || {
                    let mut sink = [0u8; 1024];
                    let mut stdin = std::io::stdin().lock();
                    loop {
                        match std::io::Read::read(&mut stdin, &mut sink) {
                            Ok(0) => break,
                            Ok(_) => continue,
                            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                            Err(_) => break,
                        }
                    }
                    let _ = tx.send(());
                });
            match spawned {
                Ok(_) => {
                    let _ = rx.await;
                    return;
                }
                Err(e) => tracing::error!(error = %e, "cannot watch stdin"),
            }
        }
        std::future::pending::<()>().await;
    };

    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, stopping"),
        () = term => tracing::info!("SIGTERM received, stopping"),
        () = eof => tracing::info!("stdin closed, stopping"),
    }
}
