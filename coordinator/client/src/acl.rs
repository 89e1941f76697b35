//! Least-privilege Redis ACL users, one rule set per role, derived from the key layout
//! ([`crate::keys`], `docs/coordination-keys.md`) and the commands each role really sends.
//!
//! Contract:
//! - [`rules`] gives the ACL rules of a role; [`render`] an ACL file (`aclfile` of
//!   `redis-server`) for a list of users, with passwords stored as SHA-256 hashes (`#<hex>`),
//!   never in clear, and the `default` user switched off (no anonymous access).
//! - **coordinator** (leader and operator API): every `panoptes:*` key and channel; reading,
//!   writing, scripting, transactions, pub/sub; no dangerous or admin commands (no `KEYS`,
//!   `FLUSH*`, `CONFIG`, `DEBUG`, `ACL`, `SHUTDOWN`, functions, `SCRIPT FLUSH|KILL`). It is the
//!   only role that writes grants, epochs, fencing, the registry, regions, groups and drain
//!   flags.
//! - **member** (an ingest node or a worker, one user per node id, or one per kind with
//!   `id = None`): read-write only its own lease (`panoptes:member:<kind>:<id>`) and
//!   releases (`panoptes:released:<kind>:<id>`) and its kind's index set; read-only its owned
//!   index, its drain flag, the regions, the assignment records of its kind, (ingest
//!   only) the camera registry and (workers only) the model rollout records, plus write-only
//!   the canary report hashes (`panoptes:canary:*`);
//!   publish/subscribe only its own channel and the coordinator's (workers also subscribe
//!   to `panoptes:notify:rollout:*`).
//!   Lua scripts run with the caller's ACL, so `EVAL` grants nothing beyond these rules.
//! - **admin**: everything (operators, backups, test harness); give it to people, not nodes.
//!
//! Residual risk (documented in `docs/security.md`): an index set cannot be restricted by
//! member, so a member may add or remove ids of its kind's `panoptes:members:<kind>` (a
//! removed live member adds itself back at its next renewal).

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::records::MemberKind;

/// What a Redis user may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A coordinator (leader election, placement, operator API).
    Coordinator,
    /// An ingest node or worker: `id` names the node, `None` allows every id of the kind
    /// (one shared user per kind: simpler, but members of a kind can then touch each
    /// other's leases and releases; they still cannot write grants).
    Member {
        /// Ingest or worker.
        kind: MemberKind,
        /// The node id, or `None` for all of the kind.
        id: Option<String>,
    },
    /// Full access (operators, backups, tests).
    Admin,
}

/// One user of the ACL file.
#[derive(Clone, PartialEq, Eq)]
pub struct AclUser {
    /// User name (`redis_username` of the node).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// SHA-256 of the password, lowercase hex ([`password_hash`]).
    pub password_sha256: String,
}

impl std::fmt::Debug for AclUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclUser")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The hash Redis stores for a password (`#<hex>` in ACL rules).
pub fn password_hash(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

/// Commands every role needs on a connection (AUTH is always allowed). The Redis client
/// also sends `CLIENT SETINFO` (Redis 7.2+) and ignores its answer: not granted, since
/// Redis 7.0 refuses an ACL file naming a command it does not know.
const CONNECTION: &[&str] = &["+ping", "+select", "+time"];

/// Commands a member sends: lease renewal (MULTI/EXEC of EXISTS, HSET, PEXPIRE, SADD), reads
/// (SMEMBERS, HGETALL, HMGET, HGET, EXISTS; HMSET is how the client writes several fields), the release script (EVAL: HGET, HSET, PUBLISH),
/// wake-ups and notifications (PUBLISH, SUBSCRIBE), leaving (DEL, SREM).
const MEMBER_COMMANDS: &[&str] = &[
    "+eval",
    "+evalsha",
    "+multi",
    "+exec",
    "+discard",
    "+exists",
    "+hset",
    "+hmset",
    "+pexpire",
    "+del",
    "+sadd",
    "+srem",
    "+smembers",
    "+hgetall",
    "+hmget",
    "+hget",
    "+get",
    "+publish",
    "+subscribe",
    "+unsubscribe",
];

/// The ACL rules of `role` (after `resetkeys resetchannels -@all`).
pub fn rules(role: &Role) -> Vec<String> {
    let mut r: Vec<String> = ["resetkeys", "resetchannels", "-@all"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    match role {
        Role::Admin => {
            r.extend(["~*", "&*", "+@all"].map(String::from));
            return r;
        }
        Role::Coordinator => {
            r.extend(
                [
                    "~panoptes:*",
                    "&panoptes:*",
                    "+@read",
                    "+@write",
                    "+@keyspace",
                    "+@scripting",
                    "+@pubsub",
                    "+@transaction",
                    "+@connection",
                    "-@dangerous",
                    "-@admin",
                    "-function",
                    "-script|flush",
                    "-script|kill",
                    // Server facts (persistence, run id) are read to notice a Redis restart.
                    "+info",
                ]
                .map(String::from),
            );
        }
        Role::Member { kind, id } => {
            let id = id.as_deref().unwrap_or("*");
            r.push(format!("~panoptes:member:{kind}:{id}"));
            r.push(format!("~panoptes:released:{kind}:{id}"));
            r.push(format!("~panoptes:members:{kind}"));
            r.push(format!("%R~panoptes:owned:{kind}:{id}"));
            r.push(format!("%R~panoptes:drain:{kind}:{id}"));
            r.push("%R~panoptes:regions".into());
            match kind {
                MemberKind::Worker => {
                    r.push("%R~panoptes:assign:*".into());
                    // The model rollout record of its group (read with GET) and its channel.
                    r.push("%R~panoptes:rollout:*".into());
                    r.push("&panoptes:notify:rollout:*".into());
                    // Its figures while a canary runs (HSET, PEXPIRE; never read back).
                    r.push("%W~panoptes:canary:*".into());
                }
                MemberKind::Ingest => {
                    r.push("%R~panoptes:camassign:*".into());
                    r.push("%R~panoptes:cameras".into());
                }
            }
            r.push(format!("&panoptes:notify:{kind}:{id}"));
            r.push("&panoptes:notify:coordinator".into());
            r.extend(MEMBER_COMMANDS.iter().map(|s| s.to_string()));
        }
    }
    r.extend(CONNECTION.iter().map(|s| s.to_string()));
    r
}

/// Why users cannot be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AclError {
    /// A user name or node id Redis or our keys cannot take.
    #[error("ACL user {0:?}: {1}")]
    BadName(String, &'static str),
    /// Two users with one name.
    #[error("ACL user {0:?} is listed twice")]
    Duplicate(String),
    /// The password hash is not 64 hex digits.
    #[error("ACL user {0:?}: password hash is not SHA-256 hex")]
    BadHash(String),
}

fn check_name(name: &str) -> Result<(), AclError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err(AclError::BadName(
            name.into(),
            "use 1-128 of letters, digits, '-', '_', '.'",
        ));
    }
    Ok(())
}

/// An ACL file for `users`: one `user` line each, plus `user default off` first (unless a
/// user named `default` is given). Load it with `redis-server --aclfile FILE` (or
/// `ACL LOAD`).
pub fn render(users: &[AclUser]) -> Result<String, AclError> {
    let mut out = String::new();
    let mut seen = std::collections::BTreeSet::new();
    for u in users {
        check_name(&u.name)?;
        if let Role::Member { id: Some(id), .. } = &u.role
            && (id.is_empty() || id.contains([':', '*', '?', '[', ']', ' ']))
        {
            return Err(AclError::BadName(
                id.clone(),
                "node ids have no ':', spaces or globs",
            ));
        }
        if u.password_sha256.len() != 64
            || !u.password_sha256.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err(AclError::BadHash(u.name.clone()));
        }
        if !seen.insert(u.name.as_str()) {
            return Err(AclError::Duplicate(u.name.clone()));
        }
    }
    if !seen.contains("default") {
        out.push_str("user default off resetpass resetkeys resetchannels -@all\n");
    }
    for u in users {
        let _ = writeln!(
            out,
            "user {} on resetpass #{} {}",
            u.name,
            u.password_sha256.to_ascii_lowercase(),
            rules(&u.role).join(" ")
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, role: Role) -> AclUser {
        AclUser {
            name: name.into(),
            role,
            password_sha256: password_hash(&format!("pw-{name}")),
        }
    }

    #[test]
    fn renders_one_line_per_user_and_no_clear_passwords() {
        let users = [
            user("coordinator", Role::Coordinator),
            user(
                "worker-1",
                Role::Member {
                    kind: MemberKind::Worker,
                    id: Some("worker-1".into()),
                },
            ),
            user(
                "ingest-a",
                Role::Member {
                    kind: MemberKind::Ingest,
                    id: Some("ingest-a".into()),
                },
            ),
        ];
        let text = render(&users).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("user default off"));
        assert!(!text.contains("pw-"), "{text}");
        assert!(text.contains(&format!("#{}", password_hash("pw-worker-1"))));
        let worker = lines[2];
        assert!(
            worker.starts_with("user worker-1 on resetpass #"),
            "{worker}"
        );
        for want in [
            "~panoptes:member:worker:worker-1 ",
            "~panoptes:released:worker:worker-1 ",
            "%R~panoptes:assign:* ",
            "&panoptes:notify:worker:worker-1 ",
            "+eval ",
        ] {
            assert!(worker.contains(want), "{want} in {worker}");
        }
        // Workers never see the camera registry; nothing of a member may write grants.
        assert!(!worker.contains("panoptes:cameras"), "{worker}");
        assert!(lines[3].contains("%R~panoptes:cameras"), "{}", lines[3]);
        for member in &lines[2..] {
            assert!(!member.contains("~panoptes:*"), "{member}");
            assert!(!member.contains(" ~panoptes:assign"), "{member}");
            assert!(!member.contains(" ~panoptes:camassign"), "{member}");
            assert!(!member.contains("epoch"), "{member}");
        }
        assert!(lines[1].contains("-@dangerous") && lines[1].contains("~panoptes:*"));
    }

    #[test]
    fn pool_users_and_bad_input() {
        let pool = rules(&Role::Member {
            kind: MemberKind::Worker,
            id: None,
        });
        assert!(pool.contains(&"~panoptes:member:worker:*".to_string()));
        let bad = [
            vec![user("a b", Role::Coordinator)],
            vec![user("c", Role::Coordinator), user("c", Role::Admin)],
            vec![user(
                "w",
                Role::Member {
                    kind: MemberKind::Worker,
                    id: Some("w:*".into()),
                },
            )],
            vec![AclUser {
                password_sha256: "xyz".into(),
                ..user("c", Role::Coordinator)
            }],
        ];
        for users in bad {
            assert!(render(&users).is_err(), "{users:?}");
        }
        // A `default` user given explicitly replaces the switched-off one.
        let text = render(&[user("default", Role::Admin)]).unwrap();
        assert_eq!(text.lines().count(), 1);
    }
}
