#!/usr/bin/env bash
# Stops every Redis server (data server or Sentinel) started by scripts/start-redis.sh DIR.
#
#   scripts/stop-redis.sh DIR
#
# Sends SIGTERM to each PID in DIR/redis*.pid and SIGKILL to one still alive after 10 s.
# Only those processes are signalled, and only when they really are redis-server. Leaves
# DIR in place; remove it to start afresh.
set -uo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
DIR=$1
shopt -s nullglob
pidfiles=("$DIR"/redis*.pid)
if ((${#pidfiles[@]} == 0)); then
    echo "stop-redis: no $DIR/redis*.pid, nothing to stop" >&2
    exit 0
fi

# Debian's redis-server is a symlink to another binary, so compare resolved paths.
SERVER=$(readlink -f "$(command -v redis-server 2>/dev/null || echo /usr/bin/redis-server)")
status=0
for pf in "${pidfiles[@]}"; do
    PID=$(cat "$pf")
    if ! [[ $PID =~ ^[0-9]+$ ]]; then
        echo "stop-redis: $pf does not hold a PID" >&2
        status=1
        continue
    fi
    if ! kill -0 "$PID" 2>/dev/null; then
        echo "stop-redis: process $PID ($pf) is not running" >&2
        rm -f "$pf"
        continue
    fi
    # A reused PID must not be killed by mistake: it must be the redis-server binary.
    if [[ $(readlink -f "/proc/$PID/exe" 2>/dev/null) != "$SERVER" ]]; then
        echo "stop-redis: process $PID ($pf) is not redis-server; leaving it alone" >&2
        rm -f "$pf"
        status=1
        continue
    fi
    kill -TERM "$PID"
    for _ in $(seq 1 100); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$PID" 2>/dev/null; then
        echo "stop-redis: $PID still running after 10 s, sending SIGKILL" >&2
        kill -KILL "$PID"
        for _ in $(seq 1 50); do
            kill -0 "$PID" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$pf"
    echo "stop-redis: stopped $PID ($pf)" >&2
done
exit $status
