//! `panoptes-redis-acl`: writes the Redis ACL file of a deployment to stdout.
//!
//! ```text
//! panoptes-redis-acl --coordinator coordinator=/run/secrets/redis-coordinator \
//!     --ingest ingest-1=/run/secrets/redis-ingest-1 --worker worker-1=/run/secrets/redis-worker-1 \
//!     [--worker-pool workers=FILE] [--ingest-pool ingest=FILE] [--admin ops=FILE] > users.acl
//! ```
//!
//! Each `NAME=FILE` names a user and the file holding its password (first line); for
//! `--ingest`/`--worker` the user name is also the node id its keys are restricted to. The
//! file gets SHA-256 hashes only. Rules per role: `panoptes_coordinator_client::acl`.

use std::process::ExitCode;

use panoptes_coordinator_client::MemberKind;
use panoptes_coordinator_client::acl::{AclUser, Role, password_hash, render};

const USAGE: &str = "usage: panoptes-redis-acl [--coordinator NAME=FILE]... [--ingest ID=FILE]... \
[--worker ID=FILE]... [--ingest-pool NAME=FILE] [--worker-pool NAME=FILE] [--admin NAME=FILE]...";

fn user(flag: &str, value: &str) -> Result<AclUser, String> {
    let (name, file) = value
        .split_once('=')
        .ok_or_else(|| format!("{flag} {value:?}: expected NAME=PASSWORD_FILE"))?;
    let role = match flag {
        "--coordinator" => Role::Coordinator,
        "--admin" => Role::Admin,
        "--ingest" | "--worker" | "--ingest-pool" | "--worker-pool" => Role::Member {
            kind: if flag.starts_with("--ingest") {
                MemberKind::Ingest
            } else {
                MemberKind::Worker
            },
            id: (!flag.ends_with("-pool")).then(|| name.to_string()),
        },
        other => return Err(format!("unknown option {other}\n{USAGE}")),
    };
    let pw = panoptes_runtime::secret::from_file(file.as_ref(), &format!("password of {name}"))
        .map_err(|e| e.to_string())?;
    Ok(AclUser {
        name: name.into(),
        role,
        password_sha256: password_hash(pw.expose()),
    })
}

fn run() -> Result<String, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "-h" || a == "--help") {
        return Err(USAGE.into());
    }
    let mut users = Vec::new();
    for pair in args.chunks(2) {
        match pair {
            [flag, value] => users.push(user(flag, value)?),
            [flag] => return Err(format!("{flag} needs NAME=FILE\n{USAGE}")),
            _ => unreachable!("chunks of two"),
        }
    }
    render(&users).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    match run() {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("panoptes-redis-acl: {e}");
            ExitCode::from(2)
        }
    }
}
