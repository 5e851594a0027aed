#!/usr/bin/env bash
# Server instructions per lock cycle (acquire, then release of the same
# key), for the lock script against the floor's plain command and one-line
# script: a redis-server under callgrind, fed by `redis-cli --pipe`, once
# per variant, at two lengths so that the startup cost cancels out.
#
#   scripts/script-cost.sh [VARIANT...]   (all variants by default)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
command -v redis-cli >/dev/null || { echo "redis-cli is needed (package redis-tools)" >&2; exit 1; }

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
value=0123456789abcdef0123456789abcdef
short=640 long=6400

# resp ARGS...: one command in the protocol's encoding.
resp() {
  printf '*%d\r\n' $#
  local a
  for a in "$@"; do printf '$%d\r\n%s\r\n' ${#a} "$a"; done
}

# commands VARIANT CYCLES: the commands of CYCLES lock cycles.
commands() {
  local variant=$1 cycles=$2 i j keys args
  for ((i = 0; i < cycles; i++)); do
    local k="k:$i" f="f:$i"
    case $variant in
      floor) resp SET "$k" $value NX PX 10000; resp EVALSHA "$release" 1 "$k" $value ;;
      floor-script) resp EVALSHA "$acquire" 1 "$k" $value 10000; resp EVALSHA "$release" 1 "$k" $value ;;
      fenced) resp EVALSHA "$batch" 2 "$k" "$f" $value 10000; resp EVALSHA "$batch" 1 "$k" $value ;;
      plain) resp SET "$k" $value NX PX 10000 GET; resp EVALSHA "$batch" 1 "$k" $value ;;
      fenced-plain) resp SET "$k" $value NX PX 10000 GET; resp INCR "$f"; resp EVALSHA "$batch" 1 "$k" $value ;;
      unfenced) resp EVALSHA "$batch" 1 "$k" $value 10000; resp EVALSHA "$batch" 1 "$k" $value ;;
      gated)
        # Behind the rejoin gate of a node that has waited out its delay.
        ((i == 0)) && resp SET r ready
        resp EVALSHA "$batch" 4 r w "$k" "$f" J30000 $value 10000
        resp EVALSHA "$batch" 1 "$k" $value
        ;;
      batch32)
        ((i % 32 == 0)) || continue
        keys=() args=()
        for ((j = i; j < i + 32; j++)); do keys+=("k:$j" "f:$j"); args+=(T1 $value 10000); done
        resp EVALSHA "$batch" ${#keys[@]} "${keys[@]}" "${args[@]}"
        keys=() args=()
        for ((j = i; j < i + 32; j++)); do keys+=("k:$j"); args+=(R1 $value); done
        resp EVALSHA "$batch" ${#keys[@]} "${keys[@]}" "${args[@]}"
        ;;
    esac
  done
}

# instructions VARIANT CYCLES: the server's total for CYCLES cycles.
instructions() {
  valgrind --tool=callgrind --callgrind-out-file="$out/cg" \
    redis-server --port "$port" --save "" --appendonly no >/dev/null 2>"$out/log" &
  server=$!
  for _ in $(seq 1 100); do redis-cli -p "$port" PING >/dev/null 2>&1 && break; sleep 0.2; done
  batch=$(redis-cli -p "$port" SCRIPT LOAD "$(cat "$out/batch.lua")")
  acquire=$(redis-cli -p "$port" SCRIPT LOAD "$(cat "$out/acquire.lua")")
  release=$(redis-cli -p "$port" SCRIPT LOAD "$(cat "$out/release.lua")")
  commands "$1" "$2" >"$out/commands"
  redis-cli -p "$port" --pipe <"$out/commands" >"$out/pipe"
  grep -q "errors: 0" "$out/pipe" || { cat "$out/pipe" >&2; exit 1; }
  redis-cli -p "$port" SHUTDOWN NOSAVE >/dev/null 2>&1 || true
  wait "$server" || true
  server=""
  grep -o 'Collected : [0-9]*' "$out/log" | awk '{print $3}'
}

measure() {
  local label=$1 variant=$2 a b
  [ ${#chosen[@]} -eq 0 ] || [[ " ${chosen[*]} " == *" $variant "* ]] || return 0
  a=$(instructions "$variant" $short)
  b=$(instructions "$variant" $long)
  awk -v l="$label" -v a="$a" -v b="$b" -v n=$((long - short)) \
    'BEGIN { printf "  %-50s %7d instructions\n", l, (b - a) / n }'
}
chosen=("$@")
echo "redis-server, per acquire + release of one fresh key (pipelined):"
measure "floor: SET NX PX + compare-and-delete script" floor
measure "floor, script acquire: one-line scripts" floor-script
measure "lock script, fenced (the default)" fenced
measure "lock script, fencing off" unfenced
measure "fencing off, sent alone: SET NX PX GET + script" plain
measure "fenced, sent alone: SET NX PX GET, INCR + script" fenced-plain
measure "lock script, fenced, behind the rejoin gate" gated
measure "lock script, fenced, in batches of 32" batch32
