//! Writing the rollout record (`panoptes:rollout:<group>`): the one compare-and-set that the
//! operator API and the leader's canary verdicts share.
//!
//! Contract: [`compare_and_set`] reads the stored value, and only when it parses to
//! `current` (absent for `None`) runs a Lua script that sets `next` and publishes it on
//! `panoptes:notify:rollout:<group>` if the stored bytes are still the ones read. `Ok(false)`:
//! someone changed the record meanwhile (read again and retry). With `fence`, the script
//! first checks that `panoptes:fence` still holds the leader's token and fails with `FENCED`
//! otherwise (a deposed leader never ends a canary).

use panoptes_coordinator_client::keys;
use panoptes_schemas::model::ModelRollout;
use redis::Connection;

const COMPARE_AND_SET: &str = r"
if ARGV[4] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[4] then
  return redis.error_reply('FENCED stale leader token')
end
local cur = redis.call('GET', KEYS[1])
if (cur == false and ARGV[1] == '') or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[2])
  return 1
end
return 0
";

/// Redis commands one [`compare_and_set`] sends at most (a GET and the script).
pub const CAS_COMMANDS: u64 = 2;

/// Sets the record of `group` to `next` if it still holds `current` (see the module doc).
pub fn compare_and_set(
    c: &mut Connection,
    group: &str,
    current: Option<&ModelRollout>,
    next: &ModelRollout,
    fence: Option<u64>,
) -> redis::RedisResult<bool> {
    // The value read before, byte for byte, is what the script compares with.
    let expected: Option<String> = match current {
        None => None,
        Some(_) => redis::cmd("GET").arg(keys::rollout(group)).query(c)?,
    };
    let still = expected
        .as_deref()
        .map(|raw| ModelRollout::from_json(raw.as_bytes()).ok().as_ref() == current)
        .unwrap_or(current.is_none());
    if !still {
        return Ok(false);
    }
    let set: i64 = redis::cmd("EVAL")
        .arg(COMPARE_AND_SET)
        .arg(2)
        .arg(keys::rollout(group))
        .arg(keys::FENCE)
        .arg(expected.unwrap_or_default())
        .arg(next.to_json())
        .arg(keys::rollout_notify(group))
        .arg(fence.map(|t| t.to_string()).unwrap_or_default())
        .query(c)?;
    Ok(set == 1)
}
