#!/usr/bin/env bash
# Runs fsx (crates.io, the File System eXerciser) with its full operation mix on a
# fresh Nectar mount: pread/pwrite, mmap reads and writes with msync, truncate,
# fsync/fdatasync, posix_fallocate, hole punching, sendfile, fadvise, copy_file_range
# and close/reopen, verifying every read against its model of the file.
#
#   scripts/fsx.sh NECTAR_BINARY [OPERATIONS] [SEED]     (default 100000 operations)
#   scripts/fsx.sh local [OPERATIONS] [SEED]             (the same run on a local directory)
#
# NECTAR_FSX_META names another metadata engine (a META-URL holding no volume, e.g.
# redis://127.0.0.1:6379/1?prefix=fsx: ), instead of a SQLite file in the work
# directory; the volume made there is destroyed at the end. The volume has no trash
# (NECTAR_FSX_TRASH_DAYS to change that), so data is deleted as soon as fsx replaces it.
#
# The seed is random unless given and is printed, so any run can be replayed; `local`
# tells whether a failure is Nectar's or one that a local file system shows too.
#
# Builds fsx 0.3.2 from its crates.io source into .cache/tools if needed, with one fix:
# its mapped read (domapread) never unmaps what it mapped, so each one leaks a mapping;
# a long run slows to a crawl in its own page tables (half a million operations took an
# hour, most of it fsx's CPU) and then fails with ENOMEM at vm.max_map_count. The fix adds
# the munmap its mapped write already does; what fsx checks is unchanged.
# Unmounts and cleans up even on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
if [[ $# -lt 1 ]]; then
    echo "usage: $0 NECTAR_BINARY|local [OPERATIONS] [SEED]" >&2
    exit 2
fi
NECTAR=
[[ $1 == local ]] || NECTAR=$(realpath "$1")
OPS=${2:-100000}
SEED=${3:-$RANDOM}
TOOLS=$ROOT/.cache/tools
FSX=$TOOLS/bin/fsx-0.3.2-munmap

if [[ ! -x $FSX ]]; then
    echo "fsx: building fsx 0.3.2 (with the munmap fix) into $TOOLS" >&2
    SRC=$TOOLS/src/fsx-0.3.2
    if [[ ! -f $SRC/Cargo.toml ]]; then
        # Fetch the published crate through a throwaway manifest that depends on it.
        FETCH=$TOOLS/src/fetch
        mkdir -p "$FETCH/src"
        printf '[package]\nname = "fetch-fsx"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nfsx = "=0.3.2"\n[workspace]\n' >"$FETCH/Cargo.toml"
        : >"$FETCH/src/lib.rs"
        cargo fetch --quiet --manifest-path "$FETCH/Cargo.toml" >&2
        REG=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/fsx-0.3.2 | head -1)
        rm -rf "$SRC" && mkdir -p "$(dirname "$SRC")" && cp -r "$REG" "$SRC"
        # A workspace of its own: it sits below Nectar's.
        printf '\n[workspace]\n' >>"$SRC/Cargo.toml"
    fi
    if ! grep -q 'munmap(p, map_size).unwrap();\s*}\s*}\s*fn domapwrite' <(tr '\n' ' ' <"$SRC/src/main.rs"); then
        perl -0pi -e 's/(self\.check_eofpage\(offset, p\.as_ptr\(\), size\);\n)(\s*\}\n\s*\}\n\n\s*fn domapwrite)/$1            munmap(p, map_size).unwrap();\n$2/' "$SRC/src/main.rs"
    fi
    grep -q 'munmap(p, map_size).unwrap();\s*}\s*}\s*fn domapwrite' <(tr '\n' ' ' <"$SRC/src/main.rs") ||
        { echo "fsx: the munmap fix did not apply to $SRC/src/main.rs" >&2; exit 1; }
    cargo install --quiet --locked --root "$TOOLS" --path "$SRC" --target-dir "$TOOLS/target" >&2
    mv "$TOOLS/bin/fsx" "$FSX"
fi

WORK=$(mktemp -d /tmp/nectar-fsx.XXXXXX)
MNT=$WORK/mnt
META=${NECTAR_FSX_META:-sqlite3://$WORK/meta.db}
# A password goes through META_PASSWORD, out of the process list.
if [[ $META =~ ^([a-z0-9]+://[^:/@]*):([^@/]*)@(.*)$ ]]; then
    export META_PASSWORD=${BASH_REMATCH[2]}
    META="${BASH_REMATCH[1]}@${BASH_REMATCH[3]}"
fi
cleanup() {
    if [[ -n $NECTAR ]] && mountpoint -q "$MNT" 2>/dev/null; then
        "$NECTAR" umount "$MNT" 2>/dev/null || "$NECTAR" umount --force "$MNT" || true
    fi
    [[ -f $WORK/mount.pid ]] && kill "$(cat "$WORK/mount.pid")" 2>/dev/null || true
    if [[ -n $NECTAR && -n ${NECTAR_FSX_META:-} ]]; then
        local uuid
        uuid=$("$NECTAR" status "$META" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["Setting"]["UUID"])' 2>/dev/null) &&
            "$NECTAR" destroy "$META" "$uuid" --force >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MNT"
if [[ -n $NECTAR ]]; then
    "$NECTAR" format "$META" fsxvol --bucket "$WORK/data" --trash-days "${NECTAR_FSX_TRASH_DAYS:-0}" 2>/dev/null
    echo "fsx: metadata in $(sed -E 's#://[^@/]*@#://***@#' <<<"$META")" >&2
    "$NECTAR" mount -d "$META" "$MNT" --log "$WORK/mount.log" --pid-file "$WORK/mount.pid" \
        --cache-dir "$WORK/cache"
else
    echo "fsx: on a local directory ($(stat -f -c %T "$MNT")), not on Nectar" >&2
    : >"$WORK/mount.log"
fi
# Sizes start at 1: fsx skips every zero-size operation but posix_fallocate, which it
# calls with length 0 too; Linux answers that with EINVAL on every file system, and fsx
# takes EINVAL for "posix_fallocate is not supported" and fails. Nothing fsx checks is lost.
cat >"$WORK/fsx.toml" <<'TOML'
flen = 262144
[opsize]
max = 65536
min = 1
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
echo "fsx: $OPS operations, seed $SEED" >&2
start=$(date +%s)
if (cd "$WORK" && "$FSX" -q -f "$WORK/fsx.toml" -N "$OPS" -S "$SEED" -P "$WORK" "$MNT/fsxfile") >"$WORK/fsx.out" 2>&1; then
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
