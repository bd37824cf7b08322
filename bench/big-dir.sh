#!/usr/bin/env bash
# One directory of many entries: how long `ls` takes to print its first name, how long the
# whole listing takes, and how much memory the mount process holds while listing.
#
#   bench/big-dir.sh [ENTRIES] [NECTAR_BINARY]     (defaults: 1000000, target/release/nectar)
#
# Formats a volume on SQLite + a local directory in a temporary directory, creates the
# entries through the mount with 8 parallel workers (empty files), then lists the
# directory twice with `ls -f` (unsorted, so ls prints as entries arrive): once to time
# the first line, once in full while sampling the mount process's VmRSS. A listing is
# streamed in pages of 1024 entries, so the client's memory must not grow with the
# directory. Unmounts and cleans up even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
NECTAR=$(realpath "${2:-target/release/nectar}")
WORK=$(mktemp -d /tmp/nectar-bigdir.XXXXXX)
MNT=$WORK/mnt
mkdir -p "$MNT"
cleanup() {
    set +e
    if mountpoint -q "$MNT"; then
        "$NECTAR" umount "$MNT" 2>/dev/null || "$NECTAR" umount --force "$MNT"
    fi
    [[ -f $WORK/mount.pid ]] && kill "$(cat "$WORK/mount.pid")" 2>/dev/null
    rm -rf "$WORK"
    return 0
}
trap cleanup EXIT

"$NECTAR" format "sqlite3://$WORK/meta.db" bigdir --storage file --bucket "$WORK/data" \
    >"$WORK/format.log" 2>&1 || { cat "$WORK/format.log" >&2; exit 1; }
"$NECTAR" mount -d "sqlite3://$WORK/meta.db" "$MNT" --log "$WORK/mount.log" \
    --pid-file "$WORK/mount.pid" >&2
PID=$(cat "$WORK/mount.pid")
rss() { awk '/VmRSS/ {print $2}' "/proc/$PID/status"; }

mkdir "$MNT/d"
start=$(date +%s.%N)
python3 - "$MNT/d" "$N" <<'EOF'
import os, sys
from multiprocessing import Pool
d, n = sys.argv[1], int(sys.argv[2])
def make(w):
    for i in range(w, n, 8):
        os.close(os.open(f"{d}/entry-{i:08d}", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
with Pool(8) as p:
    p.map(make, range(8))
EOF
created=$(date +%s.%N)
awk -v n="$N" -v a="$start" -v b="$created" \
    'BEGIN { printf "created %d entries in %.1f s (%.0f creates/s)\n", n, b - a, n / (b - a) }'
sleep 2
rss_before=$(rss)

# Time to the first name: ls prints its first page before it reads the rest.
# (ls dies of SIGPIPE once head has its line, hence the `|| true`.)
TIMEFORMAT=%R
first=$( { time (ls -f "$MNT/d" | head -1 >/dev/null || true); } 2>&1)

# The full listing, sampling the mount's memory as it goes.
peak=$rss_before
ls -f "$MNT/d" | wc -l >"$WORK/count" &
LS=$!
t0=$(date +%s.%N)
while kill -0 $LS 2>/dev/null; do
    r=$(rss)
    ((r > peak)) && peak=$r
    sleep 0.2
done
t1=$(date +%s.%N)
count=$(cat "$WORK/count")
echo "ls -f | head -1: first name after ${first} s"
awk -v c="$count" -v a="$t0" -v b="$t1" \
    'BEGIN { printf "ls -f: %d names (with . and ..) in %.1f s\n", c, b - a }'
echo "mount RSS: ${rss_before} KiB before the listing, peak ${peak} KiB during it"
if ((count != N + 2)); then
    echo "big-dir: expected $((N + 2)) names, listed $count" >&2
    exit 1
fi
