# Starts test servers in the background and tells whether they died; sourced by the
# start-*.sh scripts.
#
#   start_detached PIDFILE COMMAND [ARGS...]   (redirect stdin/stdout/stderr and add &)
#   exited PIDFILE                             (true once the server has gone)
#
# setsid: the server outlives the calling shell and its job control; `exec` keeps the PID
# the server's own. The PID goes to a temporary file renamed over PIDFILE, so PIDFILE is
# never seen empty: a reader between the creation of the file and the write of the PID
# would otherwise take a starting server for a dead one.
start_detached() {
    setsid bash -c 'echo $$ >"$0.tmp" && mv -f "$0.tmp" "$0" && exec "$@"' "$@"
}

exited() {
    local pid
    [[ -f $1 ]] || return 1
    pid=$(cat "$1")
    [[ $pid =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null
}
