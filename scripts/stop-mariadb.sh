#!/usr/bin/env bash
# Stops the MariaDB server started by scripts/start-mariadb.sh DIR.
#
#   scripts/stop-mariadb.sh DIR
#
# SIGTERM (a clean shutdown), then SIGKILL after 10 s, to the PID in DIR/mariadb.pid.
# Leaves DIR's data in place; remove DIR to start afresh.
set -uo pipefail
source "$(dirname "$0")/lib/stop-server.sh"

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
is_mariadb() { cmdline_matches "$1" 'mariadbd|mysqld'; }
stop_server mariadb "$1/mariadb.pid" is_mariadb
