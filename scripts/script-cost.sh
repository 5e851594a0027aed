#!/usr/bin/env bash
# Server instructions per call of the lock script, against plain commands
# and one-line scripts: a redis-server under callgrind, driven by
# redis-benchmark, once per command; the startup cost is measured and taken off.
#
#   scripts/script-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
command -v redis-benchmark >/dev/null || { echo "redis-benchmark is needed (package redis-tools)" >&2; exit 1; }

out=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  rm -rf "$out"
}
trap cleanup EXIT

sed -n '/^pub(crate) const BATCH: &str = r#"/,/^"#;/p' redlock-core/src/scripts.rs | sed '1d;$d' >"$out/batch.lua"
echo "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 else return 0 end" >"$out/acquire.lua"
echo "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end" >"$out/release.lua"

port=$((20000 + RANDOM % 20000))
calls=5000
value=0123456789abcdef0123456789abcdef

# instructions CALLS ARGS...: the server's total for CALLS calls of ARGS
# (@batch, @acquire, @release stand for the scripts' hashes).
instructions() {
  local n=$1
  shift
  valgrind --tool=callgrind --callgrind-out-file="$out/cg" \
    redis-server --port "$port" --save "" --appendonly no >/dev/null 2>"$out/log" &
  server=$!
  for _ in $(seq 1 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.2; done
  local args=("$@") name
  for name in batch acquire release; do
    local sha
    sha=$(redis-cli -p "$port" SCRIPT LOAD "$(cat "$out/$name.lua")")
    args=("${args[@]//@$name/$sha}")
  done
  if [ "$n" -gt 0 ]; then
    redis-benchmark -p "$port" -n "$n" -c 1 -r 100000000 "${args[@]}" >/dev/null
  fi
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$server" || true
  server=""
  grep -o 'Collected : [0-9]*' "$out/log" | awk '{print $3}'
}

base=$(instructions 0 PING)
measure() {
  local label=$1
  shift
  local total
  total=$(instructions "$calls" "$@")
  awk -v l="$label" -v t="$total" -v b="$base" -v n="$calls" \
    'BEGIN { printf "  %-42s %7d instructions per call\n", l, (t - b) / n }'
}
echo "redis-server, one client, fresh keys:"
measure "PING" PING
measure "SET NX PX" SET "k:__rand_int__" $value NX PX 10000
measure "one-line acquire script (SET NX PX)" EVALSHA @acquire 1 "a:__rand_int__" $value 10000
measure "lock script: acquire, fenced" EVALSHA @batch 2 "b:__rand_int__" "f:__rand_int__" A 2 $value 10000 1
measure "lock script: acquire, unfenced" EVALSHA @batch 1 "c:__rand_int__" A 1 $value 10000 1
measure "one-line compare-and-delete script" EVALSHA @release 1 "k:__rand_int__" $value
measure "lock script: release" EVALSHA @batch 1 "k:__rand_int__" R 1 $value 1
