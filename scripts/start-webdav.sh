#!/usr/bin/env bash
# Starts a WebDAV server (rclone serve webdav, Debian's rclone) for Nectar's WebDAV
# storage tests.
#
#   scripts/start-webdav.sh DIR [PORT]
#
# Serves DIR/data on 127.0.0.1:PORT (default 8480) to the user `nectar` with a password
# made here (DIR/password, mode 0600); the PID goes to DIR/rclone.pid, the log to
# DIR/rclone.log. rclone is installed when missing (needs root). Only the `export` lines
# go to stdout:
#
#   eval "$(scripts/start-webdav.sh /tmp/webdav)"
#   cargo test -p nectar-object webdav
#   scripts/stop-webdav.sh /tmp/webdav
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/daemon.sh
source "$HERE/lib/daemon.sh"
# shellcheck source=lib/apt.sh
source "$HERE/lib/apt.sh"

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 DIR [PORT]" >&2
    exit 2
fi
PORT=${2:-8480}
mkdir -p "$1/data"
DIR=$(cd "$1" && pwd)
log() { echo "start-webdav: $*" >&2; }
print_env() {
    echo "export NECTAR_TEST_WEBDAV=http://127.0.0.1:$PORT/"
    echo "export NECTAR_TEST_WEBDAV_USER=nectar"
    echo "export NECTAR_TEST_WEBDAV_PASSWORD=$(cat "$DIR/password")"
}
if [[ -f $DIR/rclone.pid ]] && ! exited "$DIR/rclone.pid"; then
    log "already running (pid $(cat "$DIR/rclone.pid"))"
    print_env
    exit 0
fi
if (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    log "port $PORT on 127.0.0.1 is already in use by another process"
    exit 1
fi
command -v rclone >/dev/null || { log "installing rclone"; apt_install rclone; }
(umask 077 && head -c 12 /dev/urandom | base64 | tr -d '/+=' >"$DIR/password")
# The password goes in the environment, not on the command line (ps shows that).
RCLONE_PASS=$(cat "$DIR/password") start_detached "$DIR/rclone.pid" \
    rclone serve webdav "$DIR/data" --addr "127.0.0.1:$PORT" --user nectar \
    --config /dev/null </dev/null >"$DIR/rclone.log" 2>&1 &
for _ in $(seq 1 100); do
    (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    if exited "$DIR/rclone.pid"; then
        log "rclone exited; $DIR/rclone.log says:"
        tail -n 20 "$DIR/rclone.log" >&2
        exit 1
    fi
    sleep 0.1
done
log "ready: pid $(cat "$DIR/rclone.pid"), http://127.0.0.1:$PORT/"
print_env
