#!/usr/bin/env bash
# Runs fsx (crates.io, the File System eXerciser) with its full operation mix on a
# fresh Nectar mount: pread/pwrite, mmap reads and writes with msync, truncate,
# fsync/fdatasync, posix_fallocate, hole punching, sendfile, fadvise, copy_file_range
# and close/reopen, verifying every read against its model of the file.
#
#   scripts/fsx.sh NECTAR_BINARY [OPERATIONS] [SEED]     (default 100000 operations)
#
# Installs fsx into .cache/tools if needed; unmounts and cleans up even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
NECTAR=$(realpath "$1")
OPS=${2:-100000}
SEED=${3:-$RANDOM}
TOOLS=$ROOT/.cache/tools

if [[ ! -x $TOOLS/bin/fsx ]]; then
    echo "fsx: installing fsx 0.3.2 into $TOOLS" >&2
    cargo install --quiet --locked --root "$TOOLS" fsx --version 0.3.2 >&2
fi

WORK=$(mktemp -d /tmp/nectar-fsx.XXXXXX)
MNT=$WORK/mnt
cleanup() {
    if mountpoint -q "$MNT" 2>/dev/null; then
        "$NECTAR" umount "$MNT" 2>/dev/null || "$NECTAR" umount --force "$MNT" || true
    fi
    [[ -f $WORK/mount.pid ]] && kill "$(cat "$WORK/mount.pid")" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MNT"
"$NECTAR" format "sqlite3://$WORK/meta.db" fsxvol --bucket "$WORK/data" --trash-days 0 2>/dev/null
"$NECTAR" mount -d "sqlite3://$WORK/meta.db" "$MNT" --log "$WORK/mount.log" --pid-file "$WORK/mount.pid"
cat >"$WORK/fsx.toml" <<'TOML'
flen = 262144
[opsize]
max = 65536
min = 0
align = 1
[weights]
close_open = 1
read = 10
write = 10
mapread = 10
mapwrite = 10
invalidate = 1
truncate = 1
fsync = 1
fdatasync = 1
posix_fallocate = 1
punch_hole = 1
sendfile = 1
posix_fadvise = 1
copy_file_range = 1
TOML
# fsx 0.3.2 never unmaps the mapping of a mapped read (domapread has no munmap), so a
# long run exhausts vm.max_map_count (65530) and its next mmap fails with ENOMEM. Give a
# long run room: about one mapping per operation is more than enough.
if (($(cat /proc/sys/vm/max_map_count) < OPS + 65536)); then
    if ! sysctl -q -w vm.max_map_count=$((OPS + 65536)) 2>/dev/null; then
        echo "fsx: vm.max_map_count is $(cat /proc/sys/vm/max_map_count); fsx leaks one mapping" \
            "per mapped read, so a run this long may fail with ENOMEM (raise it as root)" >&2
    fi
fi
echo "fsx: $OPS operations, seed $SEED" >&2
start=$(date +%s)
if (cd "$WORK" && "$TOOLS/bin/fsx" -q -f "$WORK/fsx.toml" -N "$OPS" -S "$SEED" -P "$WORK" "$MNT/fsxfile") >"$WORK/fsx.out" 2>&1; then
    echo "fsx: $OPS operations A-OK in $(($(date +%s) - start)) s (seed $SEED)" >&2
    echo "fsx: 1 passed, 0 failed"
else
    tail -40 "$WORK/fsx.out" >&2
    echo "mount log:" >&2
    tail -20 "$WORK/mount.log" >&2
    # Keep fsx's operation log and good-file image: the work directory goes with cleanup.
    KEEP=/tmp/nectar-fsx-failed-$SEED
    mkdir -p "$KEEP" && cp "$WORK"/fsx.out "$WORK"/mount.log "$WORK"/*.fsx* "$KEEP"/ 2>/dev/null
    echo "fsx: logs kept in $KEEP" >&2
    echo "fsx: 0 passed, 1 failed (seed $SEED; rerun with: scripts/fsx.sh $1 $OPS $SEED)"
    exit 1
fi
