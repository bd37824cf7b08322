#!/usr/bin/env bash
# Small files on S3 with and without --writeback: the checkpoint and dataset writes of
# the seed's users, who keep their data in a remote object store.
#
# Starts a SeaweedFS S3 server on 127.0.0.1 (scripts/start-seaweedfs.sh, in the work
# directory, on a free port) behind bench/latency-proxy.py, which adds
# BENCH_S3_DELAY_MS (default 20) to every request: the seed's users write to an object
# store across a network, and a store on the same machine answers in a millisecond,
# which no cache needs to hide. Then it runs bench/small-files.sh (10 loops x 1,000
# files of 100 bytes, one `cp` per file) with SQLite metadata and that bucket:
#
#   1. Nectar without --writeback (every block uploaded before close returns);
#   2. Nectar and JuiceFS 1.4, both with --writeback and the same disk cache
#      (BENCH_CACHE_SIZE, default 10240 MiB, in each work directory).
#
# Prints both tables and the two ratios the issue names: Nectar with writeback over
# Nectar without, and Nectar over JuiceFS, both with writeback. The server is stopped
# and its directory removed on exit.
#
# Usage: sudo bench/writeback.sh   (BENCH_ONLY=writeback bench/run-all.sh)
set -euo pipefail
BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
# shellcheck source=../scripts/lib/ports.sh
source "$REPO_DIR/scripts/lib/ports.sh"

SEAWEED=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/nectar-bench-s3.XXXXXX")
PROXY_PID=
cleanup() {
    [ -n "$PROXY_PID" ] && kill "$PROXY_PID" 2>/dev/null
    "$REPO_DIR/scripts/stop-seaweedfs.sh" "$SEAWEED/server" >/dev/null 2>&1 || true
    rm -rf "$SEAWEED"
}
trap cleanup EXIT
export NECTAR_WEED_PKG=${NECTAR_WEED_PKG:-$REPO_DIR/.cache/weed-pkg}
S3_PORT=$(free_port 8333 1 2 3 4 10000 10001 10002 10003 10004)
eval "$("$REPO_DIR/scripts/start-seaweedfs.sh" "$SEAWEED/server" "$S3_PORT")"
DELAY=${BENCH_S3_DELAY_MS:-20}
PROXY_PORT=$(free_port $((S3_PORT + 20)))
python3 "$BENCH_DIR/latency-proxy.py" "$PROXY_PORT" "$S3_PORT" "$DELAY" &
PROXY_PID=$!
for _ in $(seq 1 50); do
    curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$PROXY_PORT/" && break
    sleep 0.1
done
echo "S3 at 127.0.0.1:$S3_PORT, through a proxy adding $DELAY ms per request at 127.0.0.1:$PROXY_PORT"
export BENCH_STORAGE=s3 BENCH_S3_BUCKET=${NECTAR_TEST_S3/:$S3_PORT/:$PROXY_PORT}
export ACCESS_KEY=$NECTAR_TEST_S3_ACCESS_KEY SECRET_KEY=$NECTAR_TEST_S3_SECRET_KEY
export BENCH_CACHE_SIZE=${BENCH_CACHE_SIZE:-10240}

RESULTS=$SEAWEED/results.tsv
: >"$RESULTS"
echo "== without --writeback"
BENCH_FS=nectar BENCH_MOUNT_OPTS="" BENCH_RESULTS=$RESULTS.plain "$BENCH_DIR/small-files.sh"
echo
echo "== with --writeback"
BENCH_FS="nectar juicefs" BENCH_MOUNT_OPTS="--writeback" BENCH_RESULTS=$RESULTS.wb "$BENCH_DIR/small-files.sh"
python3 - "$RESULTS.plain" "$RESULTS.wb" "$DELAY" <<'PY'
import sys
def rate(path, fs):
    for line in open(path):
        metric, f, value = line.rstrip("\n").split("\t")
        if f == fs and "files/s" in metric:
            return float(value)
    sys.exit(f"no files/s of {fs} in {path}")
plain, wb, jfs = rate(sys.argv[1], "nectar"), rate(sys.argv[2], "nectar"), rate(sys.argv[2], "juicefs")
print()
print(f"small files on S3 (+{sys.argv[3]} ms per request): Nectar {plain:.0f} files/s without writeback, {wb:.0f} with; JuiceFS {jfs:.0f} with")
print(f"  Nectar writeback / Nectar without: {wb / plain:.2f}x")
print(f"  Nectar writeback / JuiceFS writeback: {wb / jfs:.2f}x")
PY
