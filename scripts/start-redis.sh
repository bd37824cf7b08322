#!/usr/bin/env bash
# Starts local Redis servers for Nectar's metadata tests, all bound to 127.0.0.1.
#
#   scripts/start-redis.sh DIR [standalone|sentinel|cluster] [PORT]
#
#   standalone (default)  one server on port PORT (default 6379), data in DIR/PORT, PID in
#                         DIR/redis.pid; prints
#                         export NECTAR_TEST_REDIS_URL=redis://127.0.0.1:PORT/1
#   sentinel              a master on 6390 with a replica on 6391, watched by one Sentinel
#                         on 26379 (master name "nectar"), so `redis-cli -p 26379 sentinel
#                         failover nectar` swaps them; both refuse writes while no replica
#                         follows them (min-replicas-to-write 1), so a failover loses
#                         nothing; prints
#                         export NECTAR_TEST_REDIS_SENTINEL_URL=redis://127.0.0.1:26379/2?sentinel=nectar
#   cluster               a Redis Cluster of three masters on 7000-7002 (no replicas);
#                         prints
#                         export NECTAR_TEST_REDIS_CLUSTER_URL=redis://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002/1
#
# The Debian packages redis-server and redis-tools are installed when missing. Servers
# run without persistence (test data only) and with `maxmemory-policy noeviction`, the
# only policy under which Redis never drops metadata. Every server's PID goes to
# DIR/redis*.pid and its log next to it; scripts/stop-redis.sh DIR stops them all.
#
#   eval "$(scripts/start-redis.sh /tmp/redis)"
#   NECTAR_TEST_META_URLS=$NECTAR_TEST_REDIS_URL cargo test -p nectar-meta --test conformance
#   scripts/stop-redis.sh /tmp/redis
#
# Only the `export` lines go to stdout; progress goes to stderr.
set -euo pipefail
# shellcheck source=lib/daemon.sh
source "$(dirname "$0")/lib/daemon.sh"

if [[ $# -lt 1 || $# -gt 3 ]]; then
    echo "usage: $0 DIR [standalone|sentinel|cluster] [PORT]" >&2
    exit 2
fi
DIR=$1
MODE=${2:-standalone}
case $MODE in
standalone | sentinel | cluster) ;;
*)
    echo "start-redis: unknown mode '$MODE' (standalone, sentinel or cluster)" >&2
    exit 2
    ;;
esac
PORT=${3:-6379}
if [[ $# -eq 3 && $MODE != standalone ]]; then
    echo "start-redis: a PORT is taken only in standalone mode" >&2
    exit 2
fi
if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then
    echo "start-redis: bad port '$PORT'" >&2
    exit 2
fi

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

log() { echo "start-redis: $*" >&2; }

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-cli >/dev/null || missing+=(redis-tools)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    # shellcheck source=lib/apt.sh
    source "$(dirname "$0")/lib/apt.sh"
    apt_install "${missing[@]}"
fi

# pidfile PORT: where the PID of the server on PORT goes.
pidfile() {
    if [[ $MODE == standalone ]]; then echo "$DIR/redis.pid"; else echo "$DIR/redis-$1.pid"; fi
}

running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# start PORT [ARGS...]: starts one server (ARGS are extra redis-server options) and
# waits until it answers PING.
start() {
    local port=$1
    shift
    local pf data logf
    pf=$(pidfile "$port")
    data=$DIR/$port
    logf=$DIR/redis-$port.log
    if running "$pf"; then
        log "port $port: already running (pid $(cat "$pf"))"
        return 0
    fi
    if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        log "port $port on 127.0.0.1 is already in use by another process"
        exit 1
    fi
    mkdir -p "$data"
    start_detached "$pf" \
        redis-server "$@" --bind 127.0.0.1 --port "$port" --protected-mode yes \
        --save "" --appendonly no --dir "$data" --daemonize no \
        --maxmemory-policy noeviction --logfile "$logf" \
        </dev/null >>"$logf" 2>&1 &
    for _ in $(seq 1 100); do
        if exited "$pf"; then
            log "redis on port $port exited during start-up; last lines of $logf:"
            tail -n 20 "$logf" >&2
            rm -f "$pf"
            exit 1
        fi
        if [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]]; then
            log "port $port ready: pid $(cat "$pf") (log: $logf)"
            return 0
        fi
        sleep 0.1
    done
    log "redis did not answer on 127.0.0.1:$port within 10 s; last lines of $logf:"
    tail -n 20 "$logf" >&2
    exit 1
}

case $MODE in
standalone)
    start "$PORT"
    echo "export NECTAR_TEST_REDIS_URL=redis://127.0.0.1:$PORT/1"
    ;;
sentinel)
    # A master accepts writes only while a replica follows it: during a failover the old
    # master then refuses writes at once instead of taking writes the new master never
    # gets (Redis replicates asynchronously).
    safe=(--min-replicas-to-write 1 --min-replicas-max-lag 10 --repl-diskless-sync-delay 0)
    start 6390 "${safe[@]}"
    start 6391 --replicaof 127.0.0.1 6390 "${safe[@]}"
    for _ in $(seq 1 100); do
        redis-cli -h 127.0.0.1 -p 6391 info replication | grep -q 'master_link_status:up' && break
        sleep 0.1
    done
    # Sentinel rewrites its configuration file, so it gets its own, written once.
    conf=$DIR/26379/sentinel.conf
    mkdir -p "$DIR/26379"
    if [[ ! -f $conf ]]; then
        cat >"$conf" <<EOF
sentinel monitor nectar 127.0.0.1 6390 1
sentinel down-after-milliseconds nectar 2000
sentinel failover-timeout nectar 10000
EOF
    fi
    # Sentinel refuses the options of a data server, so it starts with its own set.
    pf=$(pidfile 26379)
    logf=$DIR/redis-26379.log
    if ! running "$pf"; then
        if (echo >"/dev/tcp/127.0.0.1/26379") 2>/dev/null; then
            log "port 26379 on 127.0.0.1 is already in use by another process"
            exit 1
        fi
        start_detached "$pf" \
            redis-server "$conf" --sentinel --bind 127.0.0.1 --port 26379 \
            --dir "$DIR/26379" --daemonize no --logfile "$logf" \
            </dev/null >>"$logf" 2>&1 &
    fi
    ready=
    for _ in $(seq 1 100); do
        if redis-cli -h 127.0.0.1 -p 26379 sentinel get-master-addr-by-name nectar 2>/dev/null |
            grep -q 6390; then
            ready=1
            break
        fi
        sleep 0.1
    done
    if [[ -z $ready ]]; then
        log "sentinel did not report master 'nectar' within 10 s; last lines of $logf:"
        tail -n 20 "$logf" >&2
        exit 1
    fi
    log "sentinel ready on 127.0.0.1:26379: pid $(cat "$pf")"
    echo "export NECTAR_TEST_REDIS_SENTINEL_URL=redis://127.0.0.1:26379/2?sentinel=nectar"
    ;;
cluster)
    for port in 7000 7001 7002; do
        start "$port" --cluster-enabled yes --cluster-config-file "$DIR/$port/nodes.conf" \
            --cluster-node-timeout 5000
    done
    if ! redis-cli -h 127.0.0.1 -p 7000 cluster info | grep -q 'cluster_state:ok'; then
        if [[ $(redis-cli -h 127.0.0.1 -p 7000 cluster info | grep cluster_slots_assigned) == *:0* ]]; then
            log "creating the cluster"
            redis-cli --cluster create 127.0.0.1:7000 127.0.0.1:7001 127.0.0.1:7002 \
                --cluster-replicas 0 --cluster-yes >&2
        fi
        ready=
        for _ in $(seq 1 100); do
            if redis-cli -h 127.0.0.1 -p 7000 cluster info | grep -q 'cluster_state:ok'; then
                ready=1
                break
            fi
            sleep 0.1
        done
        if [[ -z $ready ]]; then
            log "the cluster did not reach cluster_state:ok within 10 s"
            exit 1
        fi
    fi
    log "cluster ready on 127.0.0.1:7000-7002"
    echo "export NECTAR_TEST_REDIS_CLUSTER_URL=redis://127.0.0.1:7000,127.0.0.1:7001,127.0.0.1:7002/1"
    ;;
esac
