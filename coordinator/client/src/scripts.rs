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

use redis::{Connection, Value};

use crate::CoordError;
use crate::keys;
use crate::records::{AssignRecord, MemberKind};

const LEADER_ACQUIRE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local t = redis.call('INCR', KEYS[2])
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[3], 'id', ARGV[1], 'token', t, 'http', ARGV[3], 'since_ms', ARGV[4], 'tick_ms', ARGV[4])
  return t
end
return false
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
if e <= oldep then
  e = oldep + 1
  redis.call('SET', KEYS[3], e)
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
for i = 5, #ARGV, 2 do
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
    let v = leader_eval(
        c,
        LEADER_ACQUIRE,
        [id.into(), ttl_ms.to_string(), http.into()],
    )?;
    Ok(match v {
        Value::Int(t) => Some(t as u64),
        _ => None,
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
    )?;
    Ok(v == Value::Int(1))
}

/// Runs a leader-lease script on the lease, fence and info keys with `args` and, last, the
/// current time in ms (recorded in the leader's info).
fn leader_eval(c: &mut Connection, script: &str, args: [String; 3]) -> redis::RedisResult<Value> {
    let mut args = args.to_vec();
    args.push(crate::now_ms().to_string());
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
    let mut args = vec![
        token.to_string(),
        item.into(),
        kind.to_string(),
        owner.into(),
    ];
    for (k, v) in extra {
        args.push((*k).into());
        args.push(v.clone());
    }
    let v = eval(c, GRANT, &[keys::FENCE, assign_key, epoch_key], &args)?;
    match v {
        Value::Int(e) => Ok(e as u64),
        other => Err(CoordError::Invalid(format!("grant returned {other:?}"))),
    }
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
