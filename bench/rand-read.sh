#!/usr/bin/env bash
# Random reads of a file held in the local disk cache (shuffled training samples),
# Nectar vs JuiceFS 1.4 on the same backend (SQLite + a local-directory bucket) with
# the same cache settings (--cache-dir in the work directory, --cache-size
# BENCH_CACHE_SIZE, default 20480 MiB, other cache flags at their defaults):
#
#   1. a file of RAND_MB MiB of random data (default 1024) is copied in;
#   2. remount, drop the page cache, read it once with `cat` (filling the disk cache),
#      and wait until the cache stops growing;
#   3. for each block size in RAND_BS (default "4k 128k"): remount (no client memory
#      left), drop the page cache, and run fio randread for RAND_SECONDS (default 20)
#      with one job (psync; fio's default POSIX_FADV_RANDOM hint keeps the kernel
#      from reading ahead).
#
# Reports IOPS (fio's JSON) and, as details, the client CPU seconds of each run.
#
# Usage: sudo bench/rand-read.sh   (BENCH_ONLY=rand-read bench/run-all.sh; see lib.sh)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MB=${RAND_MB:-1024}
BLOCK_SIZES=${RAND_BS:-4k 128k}
SECONDS_EACH=${RAND_SECONDS:-20}
export BENCH_CACHE_SIZE=${BENCH_CACHE_SIZE:-20480}
command -v fio >/dev/null || die "fio is missing (apt-get install fio)"
bench_init rand-read

SRC=$WORK/source
mkdir -p "$SRC"
head -c $((MB << 20)) /dev/urandom >"$SRC/data"

for fs in $BENCH_FS; do
    fs_format "$fs"
    fs_mount "$fs"
    log "$fs: copying $MB MiB"
    cp "$SRC/data" "$(fs_dir "$fs")/"
    sync
    [ "$fs" = local ] && continue
    fs_remount "$fs"
    drop_caches
    cat "$(fs_dir "$fs")/data" >/dev/null
    # The cache is filled in the background: wait until it stops growing.
    cur=$(wait_cache_settled "$fs")
    record_detail "cache after the first read (MiB)" "$fs" "$((cur >> 20))"
done

for bs in $BLOCK_SIZES; do
    for fs in $BENCH_FS; do
        [ "$fs" = local ] || fs_remount "$fs"
        drop_caches
        out=$WORK/fio-$fs-$bs.json
        c0=$(fs_cpu "$fs")
        run_waited fio --name=rand --filename="$(fs_dir "$fs")/data" --rw=randread --bs="$bs" \
            --time_based --runtime="$SECONDS_EACH" --numjobs=1 --ioengine=psync \
            --output-format=json --output="$out" >"$out.stdout" 2>&1 ||
            { cat "$out.stdout" >&2; die "fio randread $bs on $fs failed"; }
        c1=$(fs_cpu "$fs")
        iops=$(python3 - "$out" <<'PY'
import json, sys
text = open(sys.argv[1]).read()
job = json.loads(text[text.index("{"):])["jobs"][0]   # fio may print notes first
print(f'{job["read"]["iops"]:.0f}')
PY
        ) || die "cannot parse $out"
        log "$fs randread $bs: $iops IOPS, load $(loadavg)"
        record "random read $bs, cached $MB MiB file (IOPS)" "$fs" "$iops"
        [ "$fs" = local ] ||
            record_detail "random read $bs: client CPU s" "$fs" "$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.2f", b - a}')"
    done
done

echo
echo "Random reads of a $MB MiB file from the disk cache ($SECONDS_EACH s each, 1 job, cache $BENCH_CACHE_SIZE MiB):"
print_table "$WORK/results.tsv"
echo
print_table "$WORK/detail.tsv"
