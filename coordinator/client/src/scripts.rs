//! Lua scripts: every change that touches more than one key, or that must be checked
//! against the leader's fencing token, runs as one script, so Redis applies it atomically.
//!
//! Coordinator writes ([`grant`], [`retarget`], [`fenced_batch`]) first compare
//! `panoptes:fence` with the writer's token and fail with `FENCED` when a newer election
//! happened: a deposed leader (paused, partitioned) cannot write, whatever it believes.
//! Members write only their own keys: their lease and their releases ([`release`] checks
//! owner and epoch in the assignment record, which it only reads). Scripts run with the
//! caller's ACL: every `redis.call` is checked against the caller's key and command rules,
//! and keys declared to `EVAL` must be writable, so read-only keys are passed as arguments.
//!
//! Monotonic across a Redis that lost writes (restarted empty, or a replica that missed
//! some): elections ([`leader_campaign`]) and grants ([`grant_above`]) take a floor, the
//! highest token or epoch the caller has seen + 1, and never hand out less; the counters in
//! Redis are re-seeded from it. [`restore_registry`] rewrites a lost camera registry.

use redis::{Connection, Value};

use crate::CoordError;
use crate::keys;
use crate::records::{AssignRecord, MemberKind};

/// Returns `{elected, token, fresh}`: `elected` 1 with the new token, or 0 with the current
/// one (0 when none); `fresh` 1 when the fence key did not exist (an empty Redis). The new
/// token is at least `ARGV[5]` (the campaigner's floor: the highest token it has seen + 1),
/// and on a fresh Redis at least `ARGV[4]` (the wall clock in ms), so a Redis that lost the
/// fence does not hand out a token a paused leader may still hold, even to a coordinator
/// that never saw that token (unless elections ran faster than one per millisecond).
const LEADER_ACQUIRE: &str = r"
local cur = tonumber(redis.call('GET', KEYS[2]) or '')
local fresh = 0
if not cur then fresh = 1 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local t = (cur or 0) + 1
  local floor = tonumber(ARGV[5]) or 0
  if fresh == 1 then floor = math.max(floor, tonumber(ARGV[4]) or 0) end
  if t < floor then t = floor end
  redis.call('SET', KEYS[2], string.format('%d', t))
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[3], 'id', ARGV[1], 'token', string.format('%d', t), 'http', ARGV[3], 'since_ms', ARGV[4], 'tick_ms', ARGV[4])
  return {1, t, fresh}
end
return {0, cur or 0, fresh}
";

const LEADER_RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('HSET', KEYS[3], 'tick_ms', ARGV[4])
  return 1
end
return 0
";

const LEADER_RESIGN: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// A coordinator write: `body` runs only while `panoptes:fence` (`KEYS[1]`) holds the writer's
/// token (`ARGV[1]`); otherwise the script fails with `FENCED`.
macro_rules! fenced {
    ($body:literal) => {
        concat!(
            "\nif redis.call('GET', KEYS[1]) ~= ARGV[1] then\n",
            "  return redis.error_reply('FENCED stale leader token')\n",
            "end",
            $body
        )
    };
}

const FENCED_BATCH: &str = fenced!(
    r"
local n = 0
for _, c in ipairs(cjson.decode(ARGV[2])) do
  redis.call(unpack(c))
  n = n + 1
end
return n
"
);

const GRANT: &str = fenced!(
    r"
local old = redis.call('HGET', KEYS[2], 'owner')
local oldep = tonumber(redis.call('HGET', KEYS[2], 'epoch') or '0') or 0
local e = redis.call('INCR', KEYS[3])
local floor = tonumber(ARGV[5]) or 0
if e <= oldep or e < floor then
  e = math.max(oldep + 1, floor, e)
  redis.call('SET', KEYS[3], string.format('%d', e))
end
if old and old ~= '' then
  redis.call('HDEL', 'panoptes:released:' .. ARGV[3] .. ':' .. old, ARGV[2])
end
if old and old ~= '' and old ~= ARGV[4] then
  redis.call('SREM', 'panoptes:owned:' .. ARGV[3] .. ':' .. old, ARGV[2])
  redis.call('PUBLISH', 'panoptes:notify:' .. ARGV[3] .. ':' .. old, ARGV[2])
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[2], 'owner', ARGV[4], 'epoch', e)
for i = 6, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
end
if ARGV[4] ~= '' then
  redis.call('SADD', 'panoptes:owned:' .. ARGV[3] .. ':' .. ARGV[4], ARGV[2])
  redis.call('PUBLISH', 'panoptes:notify:' .. ARGV[3] .. ':' .. ARGV[4], ARGV[2])
end
return e
"
);

const RETARGET: &str = fenced!(
    r"
if redis.call('HGET', KEYS[2], 'owner') ~= ARGV[3] or redis.call('HGET', KEYS[2], 'epoch') ~= ARGV[4] then
  return 0
end
if ARGV[5] == '' then
  redis.call('HDEL', KEYS[2], 'target')
else
  redis.call('HSET', KEYS[2], 'target', ARGV[5])
end
redis.call('PUBLISH', 'panoptes:notify:' .. ARGV[2] .. ':' .. ARGV[3], 'retarget')
return 1
"
);

/// Restores the camera registry (`KEYS[2]`, `KEYS[3]` its version) from a snapshot, only if
/// the version key does not exist (Redis lost the registry): `ARGV[2]` is the version to set,
/// `ARGV[3..]` field/value pairs. Returns the cameras written, or -1 when the registry exists.
const RESTORE_REGISTRY: &str = fenced!(
    r"
if redis.call('EXISTS', KEYS[3]) == 1 then
  return -1
end
redis.call('DEL', KEYS[2])
local n = 0
for i = 3, #ARGV, 2 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  n = n + 1
end
redis.call('SET', KEYS[3], ARGV[2])
return n
"
);

/// The owner's release: reads the assignment record (`ARGV[1]`, read-only for members, so
/// not a declared key: Redis checks declared keys of EVAL for write access) and, if it names
/// the owner at that epoch, records the release in the owner's own hash (`KEYS[1]`).
const RELEASE: &str = r"
if redis.call('HGET', ARGV[1], 'owner') ~= ARGV[2] or redis.call('HGET', ARGV[1], 'epoch') ~= ARGV[3] then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[5], ARGV[4])
redis.call('PUBLISH', ARGV[6], ARGV[5])
return 1
";

fn eval(
    c: &mut Connection,
    script: &str,
    keys: &[&str],
    args: &[String],
) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len());
    for k in keys {
        cmd.arg(*k);
    }
    for a in args {
        cmd.arg(a);
    }
    cmd.query(c)
}

/// Tries to become leader for `ttl_ms`; returns the new fencing token when elected.
pub fn leader_acquire(
    c: &mut Connection,
    id: &str,
    ttl_ms: u64,
    http: &str,
) -> Result<Option<u64>, CoordError> {
    Ok(leader_campaign(c, id, ttl_ms, http, 0)?.elected)
}

/// What one campaign ([`leader_campaign`]) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Campaign {
    /// The new fencing token when elected.
    pub elected: Option<u64>,
    /// The fencing token now in Redis (the new one when elected; 0 when there is none).
    pub token: u64,
    /// The fence key did not exist: Redis is new, or restarted empty.
    pub fresh: bool,
}

/// Tries to become leader for `ttl_ms` with a token of at least `floor` (the highest token
/// the campaigner has seen + 1: a Redis that lost the fence then never hands an old token
/// out again). Returns what it found either way, so followers learn the current token.
pub fn leader_campaign(
    c: &mut Connection,
    id: &str,
    ttl_ms: u64,
    http: &str,
    floor: u64,
) -> Result<Campaign, CoordError> {
    let v = leader_eval(
        c,
        LEADER_ACQUIRE,
        [id.into(), ttl_ms.to_string(), http.into()],
        &[floor.to_string()],
    )?;
    let (won, token, fresh): (u64, u64, u64) = redis::from_redis_value(&v)?;
    Ok(Campaign {
        elected: (won == 1).then_some(token),
        token,
        fresh: fresh == 1,
    })
}

/// Extends the leader lease; `false` when `id` with `token` is no longer the leader.
pub fn leader_renew(
    c: &mut Connection,
    id: &str,
    token: u64,
    ttl_ms: u64,
) -> Result<bool, CoordError> {
    let v = leader_eval(
        c,
        LEADER_RENEW,
        [id.into(), token.to_string(), ttl_ms.to_string()],
        &[],
    )?;
    Ok(v == Value::Int(1))
}

/// Runs a leader-lease script on the lease, fence and info keys with `args`, the current
/// time in ms (recorded in the leader's info), then `more`.
fn leader_eval(
    c: &mut Connection,
    script: &str,
    args: [String; 3],
    more: &[String],
) -> redis::RedisResult<Value> {
    let mut args = args.to_vec();
    args.push(crate::now_ms().to_string());
    args.extend_from_slice(more);
    eval(
        c,
        script,
        &[keys::LEADER, keys::FENCE, keys::LEADER_INFO],
        &args,
    )
}

/// Gives the lease up (clean shutdown), so another coordinator takes over at once.
pub fn leader_resign(c: &mut Connection, id: &str) -> Result<bool, CoordError> {
    let v = eval(c, LEADER_RESIGN, &[keys::LEADER], &[id.into()])?;
    Ok(v == Value::Int(1))
}

/// Runs `commands` (each a Redis command as a list of strings) atomically, if `token` is
/// still the current fencing token. Fails with [`CoordError::Fenced`] otherwise.
pub fn fenced_batch(
    c: &mut Connection,
    token: u64,
    commands: &[Vec<String>],
) -> Result<usize, CoordError> {
    if commands.is_empty() {
        return Ok(0);
    }
    let json = serde_json::to_string(commands).map_err(|e| CoordError::Invalid(e.to_string()))?;
    let v = eval(c, FENCED_BATCH, &[keys::FENCE], &[token.to_string(), json])?;
    Ok(match v {
        Value::Int(n) => n as usize,
        _ => 0,
    })
}

/// Grants `item` to `owner` (empty: unassigns it) at a new, higher epoch, moves it between
/// the owners' indexes, sets `extra` fields and notifies both owners. Returns the epoch.
#[allow(clippy::too_many_arguments)]
pub fn grant(
    c: &mut Connection,
    token: u64,
    kind: MemberKind,
    assign_key: &str,
    epoch_key: &str,
    item: &str,
    owner: &str,
    extra: &[(&str, String)],
) -> Result<u64, CoordError> {
    let at = ItemKeys {
        assign: assign_key,
        epoch: epoch_key,
    };
    grant_above(c, token, kind, at, item, owner, 0, extra)
}

/// An item's assignment record and epoch counter keys.
#[derive(Debug, Clone, Copy)]
pub struct ItemKeys<'a> {
    /// The assignment record (hash).
    pub assign: &'a str,
    /// The epoch counter.
    pub epoch: &'a str,
}

/// [`grant`] at an epoch of at least `floor` (the highest epoch of the item the leader
/// knows of + 1): the new epoch is above the counter, the record's epoch and `floor`, so
/// epochs keep growing even when Redis lost the counter and the record.
#[allow(clippy::too_many_arguments)]
pub fn grant_above(
    c: &mut Connection,
    token: u64,
    kind: MemberKind,
    at: ItemKeys<'_>,
    item: &str,
    owner: &str,
    floor: u64,
    extra: &[(&str, String)],
) -> Result<u64, CoordError> {
    let mut args = vec![
        token.to_string(),
        item.into(),
        kind.to_string(),
        owner.into(),
        floor.to_string(),
    ];
    for (k, v) in extra {
        args.push((*k).into());
        args.push(v.clone());
    }
    let v = eval(c, GRANT, &[keys::FENCE, at.assign, at.epoch], &args)?;
    match v {
        Value::Int(e) => Ok(e as u64),
        other => Err(CoordError::Invalid(format!("grant returned {other:?}"))),
    }
}

/// Writes the camera registry from a snapshot (`cameras`: id → stored record JSON) at
/// `version`, only if Redis holds no registry version (it lost the registry). `Ok(None)`
/// when a registry exists (nothing written), else the cameras written.
pub fn restore_registry(
    c: &mut Connection,
    token: u64,
    version: u64,
    cameras: &std::collections::BTreeMap<String, String>,
) -> Result<Option<usize>, CoordError> {
    let mut args = vec![token.to_string(), version.to_string()];
    for (id, json) in cameras {
        args.push(id.clone());
        args.push(json.clone());
    }
    let v = eval(
        c,
        RESTORE_REGISTRY,
        &[keys::FENCE, keys::CAMERAS, keys::CAMERAS_VERSION],
        &args,
    )?;
    Ok(match v {
        Value::Int(n) if n >= 0 => Some(n as usize),
        _ => None,
    })
}

/// Asks the owner of `item` (at `epoch`) to hand it over to `target` (empty: cancels the
/// move). `false` when the record changed meanwhile.
#[allow(clippy::too_many_arguments)]
pub fn retarget(
    c: &mut Connection,
    token: u64,
    kind: MemberKind,
    assign_key: &str,
    owner: &str,
    epoch: u64,
    target: &str,
) -> Result<bool, CoordError> {
    let v = eval(
        c,
        RETARGET,
        &[keys::FENCE, assign_key],
        &[
            token.to_string(),
            kind.to_string(),
            owner.into(),
            epoch.to_string(),
            target.into(),
        ],
    )?;
    Ok(v == Value::Int(1))
}

/// The owner's release of `item` at `epoch` (after finishing and committing its work), with
/// the next sequence number for cameras: recorded in the owner's `panoptes:released:` hash
/// (see [`keys::released`]) if the record at `assign_key` still names it at that epoch.
/// `false` when the member no longer holds it.
pub fn release(
    c: &mut Connection,
    kind: MemberKind,
    assign_key: &str,
    owner: &str,
    epoch: u64,
    item: &str,
    next_seq: Option<u64>,
) -> Result<bool, CoordError> {
    let v = eval(
        c,
        RELEASE,
        &[&keys::released(kind, owner)],
        &[
            assign_key.into(),
            owner.into(),
            epoch.to_string(),
            crate::records::release_entry(epoch, next_seq),
            item.into(),
            keys::NOTIFY_COORDINATOR.into(),
        ],
    )?;
    Ok(v == Value::Int(1))
}

/// An item's assignment record with its owner's release applied (what the leader and the
/// owner see): `HGETALL` of the record, then the owner's entry in its released hash.
pub fn read_assignment(
    c: &mut Connection,
    kind: MemberKind,
    assign_key: &str,
    item: &str,
) -> Result<AssignRecord, CoordError> {
    let h: std::collections::BTreeMap<String, String> =
        redis::cmd("HGETALL").arg(assign_key).query(c)?;
    let mut rec = AssignRecord::from_fields(&h)?;
    if !rec.owner.is_empty() {
        let entry: Option<String> = redis::cmd("HGET")
            .arg(keys::released(kind, &rec.owner))
            .arg(item)
            .query(c)?;
        rec.apply_release(entry.as_deref());
    }
    Ok(rec)
}

/// A member's renewal (also its registration): `KEYS[1]` its lease hash, `KEYS[2]` the
/// member set of its kind; `ARGV[1]` its session, `ARGV[2]` the TTL in ms, `ARGV[3]` its id,
/// then field/value pairs. If the hash holds another session, nothing is written and that
/// session is returned (another process runs with this id); otherwise the hash is written
/// and expires after the TTL, and 1 is returned when it existed, 0 when it was (re)created.
const MEMBER_RENEW: &str = r"
local cur = redis.call('HGET', KEYS[1], 'session')
if cur and cur ~= ARGV[1] then
  return {'taken', cur}
end
local existed = redis.call('EXISTS', KEYS[1])
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
return existed
";

/// A member leaving: deletes its lease hash (`KEYS[1]`) and its id from the member set
/// (`KEYS[2]`) only if the hash holds its session (`ARGV[1]`), so a process whose session
/// was replaced never removes its successor; then tells the coordinator (`ARGV[2]`, `ARGV[3]`).
const MEMBER_LEAVE: &str = r"
local cur = redis.call('HGET', KEYS[1], 'session')
if cur and cur ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[4])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 1
";

/// What a member's renewal found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    /// Renewed; `existed` is false when the lease had expired (or never existed) and the
    /// member was registered anew.
    Renewed {
        /// Whether the lease hash still existed.
        existed: bool,
    },
    /// Another process holds this member id: its session.
    Taken(String),
}

/// Renews (or registers) member `id` of `kind` with `session` for `ttl_ms`, writing
/// `fields`, atomically checked against the session in the hash (see [`Renewal`]).
pub fn member_renew(
    c: &mut Connection,
    kind: MemberKind,
    id: &str,
    session: &str,
    ttl_ms: u64,
    fields: &[(&str, String)],
) -> Result<Renewal, CoordError> {
    let mut args = vec![session.to_owned(), ttl_ms.to_string(), id.to_owned()];
    for (k, v) in fields {
        args.push((*k).to_owned());
        args.push(v.clone());
    }
    let v = eval(
        c,
        MEMBER_RENEW,
        &[&keys::member(kind, id), &keys::members(kind)],
        &args,
    )?;
    match v {
        Value::Int(n) => Ok(Renewal::Renewed { existed: n == 1 }),
        Value::Array(items) => match items.as_slice() {
            [_, Value::BulkString(s)] => Ok(Renewal::Taken(String::from_utf8_lossy(s).into())),
            other => Err(CoordError::Invalid(format!("renewal returned {other:?}"))),
        },
        other => Err(CoordError::Invalid(format!("renewal returned {other:?}"))),
    }
}

/// Ends member `id`'s membership if `session` still holds it; `false` when another session
/// does (nothing deleted).
pub fn member_leave(
    c: &mut Connection,
    kind: MemberKind,
    id: &str,
    session: &str,
) -> Result<bool, CoordError> {
    let v = eval(
        c,
        MEMBER_LEAVE,
        &[&keys::member(kind, id), &keys::members(kind)],
        &[
            session.to_owned(),
            keys::NOTIFY_COORDINATOR.to_owned(),
            format!("left {id}"),
            id.to_owned(),
        ],
    )?;
    Ok(v == Value::Int(1))
}
