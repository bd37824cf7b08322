#!/usr/bin/env bash
# Stops the MariaDB server started by scripts/start-mariadb.sh DIR.
#
#   scripts/stop-mariadb.sh DIR
#
# Sends SIGTERM (a clean shutdown) to the PID in DIR/mariadb.pid and SIGKILL if it is
# still alive after 10 s. Only that process is signalled. Leaves DIR's data in place;
# remove DIR to start afresh.
set -uo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
PIDFILE=$1/mariadb.pid
if [[ ! -f $PIDFILE ]]; then
    echo "stop-mariadb: no $PIDFILE, nothing to stop" >&2
    exit 0
fi
PID=$(cat "$PIDFILE")
if ! [[ $PID =~ ^[0-9]+$ ]]; then
    echo "stop-mariadb: $PIDFILE does not hold a PID" >&2
    exit 1
fi
if ! kill -0 "$PID" 2>/dev/null; then
    echo "stop-mariadb: process $PID is not running" >&2
    rm -f "$PIDFILE"
    exit 0
fi
# A reused PID must not be killed by mistake.
if ! tr '\0' ' ' <"/proc/$PID/cmdline" 2>/dev/null | grep -Eq 'mariadbd|mysqld'; then
    echo "stop-mariadb: process $PID is not mariadbd; leaving it alone" >&2
    rm -f "$PIDFILE"
    exit 1
fi

kill -TERM "$PID"
for _ in $(seq 1 100); do
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$PID" 2>/dev/null; then
    echo "stop-mariadb: $PID still running after 10 s, sending SIGKILL" >&2
    kill -KILL "$PID"
    for _ in $(seq 1 50); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
fi
rm -f "$PIDFILE"
echo "stop-mariadb: stopped $PID" >&2
