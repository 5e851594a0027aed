//! The Lua script run on each Redis node.
//!
//! One script serves every operation but one, and one call carries every
//! operation that was waiting for the node. (The exception: an acquire of
//! one resource without fencing, sent alone, is a plain `SET … NX PX GET`,
//! which costs the server about a third less; see `node::batch`.) fred
//! flushes the socket after each script call, so under load a batch costs
//! one system call and one server wake-up instead of one per lock. A batch
//! of one is the uncontended case.
//!
//! `ARGV` is a sequence of operations, each a head and its arguments. The
//! head is the operation's code and its number of resources `n`, e.g. `T1`,
//! so that a lock sends one entry where a code and counts would take three;
//! the operations' keys follow each other in `KEYS`. The usual lock, a `T1`,
//! `A1` or `R1` sent alone, goes bare: no head, since each argument costs
//! the server about 1,700 instructions; its first argument is then its
//! value, 32 characters long where a head has a few, and its shape tells
//! which it is (two arguments: an acquire, fenced if it has two keys; one:
//! a release). In a batch of
//! several, each operation runs in its own `pcall`: its result is an
//! integer, or a string starting with `ERR` when it failed (e.g. a key
//! holding application data of another type), so one bad operation cannot
//! fail the others; the reply is the array of results. A batch of one runs
//! without `pcall`: its result, or its error, is the reply. An operation that fails
//! leaves nothing written: it reads before it writes, or undoes its write.
//! The script's own errors (a counter that is not a number, the rejoin
//! gate's refusal) are returned as error replies, `{err = …}`, never
//! raised: Redis before 7.0 cannot raise a table out of a script (its
//! error handler fails on it), and the script runs on Redis 6.2 too.
//!
//! The script runs on every node for every lock, so its cost is the
//! server's share of the latency. The usual lock, bare, runs inline before
//! anything is parsed or defined. Server instructions per acquire + release
//! of one resource (`scripts/script-cost.sh`, redis-server under
//! callgrind): 61k fenced, 55k without fencing (36k when its acquire is
//! the plain `SET`; 39k fenced as plain commands, not taken, see the
//! README's Performance section), 48k fenced in batches of 32, 71k fenced behind the
//! rejoin gate (below); the floor (`SET NX PX`, then a one-line
//! compare-and-delete script) takes 30k, and 48k when it acquires with a
//! one-line script too. The floor has no counter and no release
//! notification (its `PUBLISH` alone is 4.7k); most of the rest is Redis's
//! cost per script call and per `redis.call`.
//!
//! Operations (`n` resources; a key of ours is one holding `value`):
//! - `T<n> value ttl_ms`: takes the `n` lock keys or none, and draws a fencing
//!   token from the `n` counters that follow them: one more than the highest
//!   counter, written to all of them. Returns -1 when a lock key is held by
//!   another, else the token. Keys of ours count as free, so a resent
//!   operation is harmless. One resource takes two commands (`SET NX PX`, `INCR`).
//! - `A<n> value ttl_ms`: the same without counters; returns -1 or 0.
//! - `E<n> value ttl_ms`: resets the TTL of every lock key if all are ours: 1, else 0.
//! - `R<n> value`: deletes the lock keys of ours, never a foreign one, and
//!   publishes the value on the channel of each key's name (a waiter
//!   retries at once; the value tells the nodes' copies of one release
//!   apart from the next release). The value is no secret once deleted.
//!   Returns how many were deleted. `D<n> value`: the same, unannounced (a
//!   failed attempt's cleanup).
//! - `F<n> token`: raises each of the `n` counters to at least `token` (the
//!   fencing write-back): 1.
//!
//! With a rejoin delay (`RedlockBuilder::rejoin_delay`), a call with an
//! acquire in it opens with the gate, `J<delay_ms>`, on its own two keys
//! ahead of the operations' (a bare acquire stays bare behind it): on a
//! node that lost its keys, every acquire of the call fails until the
//! delay has passed there; the other operations run.

pub(crate) const BATCH: &str = r#"
-- The usual lock, an acquire or release of one resource sent alone, comes
-- bare: no head, so its first argument is its value (32 characters, where
-- a head has a few), and its shape tells which it is. It runs inline here,
-- before any function is defined: Redis makes a script's functions anew on
-- every call, at about 700 instructions each, more than this costs. It does
-- what `acquire_one` and `release_one` below do for a batch.
if #ARGV[1] > 16 then
  local key, value = KEYS[1], ARGV[1]
  if #ARGV == 1 then
    if redis.call('GET', key) ~= value then return 0 end
    redis.call('DEL', key)
    redis.call('PUBLISH', key, value)
    return 1
  end
  if not redis.call('SET', key, value, 'NX', 'PX', ARGV[2]) then
    if redis.call('GET', key) ~= value then return -1 end
    redis.call('SET', key, value, 'PX', ARGV[2])
  end
  -- Fenced when its counter follows the lock key.
  if #KEYS == 1 then return 0 end
  local token = redis.pcall('INCR', KEYS[2])
  if type(token) == 'table' then redis.call('DEL', key) end
  return token
end

-- Takes one lock key, or leaves it (-1); with a counter, draws a token from
-- it, or returns the counter's error, the key undone.
local function acquire_one(key, counter, value, ttl)
  if not redis.call('SET', key, value, 'NX', 'PX', ttl) then
    if redis.call('GET', key) ~= value then return -1 end
    redis.call('SET', key, value, 'PX', ttl)
  end
  if not counter then return 0 end
  local token = redis.pcall('INCR', counter)
  if type(token) == 'table' then redis.call('DEL', key) end
  return token
end

-- With a rejoin delay, a call that acquires opens with the gate,
-- `J<delay_ms>` (one argument: each costs), on the keys `rejoin` and
-- `warming`; its operations follow, a lone acquire bare. A node that lost its keys (it restarted empty) or
-- never had this app's locks has no `rejoin` key: it grants no lock until
-- `warming`, set to expire after the delay on the node's own clock, is
-- gone. Releases and the rest run as usual meanwhile. `rejoining` is then
-- the refusal. (After the usual lock, which never has the gate.)
local first_key, first_arg, rejoining = 1, 1, false
if string.byte(ARGV[1]) == 74 then
  local delay = string.sub(ARGV[1], 2)
  first_key, first_arg = 3, 2
  local state = redis.call('GET', KEYS[1])
  if state ~= 'ready' then
    if not state then
      redis.call('SET', KEYS[1], 'warming')
      redis.call('SET', KEYS[2], '1', 'PX', delay)
    end
    if state and not redis.call('GET', KEYS[2]) then
      redis.call('SET', KEYS[1], 'ready')
    else
      rejoining = 'REJOINING this node lost its lock keys (it restarted empty) or never held '
        .. 'this app\'s: it grants no lock until ' .. delay .. ' ms after its first use '
        .. '(RedlockBuilder::rejoin_delay)'
    end
  end
  if #ARGV[2] > 16 then
    if rejoining then return {err = rejoining} end
    return acquire_one(KEYS[3], KEYS[4], ARGV[2], ARGV[3])
  end
end

-- A batch of one has at most 3 entries (two operations have at least 4).
local single = #ARGV - first_arg < 3

-- Deletes one lock key if it is ours: 1, else 0.
local function release_one(key, value, announce)
  if redis.call('GET', key) ~= value then return 0 end
  redis.call('DEL', key)
  if announce then redis.call('PUBLISH', key, value) end
  return 1
end

-- An operation's code and number of resources, from its head.
local function parse(head)
  return string.sub(head, 1, 1), tonumber(string.sub(head, 2))
end

-- Runs the operation whose head is ARGV[a] on its keys, from KEYS[first].
-- The usual heads are compared whole: taking a head apart costs more than
-- the rest of a simple operation.
local function run(first, a)
  local head, value = ARGV[a], ARGV[a + 1]
  if rejoining and string.find('TA', string.sub(head, 1, 1), 1, true) then
    return {err = rejoining}
  end
  if head == 'T1' then return acquire_one(KEYS[first], KEYS[first + 1], value, ARGV[a + 2]) end
  if head == 'R1' then return release_one(KEYS[first], value, true) end
  if head == 'A1' then return acquire_one(KEYS[first], nil, value, ARGV[a + 2]) end
  local code, n = parse(head)
  if code == 'T' or code == 'A' then
    local ttl, fenced = ARGV[a + 2], code == 'T'
    local last_lock = first + n - 1
    local last = fenced and last_lock + n or last_lock
    for i = first, last_lock do
      local held = redis.call('GET', KEYS[i])
      if held and held ~= value then return -1 end
    end
    -- Every read before the first write, so that a failure writes nothing.
    local token = 0
    for i = last_lock + 1, last do
      local counter = tonumber(redis.call('GET', KEYS[i]) or '0')
      if counter > token then token = counter end
    end
    for i = first, last_lock do
      redis.call('SET', KEYS[i], value, 'PX', ttl)
    end
    if not fenced then return 0 end
    token = token + 1
    for i = last_lock + 1, last do
      redis.call('SET', KEYS[i], token)
    end
    return token
  elseif code == 'R' or code == 'D' then
    local deleted = 0
    for i = first, first + n - 1 do
      deleted = deleted + release_one(KEYS[i], value, code == 'R')
    end
    return deleted
  elseif code == 'E' then
    for i = first, first + n - 1 do
      if redis.call('GET', KEYS[i]) ~= value then return 0 end
    end
    for i = first, first + n - 1 do
      redis.call('PEXPIRE', KEYS[i], ARGV[a + 2])
    end
    return 1
  else
    local token = tonumber(value)
    for i = first, first + n - 1 do
      if tonumber(redis.call('GET', KEYS[i]) or '0') < token then
        redis.call('SET', KEYS[i], value)
      end
    end
    return 1
  end
end

if single then return run(first_key, first_arg) end

-- Where the operation after the one at (KEYS[first], ARGV[a]) starts: a
-- fenced acquire's counters follow its lock keys; a value follows every
-- head, and a TTL the heads of acquire and extend.
local function after(first, a)
  local head = ARGV[a]
  if head == 'T1' then return first + 2, a + 3 end
  if head == 'R1' then return first + 1, a + 2 end
  local code, n = parse(head)
  local keys = code == 'T' and 2 * n or n
  if code == 'T' or code == 'A' or code == 'E' then return first + keys, a + 3 end
  return first + keys, a + 2
end

local results, key, arg = {}, first_key, first_arg
while arg <= #ARGV do
  local ok, result = pcall(run, key, arg)
  if ok and type(result) ~= 'table' then
    results[#results + 1] = result
  else
    -- Raised (by `redis.call`), or returned as an error reply.
    local message = type(result) == 'table' and result.err or tostring(result)
    results[#results + 1] = 'ERR ' .. message
  end
  key, arg = after(key, arg)
end
return results
"#;
