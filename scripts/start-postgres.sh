#!/usr/bin/env bash
# Starts a local PostgreSQL server for Nectar's metadata tests.
#
#   scripts/start-postgres.sh DIR [PORT]
#
# DIR holds the cluster (DIR/data), the log (DIR/postgres.log), the Unix socket and the
# postmaster's PID (DIR/postgres.pid); PORT defaults to 5432. The server listens on
# 127.0.0.1 only. Installs Debian's postgresql package if no server binaries are found.
# Creates the login role `nectar` (password `nectar`, not a superuser) owning the database
# `nectar`; password authentication over TCP is enforced (scram-sha-256), so a wrong
# password is refused as on a real server, while the admin user `postgres` connects
# through the socket in DIR. fsync is off: test data only. Prints the variable the
# tests read:
#
#   eval "$(scripts/start-postgres.sh /tmp/pg)"
#   NECTAR_TEST_META_URLS="$NECTAR_TEST_POSTGRES_URL" cargo test -p nectar-meta --test conformance
#   scripts/stop-postgres.sh /tmp/pg
#
# Only the `export` line goes to stdout; progress goes to stderr.
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 DIR [PORT]" >&2
    exit 2
fi
DIR=$1
PORT=${2:-5432}
if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then
    echo "start-postgres: bad port '$PORT'" >&2
    exit 2
fi
USER_NAME=nectar
PASSWORD=nectar
DB=nectar

log() { echo "start-postgres: $*" >&2; }

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
PIDFILE=$DIR/postgres.pid
LOG=$DIR/postgres.log
URL="postgres://$USER_NAME:$PASSWORD@127.0.0.1:$PORT/$DB?sslmode=disable"

print_env() {
    echo "export NECTAR_TEST_POSTGRES_URL='$URL'"
}

if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    log "already running (pid $(cat "$PIDFILE")), see $LOG"
    print_env
    exit 0
fi

# The newest installed server version; nothing (and success) when none is installed.
find_bin() {
    { ls -d /usr/lib/postgresql/*/bin 2>/dev/null || true; } | sort -V | tail -n 1
}
# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"
BIN=$(find_bin)
if [[ -z $BIN || ! -x $BIN/initdb ]] || ! command -v psql >/dev/null; then
    log "installing postgresql"
    apt_install postgresql postgresql-client
    BIN=$(find_bin)
fi
if [[ -z $BIN || ! -x $BIN/initdb ]]; then
    log "no PostgreSQL server binaries under /usr/lib/postgresql after installing"
    exit 1
fi

# initdb and the server refuse to run as root: run them as the postgres user.
as_pg() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}
if [[ $(id -u) -eq 0 ]]; then
    chown postgres:postgres "$DIR"
fi

if [[ ! -f $DIR/data/PG_VERSION ]]; then
    log "initdb in $DIR/data"
    pwfile=$(mktemp)
    echo postgres >"$pwfile"
    chmod 644 "$pwfile"
    as_pg "$BIN/initdb" -D "$DIR/data" -U postgres --pwfile="$pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >&2
    rm -f "$pwfile"
fi

if (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    log "port $PORT on 127.0.0.1 is already in use by another process"
    exit 1
fi

log "starting $BIN/postgres on 127.0.0.1:$PORT (log: $LOG)"
touch "$LOG"
[[ $(id -u) -eq 0 ]] && chown postgres:postgres "$LOG"
if ! as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$LOG" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    start >&2; then
    log "the server did not start; last lines of $LOG:"
    tail -n 20 "$LOG" >&2
    exit 1
fi
head -n 1 "$DIR/data/postmaster.pid" >"$PIDFILE"

psql_admin() {
    as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$DIR" -p "$PORT" -U postgres -d postgres "$@"
}
psql_admin >&2 <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$USER_NAME') THEN
    CREATE ROLE $USER_NAME LOGIN PASSWORD '$PASSWORD';
  END IF;
END \$\$;
SELECT 'CREATE DATABASE $DB OWNER $USER_NAME'
  WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '$DB') \gexec
SQL

log "ready: pid $(cat "$PIDFILE"), $URL"
print_env
