//! The `main` of every Panoptes node, once: `panoptes-ingest`, `panoptes-worker` and
//! `panoptes-coordinator` each call [`main`] with their name and their `run` function.
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     let about = "Panoptes ingest node.";
//!     panoptes_runtime::node::main("panoptes-ingest", about, ENV_SECTIONS, panoptes_ingest::run)
//! }
//! ```
//!
//! `name` is the binary's name (in `--help` and errors), `about` one line for `--help`,
//! `env_sections` the top-level config keys that `PANOPTES_` variables may override.
//!
//! In order, [`main`]: parses the command line (`-c/--config FILE`, or `PANOPTES_CONFIG`);
//! makes ring the process's rustls provider ([`crate::tls::install_crypto_provider`]);
//! installs the log subscriber ([`crate::telemetry::init`]); loads the typed configuration
//! (file, then `PANOPTES_<SECTION>__<KEY>` variables for `env_sections`, see [`crate::config`]);
//! starts a multi-threaded tokio runtime; creates the process's root [`CancellationToken`],
//! cancelled on SIGINT/SIGTERM ([`crate::shutdown::root_token`]); and awaits `run`.
//!
//! Exit status: 0 when `run` returns `Ok`; 1 when the configuration cannot be loaded, the
//! runtime cannot start or `run` fails, with the error and its causes on stderr (the same
//! `Error: … Caused by: …` layout `anyhow` prints); 2 for a bad command line (clap's usage
//! error). Tools with their own arguments (simulator, development broker) call
//! [`crate::telemetry::init`] and [`crate::shutdown::root_token`] directly.

use std::error::Error;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, Command, value_parser};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

/// Runs a node to completion and returns its exit status (see the module doc).
pub fn main<C, F, Fut, E>(
    name: &'static str,
    about: &'static str,
    env_sections: &[&str],
    run: F,
) -> ExitCode
where
    C: DeserializeOwned,
    F: FnOnce(C, CancellationToken) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: Error + 'static,
{
    let config_path = parse_command_line(name, about);
    // Before any TLS client or server is built (the Redis client builds its own rustls
    // configs from the process default): ring, the only provider compiled in.
    crate::tls::install_crypto_provider();
    crate::telemetry::init(name);
    let config: C = match crate::config::load(config_path.as_deref(), env_sections) {
        Ok(config) => config,
        Err(e) => return fail("loading configuration", &e),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail("starting the async runtime", &e),
    };
    let result = runtime.block_on(async {
        let cancel = crate::shutdown::root_token();
        run(config, cancel).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("{name} failed"), &e),
    }
}

/// The `--config` file, if any. Exits (clap's own status) on `--help`, `--version` or a
/// usage error.
fn parse_command_line(name: &'static str, about: &'static str) -> Option<PathBuf> {
    let matches = Command::new(name)
        .version(env!("CARGO_PKG_VERSION"))
        .about(about)
        .arg(
            Arg::new("config")
                .short('c')
                .long("config")
                .env("PANOPTES_CONFIG")
                .value_name("CONFIG")
                .value_parser(value_parser!(PathBuf))
                .help("TOML configuration file; `PANOPTES_<SECTION>__<KEY>` variables override it"),
        )
        .get_matches();
    matches.get_one::<PathBuf>("config").cloned()
}

/// Prints `error` under `context` with its causes and returns the failure status.
fn fail(context: &str, error: &(dyn Error + 'static)) -> ExitCode {
    eprintln!("{}", error_report(context, error));
    ExitCode::FAILURE
}

/// `Error: <context>`, then `Caused by:` and the error's chain, numbered when it has more
/// than one link (the layout of `anyhow`'s `Debug`, which these binaries printed before).
fn error_report(context: &str, error: &(dyn Error + 'static)) -> String {
    let mut chain = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        chain.push(e.to_string());
        source = e.source();
    }
    let mut text = format!("Error: {context}\n\nCaused by:");
    if let [only] = chain.as_slice() {
        text.push_str(&format!("\n    {only}"));
    } else {
        for (i, cause) in chain.iter().enumerate() {
            text.push_str(&format!("\n    {i}: {cause}"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn report_lists_the_causes() {
        let single = std::io::Error::other("no broker");
        assert_eq!(
            error_report("loading configuration", &single),
            "Error: loading configuration\n\nCaused by:\n    no broker"
        );
        let nested = Outer(std::io::Error::other("inner"));
        assert_eq!(
            error_report("x failed", &nested),
            "Error: x failed\n\nCaused by:\n    0: outer\n    1: inner"
        );
    }
}
