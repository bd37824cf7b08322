#!/usr/bin/env bash
# The training epoch: the second read of a dataset from the local disk cache, Nectar vs
# JuiceFS 1.4 on the same backend (SQLite + a local-directory bucket) with the same
# cache settings (--cache-dir in the work directory, --cache-size BENCH_CACHE_SIZE,
# default 20480 MiB, every other cache flag at its default):
#
#   1. CACHE_FILES files of CACHE_FILE_MB MiB of random data (default 20 x 100 MiB =
#      2 GiB) are copied in;
#   2. remount, drop the page cache, read every file once (epoch 1: from the bucket,
#      filling the disk cache); wait until the cache stops growing;
#   3. remount (so no client memory is left), drop the page cache, read every file
#      again (epoch 2: from the disk cache) and check its checksum.
#
# Reports MiB/s of both epochs (wall clock of `cat` over all files, one reader, as a
# data loader reads a shard list) and, as details, the client CPU seconds per epoch
# and the bytes each cache holds.
#
# Usage: sudo bench/cache-read.sh   (see lib.sh for the environment)
#   CACHE_FILES, CACHE_FILE_MB   the dataset (default 20 files of 100 MiB)
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FILES=${CACHE_FILES:-20}
FILE_MB=${CACHE_FILE_MB:-100}
export BENCH_CACHE_SIZE=${BENCH_CACHE_SIZE:-20480}
bench_init cache-read

SRC=$WORK/source
mkdir -p "$SRC"
for i in $(seq 1 "$FILES"); do
    head -c $((FILE_MB << 20)) /dev/urandom >"$SRC/f$i"
done
(cd "$SRC" && sha256sum f* >"$WORK/sums")
TOTAL_MB=$((FILES * FILE_MB))

for fs in $BENCH_FS; do
    fs_format "$fs"
    fs_mount "$fs"
    log "$fs: copying $FILES x $FILE_MB MiB"
    cp "$SRC"/f* "$(fs_dir "$fs")/"
    sync
done

# epoch FS N: remount, drop caches, read everything, record MiB/s and CPU.
epoch() {
    local fs=$1 n=$2 dir t0 t1 c0 c1
    fs_remount "$fs"
    drop_caches
    dir=$(fs_dir "$fs")
    c0=$(fs_cpu "$fs")
    t0=$(now)
    for i in $(seq 1 "$FILES"); do
        cat "$dir/f$i" >/dev/null
    done
    t1=$(now)
    c1=$(fs_cpu "$fs")
    record "epoch $n read (MiB/s)" "$fs" "$(awk -v m="$TOTAL_MB" -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", m / (b - a)}')"
    record_detail "epoch $n client CPU (s)" "$fs" "$(awk -v a="$c0" -v b="$c1" 'BEGIN{printf "%.2f", b - a}')"
}

for fs in $BENCH_FS; do
    [ "$fs" = local ] && continue
    epoch "$fs" 1
    # The cache is filled in the background: wait until it stops growing.
    cur=$(wait_cache_settled "$fs")
    record_detail "cache after epoch 1 (MiB)" "$fs" "$((cur >> 20))"
    epoch "$fs" 2
    (cd "$(fs_dir "$fs")" && sha256sum -c --quiet "$WORK/sums") || die "$fs: checksums differ after epoch 2"
done

echo
echo "Second read of a $TOTAL_MB MiB dataset from the disk cache ($FILES files, cache $BENCH_CACHE_SIZE MiB):"
print_table "$WORK/results.tsv"
echo
print_table "$WORK/detail.tsv"
