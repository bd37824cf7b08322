#!/usr/bin/env bash
# Stops the Redis servers (data servers and Sentinels) started by scripts/start-redis.sh
# DIR.
#
#   scripts/stop-redis.sh DIR
#
# SIGTERM, then SIGKILL after 10 s, to each PID in DIR/redis*.pid that is redis-server.
# Leaves DIR's data in place; remove DIR to start afresh.
set -uo pipefail
source "$(dirname "$0")/lib/stop-server.sh"

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
# Debian's redis-server is a symlink to another binary, so compare resolved paths.
SERVER=$(readlink -f "$(command -v redis-server 2>/dev/null || echo /usr/bin/redis-server)")
is_redis() { [[ $(readlink -f "/proc/$1/exe" 2>/dev/null) == "$SERVER" ]]; }
shopt -s nullglob
pidfiles=("$1"/redis*.pid)
if ((${#pidfiles[@]} == 0)); then
    echo "stop-redis: no $1/redis*.pid, nothing to stop" >&2
    exit 0
fi
status=0
for pf in "${pidfiles[@]}"; do
    stop_server redis "$pf" is_redis || status=1
done
exit $status
