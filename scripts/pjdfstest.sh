#!/usr/bin/env bash
# Runs the crates.io pjdfstest suite (POSIX conformance) on a fresh Nectar mount.
#
#   scripts/pjdfstest.sh NECTAR_BINARY [FORMAT OPTIONS...]   (e.g. --enable-acl --trash-days 0)
#
# The volume has the format defaults unless told otherwise, the trash on among them:
# removing into the trash must look to POSIX exactly like removing.
# Installs pjdfstest into .cache/tools if needed, formats a volume on SQLite + a local
# directory in a temporary directory, mounts it, runs the suite as root, unmounts (also
# on failure) and compares the failures with tests/pjdfstest-known-failures.txt: an
# unexpected failure fails the script, and so does a known failure that now passes (so
# the list only ever shrinks). Prints "pjdfstest: N passed, N failed, N skipped".
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
NECTAR=$(realpath "$1")
shift
FORMAT_OPTIONS=("$@")
TOOLS=$ROOT/.cache/tools
KNOWN=$ROOT/tests/pjdfstest-known-failures.txt

if [[ ! -x $TOOLS/bin/pjdfstest ]]; then
    echo "pjdfstest: installing pjdfstest 0.2.2 into $TOOLS" >&2
    cargo install --quiet --locked --root "$TOOLS" pjdfstest --version 0.2.2 >&2
fi

WORK=$(mktemp -d /tmp/nectar-pjdfstest.XXXXXX)
MNT=$WORK/mnt
# The suite switches to unprivileged users, who must be able to reach the mount.
chmod 755 "$WORK"
cleanup() {
    if mountpoint -q "$MNT" 2>/dev/null; then
        "$NECTAR" umount "$MNT" 2>/dev/null || "$NECTAR" umount --force "$MNT" || true
    fi
    [[ -f $WORK/mount.pid ]] && kill "$(cat "$WORK/mount.pid")" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MNT"
"$NECTAR" format "sqlite3://$WORK/meta.db" pjdfstest --bucket "$WORK/data" "${FORMAT_OPTIONS[@]}" 2>/dev/null
"$NECTAR" mount -d "sqlite3://$WORK/meta.db" "$MNT" --log "$WORK/mount.log" --pid-file "$WORK/mount.pid" \
    --cache-dir "$WORK/cache"

cat >"$WORK/pjdfstest.toml" <<'TOML'
[features]
posix_fallocate = {}
rename_ctime = {}
utime_now = {}
utimensat = {}

[settings]
naptime = 0.001
allow_remount = false

[dummy_auth]
entries = [["nobody", "nogroup"], ["daemon", "daemon"]]
TOML
mkdir "$MNT/t"
set +e
(cd "$MNT/t" && "$TOOLS/bin/pjdfstest" -c "$WORK/pjdfstest.toml" -p "$MNT/t") >"$WORK/out.txt" 2>&1
set -e
summary=$(grep '^Summary:' "$WORK/out.txt" || true)
if [[ -z $summary ]]; then
    echo "pjdfstest: the suite did not finish; its output:" >&2
    tail -50 "$WORK/out.txt" >&2
    echo "mount log:" >&2
    tail -20 "$WORK/mount.log" >&2
    exit 1
fi
failed=$(awk '/FAILED$/ {print $1}' "$WORK/out.txt" | sort -u)
known=$( (grep -v '^#' "$KNOWN" 2>/dev/null || true) | awk 'NF {print $1}' | sort -u)
unexpected=$(comm -23 <(echo "$failed") <(echo "$known") | sed '/^$/d')
fixed=$(comm -13 <(echo "$failed") <(echo "$known") | sed '/^$/d')
passed=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$summary")
nfailed=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$summary")
skipped=$(sed -E 's/.* ([0-9]+) skipped.*/\1/' <<<"$summary")
echo "$summary" >&2
status=0
if [[ -n $unexpected ]]; then
    echo "pjdfstest: unexpected failures:" >&2
    for t in $unexpected; do
        grep -A3 "^$t .*FAILED$" "$WORK/out.txt" >&2 || true
    done
    status=1
fi
if [[ -n $fixed ]]; then
    echo "pjdfstest: these known failures pass now; remove them from $KNOWN:" >&2
    echo "$fixed" >&2
    status=1
fi
echo "pjdfstest: $passed passed, $nfailed failed, $skipped skipped"
exit $status
