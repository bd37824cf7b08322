#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run` calls exactly this). Run as root on
# Debian: it installs what is missing, checks formatting and lints, starts a local S3
# server (SeaweedFS), a WebDAV server (rclone), a Kerberized HDFS and the metadata
# servers (Redis, PostgreSQL, MariaDB, etcd) on 127.0.0.1, runs every Rust test (unit,
# metadata conformance on every
# engine, data path, VFS, and real FUSE mounts), runs pjdfstest and fsx on mounts, and
# stops what it started even when a step fails.
#
# Nothing here depends on what the machine happens to have or to run: each server takes
# its usual port if it is free and the next free one otherwise; messages are in the C
# locale the tests read them in; files get the usual umask; the Rust tests' temporary
# directories (and mounts) live inside this run's own directory; a run killed before
# its cleanup leaves a note, and the next run stops its servers and removes its files.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export LC_ALL=C
umask 022

scripts/install-deps.sh --test
# shellcheck source=lib/ports.sh
source scripts/lib/ports.sh

# stop_all DIR: stops every server of the run in DIR and removes its mounts and files.
stop_all() {
    local dir=$1
    scripts/stop-seaweedfs.sh "$dir/seaweed" >/dev/null 2>&1 || true
    scripts/stop-hdfs.sh "$dir/hdfs" >/dev/null 2>&1 || true
    scripts/stop-webdav.sh "$dir/webdav" >/dev/null 2>&1 || true
    for s in redis postgres mariadb etcd; do
        scripts/stop-$s.sh "$dir/$s" >/dev/null 2>&1 || true
    done
    # Any mount a failed test left behind, deepest first.
    awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$dir"
}
LAST_RUN=/var/tmp/nectar-test.last
if [[ -f $LAST_RUN ]]; then
    last=$(cat "$LAST_RUN")
    if [[ $last == /var/tmp/nectar-test.* && -d $last ]]; then
        echo "== cleaning up after an earlier run that did not finish ($last)" >&2
        stop_all "$last"
    fi
    rm -f "$LAST_RUN"
fi

echo "== format and lints" >&2
cargo fmt --all --check
# --all-features on every cargo line: the optional TiKV engine (feature `tikv`) is
# compiled, linted and unit-tested, and the workspace is built once, with one feature set.
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

WORK=$(mktemp -d /var/tmp/nectar-test.XXXXXX)
echo "$WORK" >"$LAST_RUN"
# Database servers run as their own users and must reach their directories here.
chmod 755 "$WORK"
# Everyone's temporary directory, like /tmp: the database servers' tools write there too.
mkdir -p "$WORK/tmp"
chmod 1777 "$WORK/tmp"
export TMPDIR=$WORK/tmp
export NECTAR_WEED_PKG=$ROOT/.cache/weed-pkg
export NECTAR_HADOOP_PKG=$ROOT/.cache/hadoop
cleanup() {
    # Best effort: nothing here may change the suite's exit status.
    set +e
    stop_all "$WORK"
    rm -f "$LAST_RUN"
    return 0
}
trap cleanup EXIT

# start SCRIPT ARGS...: runs a start-*.sh script and takes the variables it prints; a
# script that fails stops the suite (an `eval "$(...)"` alone would go on without it).
start() {
    local vars
    vars=$("$@")
    eval "$vars"
}

echo "== S3 server" >&2
start scripts/start-seaweedfs.sh "$WORK/seaweed" "$(free_port 8333 1 2 3 4 10000 10001 10002 10003 10004)"

echo "== WebDAV server (rclone)" >&2
start scripts/start-webdav.sh "$WORK/webdav" "$(free_port 8480)"

echo "== Kerberized HDFS (KDC, two NameNodes, a DataNode)" >&2
# Tickets of the tenant's principal live 90 s, less than the HDFS tests run: the mounts
# must renew them from the keytab.
NECTAR_HDFS_TICKET_SECONDS=${NECTAR_HDFS_TICKET_SECONDS:-90} \
    start scripts/start-hdfs.sh "$WORK/hdfs" "$(free_port 18200 1 2 3 4)"

echo "== metadata servers" >&2
start scripts/start-redis.sh "$WORK/redis" standalone "$(free_port 6379)"
start scripts/start-postgres.sh "$WORK/postgres" "$(free_port 5432)"
start scripts/start-mariadb.sh "$WORK/mariadb" "$(free_port 3306)"
start scripts/start-etcd.sh "$WORK/etcd" "$(free_port 2379 1)"
export NECTAR_TEST_META_URLS="$NECTAR_TEST_REDIS_URL $NECTAR_TEST_POSTGRES_URL $NECTAR_TEST_MYSQL_URL $NECTAR_TEST_ETCD_URL"
# The JuiceFS binary install-deps.sh put there, for the migration tests.
export NECTAR_TEST_JUICEFS=$ROOT/.cache/juicefs/bin/juicefs

echo "== Rust tests" >&2
cargo build --workspace --all-targets --all-features --quiet
cargo test --workspace --all-features --quiet 2>&1 | tee "$WORK/cargo-test.log"

echo "== pjdfstest (the trash on, as by default)" >&2
scripts/pjdfstest.sh target/debug/nectar
echo "== pjdfstest, volume with POSIX ACLs and no trash" >&2
scripts/pjdfstest.sh target/debug/nectar --enable-acl --trash-days 0

echo "== fsx" >&2
scripts/fsx.sh target/debug/nectar "${NECTAR_FSX_OPS:-100000}"
echo "== fsx on Redis, no trash" >&2
NECTAR_FSX_META="$NECTAR_TEST_REDIS_URL?prefix=fsx:" scripts/fsx.sh target/debug/nectar "${NECTAR_FSX_REDIS_OPS:-30000}"
echo "== fsx on etcd, no trash (compaction must keep up with appends)" >&2
NECTAR_FSX_META="${NECTAR_TEST_ETCD_URL}-fsx" scripts/fsx.sh target/debug/nectar "${NECTAR_FSX_ETCD_OPS:-20000}"
