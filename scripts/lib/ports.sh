# Free TCP ports on 127.0.0.1 for the test servers; sourced, not run.
#
#   port_free PORT                 true when nothing answers on 127.0.0.1:PORT
#   free_port START [OFFSET...]    prints the first port P >= START (below 32000) such that
#                                  P and P+OFFSET for every OFFSET are free
#
# Ports stay below 32000, under the kernel's range for outgoing connections (32768 and
# up by default), so no client's connection can take one between this check and the
# server's bind.
port_free() {
    ! (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
    local p=$1 o ok
    shift
    while ((p < 32000)); do
        ok=1
        for o in 0 "$@"; do
            port_free $((p + o)) || { ok=; break; }
        done
        if [[ -n $ok ]]; then
            echo "$p"
            return 0
        fi
        p=$((p + 1))
    done
    echo "free_port: no free port from $1 up to 32000 on 127.0.0.1" >&2
    return 1
}
