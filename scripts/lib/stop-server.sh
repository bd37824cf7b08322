# Stops a test server by the PID in its PID file; sourced by the stop-*.sh scripts.
#
#   stop_server NAME PIDFILE CHECK [FAST_SIGNAL]
#
# CHECK is the name of a function taking a PID that succeeds only when that process
# really is the server (a reused PID must never be killed by mistake). The server gets
# SIGTERM; FAST_SIGNAL (e.g. INT for PostgreSQL's fast shutdown) after 5 s if given;
# SIGKILL after 10 s. Returns 0 when the server is gone or was not running, 1 when the
# PID file is bad or names another process. Messages go to stderr, prefixed stop-NAME.
stop_server() {
    local name=$1 pidfile=$2 check=$3 fast=${4:-} pid i
    if [[ ! -f $pidfile ]]; then
        echo "stop-$name: no $pidfile, nothing to stop" >&2
        return 0
    fi
    pid=$(cat "$pidfile")
    if ! [[ $pid =~ ^[0-9]+$ ]]; then
        echo "stop-$name: $pidfile does not hold a PID" >&2
        return 1
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "stop-$name: process $pid is not running" >&2
        rm -f "$pidfile"
        return 0
    fi
    if ! "$check" "$pid"; then
        echo "stop-$name: process $pid is not $name; leaving it alone" >&2
        rm -f "$pidfile"
        return 1
    fi
    kill -TERM "$pid"
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        if [[ -n $fast ]] && ((i == 50)); then
            echo "stop-$name: still running after 5 s, sending SIG$fast" >&2
            kill -"$fast" "$pid" 2>/dev/null
        fi
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "stop-$name: $pid still running after 10 s, sending SIGKILL" >&2
        kill -KILL "$pid"
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
    fi
    rm -f "$pidfile"
    echo "stop-$name: stopped $pid ($pidfile)" >&2
}

# Whether the command line of process $1 matches the extended regex $2.
cmdline_matches() {
    tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -Eq "$2"
}
