//! The Lua scripts run on each node. Every script takes the lock's keys as
//! `KEYS` and the lock value as `ARGV[1]`, so one call covers a
//! multi-resource lock atomically on that node.

/// Takes every key, or none: returns 1 when all keys are free (or already
/// ours, which makes a resent command harmless), 0 when any is held by another.
pub(crate) const ACQUIRE: &str = r#"
for _, key in ipairs(KEYS) do
  local held = redis.call('GET', key)
  if held and held ~= ARGV[1] then return 0 end
end
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
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

/// Deletes the keys that hold our value, never a foreign one: returns how many were deleted.
pub(crate) const RELEASE: &str = r#"
local deleted = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    deleted = deleted + 1
  end
end
return deleted
"#;
