#!/usr/bin/env bash
# One command from a fresh Debian machine (as root) to a mounted Nectar volume on the
# embedded default: SQLite metadata and a local directory for data.
#
#   scripts/quickstart.sh [MOUNTPOINT]      (default /mnt/nectar)
#
# Installs what is missing, builds `nectar` (release) into /usr/local/bin, formats the
# volume `myvol` unless it exists (metadata /var/lib/nectar/myvol.db, data
# /var/lib/nectar/data), and mounts it in the background. Running it again only mounts.
set -euo pipefail
cd "$(dirname "$0")/.."

MNT=${1:-/mnt/nectar}
STATE=${NECTAR_HOME:-/var/lib/nectar}
META=sqlite3://$STATE/myvol.db

scripts/install-deps.sh
echo "quickstart: building nectar (release) ..." >&2
cargo build --release --quiet -p nectar
install -m 0755 target/release/nectar /usr/local/bin/nectar

mkdir -p "$STATE" "$MNT"
if ! nectar status "$META" >/dev/null 2>&1; then
    nectar format "$META" myvol --bucket "$STATE/data"
fi
if mountpoint -q "$MNT"; then
    echo "quickstart: $MNT is already mounted" >&2
else
    nectar mount -d "$META" "$MNT" --log /var/log/nectar.log
fi
df -h "$MNT"
echo "quickstart: done. Try: echo hello > $MNT/hello; unmount with: nectar umount $MNT" >&2
