#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run` calls exactly this). Run as root on
# Debian: it installs what is missing, checks formatting and lints, starts a local
# S3 server (SeaweedFS) and the metadata servers (Redis, PostgreSQL, MariaDB, etcd) on
# 127.0.0.1, runs every Rust test (unit, metadata conformance on every engine,
# data path, VFS, and real FUSE mounts), runs pjdfstest and fsx on mounts, and stops what it
# started even when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

scripts/install-deps.sh

echo "== format and lints" >&2
cargo fmt --all --check
# --all-features on every cargo line: the optional TiKV engine (feature `tikv`) is
# compiled, linted and unit-tested, and the workspace is built once, with one feature set.
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

WORK=$(mktemp -d /tmp/nectar-test.XXXXXX)
# Database servers run as their own users and must reach their directories here.
chmod 755 "$WORK"
export NECTAR_WEED_PKG=$ROOT/.cache/weed-pkg
cleanup() {
    # Best effort: nothing here may change the suite's exit status.
    set +e
    scripts/stop-seaweedfs.sh "$WORK/seaweed" >/dev/null 2>&1 || true
    for s in redis postgres mariadb etcd; do
        scripts/stop-$s.sh "$WORK/$s" >/dev/null 2>&1 || true
    done
    # Any mount a failed test left behind.
    grep -o " $WORK[^ ]*\| /tmp/\.tmp[^ ]*" /proc/self/mounts 2>/dev/null | while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf "$WORK"
    return 0
}
trap cleanup EXIT

echo "== S3 server" >&2
eval "$(scripts/start-seaweedfs.sh "$WORK/seaweed")"

echo "== metadata servers" >&2
eval "$(scripts/start-redis.sh "$WORK/redis")"
eval "$(scripts/start-postgres.sh "$WORK/postgres")"
eval "$(scripts/start-mariadb.sh "$WORK/mariadb")"
eval "$(scripts/start-etcd.sh "$WORK/etcd")"
export NECTAR_TEST_META_URLS="$NECTAR_TEST_REDIS_URL $NECTAR_TEST_POSTGRES_URL $NECTAR_TEST_MYSQL_URL $NECTAR_TEST_ETCD_URL"

echo "== Rust tests" >&2
cargo build --workspace --all-targets --all-features --quiet
cargo test --workspace --all-features --quiet 2>&1 | tee "$WORK/cargo-test.log"

echo "== pjdfstest" >&2
scripts/pjdfstest.sh target/debug/nectar
echo "== pjdfstest, volume with POSIX ACLs" >&2
scripts/pjdfstest.sh target/debug/nectar --enable-acl

echo "== fsx" >&2
scripts/fsx.sh target/debug/nectar "${NECTAR_FSX_OPS:-100000}"
