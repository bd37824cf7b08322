#!/usr/bin/env bash
# Stops the PostgreSQL server started by scripts/start-postgres.sh DIR.
#
#   scripts/stop-postgres.sh DIR
#
# Signals only the postmaster whose PID is in DIR/postgres.pid: SIGTERM (PostgreSQL's
# "smart" shutdown, which waits for clients), SIGINT after 5 s ("fast": disconnects
# them), SIGKILL after 10 s. Leaves DIR's data in place; remove DIR to start afresh.
set -uo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
PIDFILE=$1/postgres.pid
if [[ ! -f $PIDFILE ]]; then
    echo "stop-postgres: no $PIDFILE, nothing to stop" >&2
    exit 0
fi
PID=$(cat "$PIDFILE")
if ! [[ $PID =~ ^[0-9]+$ ]]; then
    echo "stop-postgres: $PIDFILE does not hold a PID" >&2
    exit 1
fi
if ! kill -0 "$PID" 2>/dev/null; then
    echo "stop-postgres: process $PID is not running" >&2
    rm -f "$PIDFILE"
    exit 0
fi
# A reused PID must not be killed by mistake.
if ! tr '\0' ' ' <"/proc/$PID/cmdline" 2>/dev/null | grep -q postgres; then
    echo "stop-postgres: process $PID is not postgres; leaving it alone" >&2
    rm -f "$PIDFILE"
    exit 1
fi

kill -TERM "$PID"
for i in $(seq 1 100); do
    kill -0 "$PID" 2>/dev/null || break
    if ((i == 50)); then
        echo "stop-postgres: clients still connected after 5 s, fast shutdown" >&2
        kill -INT "$PID" 2>/dev/null
    fi
    sleep 0.1
done
if kill -0 "$PID" 2>/dev/null; then
    echo "stop-postgres: $PID still running after 10 s, sending SIGKILL" >&2
    kill -KILL "$PID"
    for _ in $(seq 1 50); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
fi
rm -f "$PIDFILE"
echo "stop-postgres: stopped $PID" >&2
