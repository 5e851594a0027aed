//! The Lua scripts run on each node. Every script takes the lock's keys as
//! `KEYS` and the lock value as `ARGV[1]`, so one call covers a
//! multi-resource lock atomically on that node.

/// Takes every lock key, or none, and draws a fencing token.
///
/// `KEYS`: the lock keys, then (when fencing) one counter key per lock key.
/// `ARGV`: the value, the TTL in ms, the number of lock keys.
/// Returns -1 when a lock key is held by another; otherwise the fencing
/// token: one more than the highest counter of the lock's resources, written
/// to all of them (0 without counters). Keys already holding our value count
/// as free, which makes a resent command harmless.
pub(crate) const ACQUIRE: &str = r#"
local locks = tonumber(ARGV[3])
for i = 1, locks do
  local held = redis.call('GET', KEYS[i])
  if held and held ~= ARGV[1] then return -1 end
end
for i = 1, locks do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
end
if #KEYS == locks then return 0 end
local token = 0
for i = locks + 1, #KEYS do
  local counter = tonumber(redis.call('GET', KEYS[i]) or '0')
  if counter > token then token = counter end
end
token = token + 1
for i = locks + 1, #KEYS do
  redis.call('SET', KEYS[i], token)
end
return token
"#;

/// Raises every counter in `KEYS` to at least `ARGV[1]`: the write-back that
/// makes a token known to a majority when the quorum's counters disagreed.
pub(crate) const FENCE: &str = r#"
local token = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
  if tonumber(redis.call('GET', key) or '0') < token then
    redis.call('SET', key, ARGV[1])
  end
end
return 1
"#;

/// Resets the TTL of every key, but only if every key still holds our value:
/// returns 1 when extended, 0 when any key is gone or foreign.
pub(crate) const EXTEND: &str = r#"
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) ~= ARGV[1] then return 0 end
end
for _, key in ipairs(KEYS) do
  redis.call('PEXPIRE', key, ARGV[2])
end
return 1
"#;

/// Deletes the keys that hold our value, never a foreign one, and announces
/// each on the channel of the same name so that waiters retry at once.
/// Returns how many were deleted.
pub(crate) const RELEASE: &str = r#"
local deleted = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    redis.call('PUBLISH', key, '')
    deleted = deleted + 1
  end
end
return deleted
"#;
