#!/usr/bin/env bash
# Starts a local single-member etcd server for Nectar's metadata tests.
#
#   scripts/start-etcd.sh DIR [PORT]
#
# DIR holds the server's data (DIR/data), log (DIR/etcd.log) and PID (DIR/etcd.pid).
# PORT is the client port (default 2379); the peer port is PORT+1. Everything binds to
# 127.0.0.1. The Debian packages etcd-server and etcd-client (etcdctl) are installed when
# missing, and so is protobuf-compiler, which the etcd-client crate's build needs. The
# server runs with etcd's default limits (128 operations per transaction, 1.5 MiB per
# request), so tests see what a production server enforces, and without fsync (test data
# only). Authentication is off unless NECTAR_ETCD_PASSWORD is set: then the user `root`
# gets that password and etcd's authentication is turned on (etcd refuses requests without
# a valid user from then on), and the URL printed carries the credentials. On success the
# script prints the variable the tests read:
#
#   eval "$(scripts/start-etcd.sh /tmp/etcd)"
#   NECTAR_TEST_META_URLS=$NECTAR_TEST_ETCD_URL cargo test -p nectar-meta --test conformance
#   scripts/stop-etcd.sh /tmp/etcd
#
# Only the `export` lines go to stdout; progress goes to stderr.
set -euo pipefail
# shellcheck source=lib/daemon.sh
source "$(dirname "$0")/lib/daemon.sh"

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 DIR [PORT]" >&2
    exit 2
fi
DIR=$1
PORT=${2:-2379}
if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65534)); then
    echo "start-etcd: bad port '$PORT'" >&2
    exit 2
fi
PEER_PORT=$((PORT + 1))

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
PIDFILE=$DIR/etcd.pid
LOG=$DIR/etcd.log
CLIENT_URL=http://127.0.0.1:$PORT
PEER_URL=http://127.0.0.1:$PEER_PORT
PASSWORD=${NECTAR_ETCD_PASSWORD:-}
if [[ -n $PASSWORD ]]; then
    URL=etcd://root:$PASSWORD@127.0.0.1:$PORT/nectar-test
else
    URL=etcd://127.0.0.1:$PORT/nectar-test
fi

log() { echo "start-etcd: $*" >&2; }

print_env() {
    echo "export NECTAR_TEST_ETCD_URL=$URL"
}

if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    log "already running (pid $(cat "$PIDFILE")), see $LOG"
    print_env
    exit 0
fi

# Install what is missing: the server, etcdctl (for the readiness check and for setting
# up users by hand) and protoc with its well-known .proto files (for building the
# etcd-client crate, whose protos import google/protobuf/descriptor.proto).
missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
[ -e /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    # shellcheck source=lib/apt.sh
    source "$(dirname "$0")/lib/apt.sh"
    apt_install "${missing[@]}"
fi

if (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    log "port $PORT on 127.0.0.1 is already in use by another process"
    exit 1
fi
if (echo >"/dev/tcp/127.0.0.1/$PEER_PORT") 2>/dev/null; then
    log "peer port $PEER_PORT on 127.0.0.1 is already in use by another process"
    exit 1
fi

# A data directory left by an earlier run belongs to the same one-member cluster, so
# `--initial-cluster-state new` is ignored for it and the data is kept.
log "starting etcd on $CLIENT_URL (log: $LOG)"
start_detached "$PIDFILE" \
    etcd --name nectar-test --data-dir "$DIR/data" \
    --listen-client-urls "$CLIENT_URL" --advertise-client-urls "$CLIENT_URL" \
    --listen-peer-urls "$PEER_URL" --initial-advertise-peer-urls "$PEER_URL" \
    --initial-cluster "nectar-test=$PEER_URL" --initial-cluster-state new \
    --logger=zap --log-level=warn --quota-backend-bytes=8589934592 --unsafe-no-fsync \
    </dev/null >"$LOG" 2>&1 &

ready=
for _ in $(seq 1 120); do
    if exited "$PIDFILE"; then
        log "etcd exited during start-up; last lines of $LOG:"
        tail -n 20 "$LOG" >&2
        rm -f "$PIDFILE"
        exit 1
    fi
    # /health answers true once the member has a leader, with or without authentication.
    if curl -s --max-time 2 "$CLIENT_URL/health" 2>/dev/null | grep -q '"health":"true"'; then
        ready=1
        break
    fi
    sleep 0.5
done
if [[ -z $ready ]]; then
    log "etcd did not answer on $CLIENT_URL within 60 s; last lines of $LOG:"
    tail -n 20 "$LOG" >&2
    exit 1
fi

if [[ -n $PASSWORD ]]; then
    ctl() { ETCDCTL_API=3 etcdctl --endpoints="$CLIENT_URL" --command-timeout=5s "$@"; }
    # A restart on an old data directory finds authentication already on.
    probe=$(ctl get --limit=1 probe 2>&1 || true)
    if [[ $probe == *"user name is empty"* ]]; then
        log "authentication already enabled"
        if ! ctl --user "root:$PASSWORD" get --limit=1 probe >/dev/null; then
            log "the password in NECTAR_ETCD_PASSWORD is not root's password in $DIR/data" \
                "(the server is still running: scripts/stop-etcd.sh $DIR stops it)"
            exit 1
        fi
    else
        log "creating user root and enabling authentication"
        if ! ctl user get root >/dev/null 2>&1; then
            ctl user add "root:$PASSWORD" >&2
        fi
        ctl user grant-role root root >&2 2>/dev/null || true
        ctl auth enable >&2
    fi
fi

log "ready: pid $(cat "$PIDFILE"), $CLIENT_URL"
print_env
