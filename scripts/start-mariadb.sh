#!/usr/bin/env bash
# Starts a local MariaDB server for Nectar's metadata tests.
#
#   scripts/start-mariadb.sh DIR [PORT]
#
# DIR holds the data (DIR/data), the error log (DIR/error.log), the Unix socket
# (DIR/mysqld.sock) and the server's PID (DIR/mariadb.pid); PORT defaults to 3306. The
# server listens on 127.0.0.1 only. Installs Debian's mariadb-server if missing. Creates
# the databases `nectar` and `nectar2` and the user 'nectar'@'127.0.0.1' (password
# `nectar`) with all rights on them; root is reached through the socket. InnoDB flushes
# its log once a second: test data only. Prints the variable the tests read:
#
#   eval "$(scripts/start-mariadb.sh /tmp/maria)"
#   NECTAR_TEST_META_URLS="$NECTAR_TEST_MYSQL_URL" cargo test -p nectar-meta --test conformance
#   scripts/stop-mariadb.sh /tmp/maria
#
# Only the `export` line goes to stdout; progress goes to stderr.
set -euo pipefail
# shellcheck source=lib/daemon.sh
source "$(dirname "$0")/lib/daemon.sh"

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 DIR [PORT]" >&2
    exit 2
fi
DIR=$1
PORT=${2:-3306}
if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then
    echo "start-mariadb: bad port '$PORT'" >&2
    exit 2
fi
USER_NAME=nectar
PASSWORD=nectar

log() { echo "start-mariadb: $*" >&2; }

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
PIDFILE=$DIR/mariadb.pid
LOG=$DIR/error.log
SOCK=$DIR/mysqld.sock
URL="mysql://$USER_NAME:$PASSWORD@127.0.0.1:$PORT/nectar"

print_env() {
    echo "export NECTAR_TEST_MYSQL_URL='$URL'"
}

if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    log "already running (pid $(cat "$PIDFILE")), see $LOG"
    print_env
    exit 0
fi

# shellcheck source=lib/apt.sh
source "$(dirname "$0")/lib/apt.sh"
if ! command -v mariadbd >/dev/null || ! command -v mariadb >/dev/null; then
    log "installing mariadb-server"
    apt_install mariadb-server mariadb-client
fi
MARIADBD=$(command -v mariadbd)
RUN_USER=mysql
if ! id "$RUN_USER" >/dev/null 2>&1; then
    RUN_USER=$(id -un)
fi
if [[ $(id -u) -eq 0 ]]; then
    chown "$RUN_USER": "$DIR"
fi

if [[ ! -d $DIR/data/mysql ]]; then
    log "creating the data directory $DIR/data"
    mariadb-install-db --no-defaults --user="$RUN_USER" --datadir="$DIR/data" --skip-test-db \
        --auth-root-authentication-method=normal >&2
fi

if (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    log "port $PORT on 127.0.0.1 is already in use by another process"
    exit 1
fi

# The server drops root for $RUN_USER in the same process, so the PID file stays right.
log "starting $MARIADBD on 127.0.0.1:$PORT (log: $LOG)"
start_detached "$PIDFILE" \
    "$MARIADBD" --no-defaults --user="$RUN_USER" --datadir="$DIR/data" \
    --bind-address=127.0.0.1 --port="$PORT" --socket="$SOCK" --pid-file="$DIR/mysqld.pid" \
    --log-error="$LOG" --skip-name-resolve --max-connections=500 --open-files-limit=65535 \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_general_ci \
    --innodb-flush-log-at-trx-commit=2 \
    </dev/null >/dev/null 2>&1 &

ready=
for _ in $(seq 1 120); do
    if exited "$PIDFILE"; then
        break
    fi
    if mariadb-admin --no-defaults --socket="$SOCK" -uroot ping >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.5
done
if [[ -z $ready ]]; then
    log "the server did not answer within 60 s; last lines of $LOG:"
    tail -n 20 "$LOG" >&2
    if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        kill -TERM "$(cat "$PIDFILE")"
    fi
    rm -f "$PIDFILE"
    exit 1
fi

mariadb --no-defaults --socket="$SOCK" -uroot >&2 <<SQL
CREATE DATABASE IF NOT EXISTS nectar;
CREATE DATABASE IF NOT EXISTS nectar2;
CREATE USER IF NOT EXISTS '$USER_NAME'@'127.0.0.1' IDENTIFIED BY '$PASSWORD';
CREATE USER IF NOT EXISTS '$USER_NAME'@'localhost' IDENTIFIED BY '$PASSWORD';
GRANT ALL ON nectar.* TO '$USER_NAME'@'127.0.0.1';
GRANT ALL ON nectar2.* TO '$USER_NAME'@'127.0.0.1';
GRANT ALL ON nectar.* TO '$USER_NAME'@'localhost';
GRANT ALL ON nectar2.* TO '$USER_NAME'@'localhost';
SQL

log "ready: pid $(cat "$PIDFILE"), $URL (also database nectar2)"
print_env
