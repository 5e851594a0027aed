#!/usr/bin/env bash
# Client-side cost of one lock + unlock, free of timing noise: instructions
# (callgrind) and heap allocations (dhat) per operation of one benchmark
# system, from two runs of different lengths (startup cancels out).
# valgrind does not follow the redis-server children: this is the client alone.
#
#   scripts/profile.sh                      # redlock and the floors, N = 3
#   scripts/profile.sh 1 redlock            # N = 1, one system
set -euo pipefail
cd "$(dirname "$0")/.."

nodes="${1:-3}"
shift || true
systems=("$@")
if [ ${#systems[@]} -eq 0 ]; then
  systems=("floor (fred SET NX + script)" "floor, script acquire" "redlock" "redlock, fencing off")
fi
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 1; }
cargo build --release -q -p redlock-bench
bench=target/release/redlock-bench
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# total TOOL SYSTEM OPS: the tool's total count for a run of OPS operations.
total() {
  local tool=$1 system=$2 ops=$3 log="$out/log"
  valgrind --tool="$tool" "--$tool-out-file=$out/$tool.out" \
    "$bench" --only uncontended-serial --nodes "$nodes" --system "$system" --ops "$ops" --no-peer \
    >/dev/null 2>"$log"
  if [ "$tool" = callgrind ]; then
    grep -o 'Collected : [0-9]*' "$log" | awk '{print $3}'
  else
    grep -o 'Total: *[0-9,]* bytes in [0-9,]* blocks' "$log" | awk '{gsub(",", "", $5); print $5}'
  fi
}

short=500 long=1500
echo "N=$nodes, uncontended-serial, per acquire + release (client process only):"
for system in "${systems[@]}"; do
  i1=$(total callgrind "$system" $short) i2=$(total callgrind "$system" $long)
  a1=$(total dhat "$system" $short) a2=$(total dhat "$system" $long)
  awk -v s="$system" -v i="$(( i2 - i1 ))" -v a="$(( a2 - a1 ))" -v n="$(( long - short ))" \
    'BEGIN { printf "  %-30s %8d instructions  %5.1f allocations\n", s, i / n, a / n }'
done
