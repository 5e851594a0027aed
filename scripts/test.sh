#!/usr/bin/env bash
# The one test command: installs what a fresh machine lacks, then runs the
# format and lint checks and every test of the workspace against real
# redis-server processes, which the tests start and stop themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

# redis-cli joins the cluster of tests/cluster.rs.
if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    echo "== redis-server or redis-cli is missing: installing Debian's packages"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq redis-server redis-tools >/dev/null
fi
redis-server --version

# Every server the harness starts leaves its pid here until it is stopped;
# whatever a killed test left behind is stopped on the way out.
REDLOCK_TEST_PIDS=$(mktemp -d)
export REDLOCK_TEST_PIDS
stop_leftovers() {
    for file in "$REDLOCK_TEST_PIDS"/*; do
        [ -e "$file" ] || continue
        pid=$(basename "$file")
        if tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -q redis-server; then
            kill -CONT "$pid" 2>/dev/null || true
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    rm -rf "$REDLOCK_TEST_PIDS"
}
trap stop_leftovers EXIT

echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo test --workspace --doc
    cargo nextest run --workspace --profile ci
else
    cargo test --workspace
fi

# The engine's tests again, on the oldest and the newest Redis we support
# (Debian's is 7.0). Before 7.0, SET takes no NX with GET, a script cannot
# raise a table, and an ACL user may use every channel unless told
# otherwise. Neither build has TLS; 6.2 does not run the cluster tests
# (they give each server its bus port, an option of 7.0).
# run_on VERSION [no-cluster]
run_on() {
    local version=$1 filter="test(=tls_with_a_private_ca)" skips=(--skip tls_with_a_private_ca)
    if [ "${2:-}" = no-cluster ]; then
        filter="binary(cluster) | $filter"
        skips+=(--skip cluster)
    fi
    echo "== the engine's tests against Redis $version"
    REDIS_SERVER=$(bash scripts/redis-server.sh "$version")
    export REDIS_SERVER
    "$REDIS_SERVER" --version
    if cargo nextest --version >/dev/null 2>&1; then
        cargo nextest run --workspace --profile ci -E "package(redlock) & kind(test) & not ($filter)"
    else
        cargo test -p redlock --tests -- "${skips[@]}"
    fi
}
run_on 6.2 no-cluster
run_on 8.2
