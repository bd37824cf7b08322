#!/usr/bin/env bash
# Stops the etcd server started by scripts/start-etcd.sh DIR.
#
#   scripts/stop-etcd.sh DIR
#
# Sends SIGTERM to the PID in DIR/etcd.pid and SIGKILL if it is still alive after 10 s.
# Only that process is signalled, and only when it really is etcd. Leaves DIR's data in
# place; remove the directory to start afresh.
set -uo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
PIDFILE=$1/etcd.pid
if [[ ! -f $PIDFILE ]]; then
    echo "stop-etcd: no $PIDFILE, nothing to stop" >&2
    exit 0
fi
PID=$(cat "$PIDFILE")
if ! [[ $PID =~ ^[0-9]+$ ]]; then
    echo "stop-etcd: $PIDFILE does not hold a PID" >&2
    exit 1
fi
if ! kill -0 "$PID" 2>/dev/null; then
    echo "stop-etcd: process $PID is not running" >&2
    rm -f "$PIDFILE"
    exit 0
fi
# A reused PID must not be killed by mistake: the process must be etcd itself.
if [[ $(basename "$(readlink "/proc/$PID/exe" 2>/dev/null)") != etcd ]]; then
    echo "stop-etcd: process $PID is not etcd; leaving it alone" >&2
    rm -f "$PIDFILE"
    exit 1
fi

kill -TERM "$PID"
for _ in $(seq 1 100); do
    kill -0 "$PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$PID" 2>/dev/null; then
    echo "stop-etcd: $PID still running after 10 s, sending SIGKILL" >&2
    kill -KILL "$PID"
    for _ in $(seq 1 50); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
fi
rm -f "$PIDFILE"
echo "stop-etcd: stopped $PID" >&2
