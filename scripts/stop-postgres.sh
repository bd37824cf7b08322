#!/usr/bin/env bash
# Stops the PostgreSQL server started by scripts/start-postgres.sh DIR.
#
#   scripts/stop-postgres.sh DIR
#
# Signals only the postmaster in DIR/postgres.pid: SIGTERM ("smart" shutdown, waits for
# clients), SIGINT after 5 s ("fast": disconnects them), SIGKILL after 10 s. Leaves
# DIR's data in place; remove DIR to start afresh.
set -uo pipefail
source "$(dirname "$0")/lib/stop-server.sh"

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
is_postgres() { cmdline_matches "$1" postgres; }
stop_server postgres "$1/postgres.pid" is_postgres INT
