#!/usr/bin/env bash
# Stops the etcd server started by scripts/start-etcd.sh DIR.
#
#   scripts/stop-etcd.sh DIR
#
# SIGTERM, then SIGKILL after 10 s, to the PID in DIR/etcd.pid if it is etcd. Leaves
# DIR's data in place; remove DIR to start afresh.
set -uo pipefail
source "$(dirname "$0")/lib/stop-server.sh"

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
is_etcd() { [[ $(basename "$(readlink "/proc/$1/exe" 2>/dev/null)") == etcd ]]; }
stop_server etcd "$1/etcd.pid" is_etcd
