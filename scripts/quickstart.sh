#!/usr/bin/env bash
# One command from a fresh Debian machine (as root) to a mounted Nectar volume on the
# embedded default: SQLite metadata and a local directory for data.
#
#   scripts/quickstart.sh [MOUNTPOINT]      (default /mnt/nectar)
#
# Needs root, a Rust toolchain (1.95 or later) and /dev/fuse; everything else it installs.
# Builds `nectar` (release) into /usr/local/bin, formats the volume `myvol` unless it
# exists (metadata /var/lib/nectar/myvol.db, data /var/lib/nectar/data), and mounts it in
# the background. Running it again only mounts (the build is then a no-op).
#
# Every check that can fail without a build runs before it, so a machine that cannot
# mount says so in seconds, not after the first build's minutes.
set -euo pipefail
if [[ $(id -u) -ne 0 ]]; then
    echo "quickstart: run as root (it installs packages, writes /usr/local/bin and /var/lib/nectar, and mounts): sudo $0 $*" >&2
    exit 1
fi
cd "$(dirname "$0")/.."

MNT=${1:-/mnt/nectar}
STATE=${NECTAR_HOME:-/var/lib/nectar}
VOLUME=myvol
META=sqlite3://$STATE/$VOLUME.db
RUST_MIN=1.95

fail() {
    echo "quickstart: $*" >&2
    exit 1
}

command -v cargo >/dev/null ||
    fail "cargo is missing; install Rust $RUST_MIN or later with
    curl --proto '=https' -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\""
rust=$(rustc --version | awk '{print $2}')
[[ $(printf '%s\n%s\n' "$RUST_MIN" "$rust" | sort -V | head -1) == "$RUST_MIN" ]] ||
    fail "Rust $rust is too old; Nectar needs $RUST_MIN or later (rustup update stable)"
# NECTAR_FUSE_DEVICE exists for the test of this message only.
FUSE_DEVICE=${NECTAR_FUSE_DEVICE:-/dev/fuse}
if [[ ! -e $FUSE_DEVICE ]]; then
    modprobe fuse 2>/dev/null || true
    [[ -e $FUSE_DEVICE ]] ||
        fail "$FUSE_DEVICE is missing: load the module (modprobe fuse), or give the container the device (docker run --device /dev/fuse --cap-add SYS_ADMIN)"
fi

# The mount point: ours already mounted is fine (the run then only reports it); anything
# else mounted there, or a file, is refused; files in it would be hidden by the mount.
MNT=$(realpath -m "$MNT")
already=
if grep -q " $MNT fuse.nectar " /proc/self/mounts && ! stat "$MNT" >/dev/null 2>&1; then
    fail "the Nectar mount on $MNT is dead (its process ended); clear it with: nectar umount --force $MNT, then run $0 again"
elif mountpoint -q "$MNT" 2>/dev/null; then
    what=$(awk -v m="$MNT" '$2 == m {print $1 " (" $3 ")"}' /proc/self/mounts | tail -1)
    [[ $what == "nectar:$VOLUME (fuse.nectar)" ]] ||
        fail "$MNT is busy: $what is mounted there; unmount it or give another mount point: $0 /mnt/other"
    already=1
elif [[ -e $MNT && ! -d $MNT ]]; then
    fail "$MNT exists and is not a directory; give another mount point: $0 /mnt/other"
elif [[ -d $MNT && -n $(ls -A "$MNT") ]]; then
    fail "$MNT is not empty: the mount would hide its files; empty it or give another mount point: $0 /mnt/other"
fi

scripts/install-deps.sh
if [[ -x target/release/nectar ]]; then
    echo "quickstart: checking that the nectar build is up to date ..." >&2
else
    echo "quickstart: building nectar (release; the first build takes about 10 minutes on 2 cores) ..." >&2
fi
cargo build --release --quiet -p nectar
install -m 0755 target/release/nectar /usr/local/bin/nectar

mkdir -p "$STATE" "$MNT"
if [[ -f $STATE/$VOLUME.db ]]; then
    nectar status "$META" >/dev/null ||
        fail "$STATE/$VOLUME.db exists but is not a readable Nectar volume (see the error above); move it away to start afresh"
    echo "quickstart: volume $VOLUME exists ($STATE/$VOLUME.db)" >&2
else
    nectar format "$META" "$VOLUME" --bucket "$STATE/data"
fi
if [[ -n $already ]]; then
    echo "quickstart: $VOLUME is already mounted on $MNT" >&2
else
    nectar mount -d "$META" "$MNT" --log /var/log/nectar.log
fi
df -h "$MNT"
echo "quickstart: done. Try: echo hello > $MNT/hello; unmount with: nectar umount $MNT" >&2
