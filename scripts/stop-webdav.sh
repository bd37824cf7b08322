#!/usr/bin/env bash
# Stops the WebDAV server started by scripts/start-webdav.sh DIR.
set -uo pipefail
source "$(dirname "$0")/lib/stop-server.sh"
if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
is_rclone() { cmdline_matches "$1" 'rclone serve webdav'; }
stop_server webdav "$1/rclone.pid" is_rclone
