#!/usr/bin/env bash
# Stops the SeaweedFS server started by scripts/start-seaweedfs.sh DIR.
#
#   scripts/stop-seaweedfs.sh DIR
#
# SIGTERM, then SIGKILL after 10 s (harmless for test data), to the PID in DIR/weed.pid.
# Leaves DIR's data in place; remove DIR to start afresh.
set -uo pipefail
source "$(dirname "$0")/lib/stop-server.sh"

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
is_weed() { cmdline_matches "$1" weed; }
stop_server seaweedfs "$1/weed.pid" is_weed
