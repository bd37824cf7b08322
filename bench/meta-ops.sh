#!/usr/bin/env bash
# Metadata operations per engine, Nectar vs JuiceFS 1.4, on the same database servers:
#
#   bench/meta-ops.sh [ENGINE...]     (default: sqlite redis postgres mysql etcd)
#
# For each engine, both file systems get a fresh volume (bucket: a local directory in
# the work directory; metadata: the engine below, emptied first), are mounted
# (`nectar mount -d`, `juicefs mount -d`) and run the identical workload of
# bench/meta-ops.py in one 10,000-entry directory: create (O_CREAT + close, empty
# files), stat, rename (same directory), readdir (entries/s), `ls -l` (readdir + lstat),
# unlink, then create and unlink with 4 processes. The phases alternate between the two
# file systems (see meta-ops.py). On Redis the volume is then filled with 100,000 empty
# files (10 directories x 10,000, mknod) and the Redis memory per file is reported.
#
# Engines and where their data goes (the same server for both file systems):
#   sqlite    sqlite3://WORK/{nectar,juicefs}/meta.db
#   redis     redis://127.0.0.1:6379/10 (nectar) and /11 (juicefs); FLUSHDB before
#   postgres  databases bench_nectar and bench_jfs (owner nectar), dropped and created
#   mysql     databases bench_nectar and bench_jfs, dropped and created, JuiceFS's URL
#             form mysql://nectar@(127.0.0.1:3306)/DB for both
#   etcd      etcd://127.0.0.1:2379/bench-nectar and /bench-jfs (key prefixes), deleted
# The PostgreSQL and MySQL password goes through META_PASSWORD (both tools read it), so
# it is not in the process list. A server that does not answer on its port is started
# with scripts/start-{redis,postgres,mariadb,etcd}.sh in a temporary directory and
# stopped at the end with scripts/stop-*.sh; servers already running are only used.
# At the end the bench databases/keys are removed (BENCH_KEEP=1 keeps them and the work
# directory).
#
# Admin access (creating databases): PostgreSQL as `postgres` through the server's Unix
# socket directory (PG_ADMIN_HOST, else found with `ss`), MariaDB as root through its
# socket (MYSQL_SOCKET, else found with `ss`).
#
# Environment (and those of bench/lib.sh):
#   META_FILES=10000      files in the directory
#   META_PROCS=4          processes of the parallel variants
#   META_LIST_REPS=3      readdir and ls -l repetitions
#   META_SETTLE=1.5       seconds of sleep before each timed phase (> kernel caches)
#   META_MEM_DIRS=10 META_MEM_FILES=10000   the Redis memory test (META_MEM=0 skips it)
#   META_COUNTERS=1       read server request counters around each phase (0: off)
#   REDIS_PORT=6379 REDIS_DB_NECTAR=10 REDIS_DB_JUICEFS=11
#   PG_PORT=5432 MYSQL_PORT=3306 ETCD_PORT=2379 DB_USER=nectar DB_PASSWORD=nectar
#
# Usage (as root): bench/meta-ops.sh            bench/meta-ops.sh redis postgres
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ENGINES=("$@")
[ ${#ENGINES[@]} -gt 0 ] || ENGINES=(sqlite redis postgres mysql etcd)
FILES=${META_FILES:-10000}
PROCS=${META_PROCS:-4}
LIST_REPS=${META_LIST_REPS:-3}
SETTLE=${META_SETTLE:-1.5}
MEM=${META_MEM:-1}
MEM_DIRS=${META_MEM_DIRS:-10}
MEM_FILES=${META_MEM_FILES:-10000}
COUNTERS=${META_COUNTERS:-1}
REDIS_PORT=${REDIS_PORT:-6379}
REDIS_DB_NECTAR=${REDIS_DB_NECTAR:-10}
REDIS_DB_JUICEFS=${REDIS_DB_JUICEFS:-11}
PG_PORT=${PG_PORT:-5432}
MYSQL_PORT=${MYSQL_PORT:-3306}
ETCD_PORT=${ETCD_PORT:-2379}
DB_USER=${DB_USER:-nectar}
DB_PASSWORD=${DB_PASSWORD:-nectar}
DRIVER=$BENCH_DIR/meta-ops.py

for e in "${ENGINES[@]}"; do
    case $e in
    sqlite | redis | postgres | mysql | etcd) ;;
    *) die "unknown engine '$e' (sqlite redis postgres mysql etcd)" ;;
    esac
done
for db in "$REDIS_DB_NECTAR" "$REDIS_DB_JUICEFS"; do
    [[ $db =~ ^[0-9]+$ ]] && ((db > 3)) || die "Redis DB '$db' refused: use a DB number above 3"
done
[ "$REDIS_DB_NECTAR" != "$REDIS_DB_JUICEFS" ] || die "the two Redis DBs must differ"
[ $((FILES % PROCS)) = 0 ] || die "META_FILES must be a multiple of META_PROCS"

# --- names of each file system's database ----------------------------------------
ENGINE=""
db_name() { [ "$1" = nectar ] && echo bench_nectar || echo bench_jfs; }
redis_db() { [ "$1" = nectar ] && echo "$REDIS_DB_NECTAR" || echo "$REDIS_DB_JUICEFS"; }
etcd_prefix() { [ "$1" = nectar ] && echo bench-nectar || echo bench-jfs; }

# lib.sh's fs_format and fs_mount take the META-URL from meta_url FS.
meta_url() {
    local fs=$1
    case $ENGINE in
    sqlite) echo "sqlite3://$WORK/$fs/meta.db" ;;
    redis) echo "redis://127.0.0.1:$REDIS_PORT/$(redis_db "$fs")" ;;
    postgres) echo "postgres://$DB_USER@127.0.0.1:$PG_PORT/$(db_name "$fs")?sslmode=disable" ;;
    mysql) echo "mysql://$DB_USER@(127.0.0.1:$MYSQL_PORT)/$(db_name "$fs")" ;;
    etcd) echo "etcd://127.0.0.1:$ETCD_PORT/$(etcd_prefix "$fs")" ;;
    esac
}

# --- database servers ---------------------------------------------------------------
SRV_DIR=""      # where servers started by this script live
STARTED=()      # engines whose server this script started
PG_HOST=""      # PostgreSQL admin socket directory
MY_SOCK=""      # MariaDB admin socket

tcp_open() { (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
answers() {
    case $1 in
    redis) [ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] ;;
    postgres) tcp_open "$PG_PORT" ;;
    mysql) tcp_open "$MYSQL_PORT" ;;
    etcd) curl -s --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"' ;;
    esac
}
# The Unix socket a listening process of the given name has (ss -xlp).
find_socket() { # REGEX-of-path REGEX-of-line
    ss -xlpH 2>/dev/null | P=$1 C=$2 awk '$5 ~ ENVIRON["P"] && $0 ~ ENVIRON["C"] {print $5; exit}'
}
start_server() {
    local e=$1 script
    if [ -z "$SRV_DIR" ]; then
        SRV_DIR=$(mktemp -d "${BENCH_TMPDIR:-/tmp}/nectar-bench-servers.XXXXXX")
        # The database servers run as their own users (postgres, mysql).
        chmod 755 "$SRV_DIR"
    fi
    case $e in
    redis) script=start-redis.sh ;; postgres) script=start-postgres.sh ;;
    mysql) script=start-mariadb.sh ;; etcd) script=start-etcd.sh ;;
    esac
    log "$e: nothing answers on its port; starting one with scripts/$script in $SRV_DIR/$e"
    STARTED+=("$e")
    case $e in
    redis) "$REPO_DIR/scripts/start-redis.sh" "$SRV_DIR/$e" standalone "$REDIS_PORT" >/dev/null ;;
    postgres) "$REPO_DIR/scripts/start-postgres.sh" "$SRV_DIR/$e" "$PG_PORT" >/dev/null ;;
    mysql) "$REPO_DIR/scripts/start-mariadb.sh" "$SRV_DIR/$e" "$MYSQL_PORT" >/dev/null ;;
    etcd) "$REPO_DIR/scripts/start-etcd.sh" "$SRV_DIR/$e" "$ETCD_PORT" >/dev/null ;;
    esac || die "could not start $e"
}
stop_servers() {
    local e
    for e in ${STARTED[@]+"${STARTED[@]}"}; do
        log "stopping the $e server this script started"
        case $e in
        redis) "$REPO_DIR/scripts/stop-redis.sh" "$SRV_DIR/$e" ;;
        postgres) "$REPO_DIR/scripts/stop-postgres.sh" "$SRV_DIR/$e" ;;
        mysql) "$REPO_DIR/scripts/stop-mariadb.sh" "$SRV_DIR/$e" ;;
        etcd) "$REPO_DIR/scripts/stop-etcd.sh" "$SRV_DIR/$e" ;;
        esac
    done
    STARTED=()
    if [ -n "$SRV_DIR" ] && [ "${BENCH_KEEP:-0}" != 1 ]; then rm -rf "$SRV_DIR"; fi
}
ensure_server() {
    local e=$1
    [ "$e" = sqlite ] && return 0
    if answers "$e"; then
        log "$e: using the server already running on 127.0.0.1"
    else
        start_server "$e"
    fi
    case $e in
    postgres)
        if [ -n "${PG_ADMIN_HOST:-}" ]; then PG_HOST=$PG_ADMIN_HOST
        elif [ -n "$SRV_DIR" ] && [ -S "$SRV_DIR/postgres/.s.PGSQL.$PG_PORT" ]; then PG_HOST=$SRV_DIR/postgres
        else PG_HOST=$(dirname "$(find_socket "[.]s[.]PGSQL[.]$PG_PORT\$" postgres)"); fi
        [ -S "$PG_HOST/.s.PGSQL.$PG_PORT" ] || die "no PostgreSQL admin socket found (set PG_ADMIN_HOST)"
        pg_admin -c "select 1" >/dev/null || die "no admin access to PostgreSQL through $PG_HOST"
        ;;
    mysql)
        if [ -n "${MYSQL_SOCKET:-}" ]; then MY_SOCK=$MYSQL_SOCKET
        elif [ -n "$SRV_DIR" ] && [ -S "$SRV_DIR/mysql/mysqld.sock" ]; then MY_SOCK=$SRV_DIR/mysql/mysqld.sock
        else MY_SOCK=$(find_socket . '"(mariadbd|mysqld)"'); fi
        [ -S "$MY_SOCK" ] || die "no MariaDB admin socket found (set MYSQL_SOCKET)"
        my_admin -e "select 1" >/dev/null || die "no admin access to MariaDB through $MY_SOCK"
        ;;
    esac
}
pg_admin() { psql -X -q -At -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres "$@"; }
my_admin() { mariadb --no-defaults -S "$MY_SOCK" -u root -N -B "$@"; }
etcd_ctl() { ETCDCTL_API=3 etcdctl --endpoints="http://127.0.0.1:$ETCD_PORT" --command-timeout=30s "$@"; }

# Empties (or creates empty) the engine's bench databases of both file systems.
reset_db() {
    local e=$1 fs db
    for fs in nectar juicefs; do
        case $e in
        redis) redis-cli -h 127.0.0.1 -p "$REDIS_PORT" -n "$(redis_db "$fs")" flushdb >/dev/null ;;
        postgres)
            db=$(db_name "$fs")
            pg_admin -c "drop database if exists $db with (force)"
            pg_admin -c "create database $db owner $DB_USER" ;;
        mysql)
            db=$(db_name "$fs")
            my_admin -e "drop database if exists $db; create database $db;
                grant all on $db.* to '$DB_USER'@'127.0.0.1'; grant all on $db.* to '$DB_USER'@'localhost';" ;;
        etcd) etcd_ctl del --prefix "/$(etcd_prefix "$fs")" >/dev/null ;;
        esac
    done
}
drop_db() {
    local e=$1 fs db
    for fs in nectar juicefs; do
        case $e in
        redis) redis-cli -h 127.0.0.1 -p "$REDIS_PORT" -n "$(redis_db "$fs")" flushdb >/dev/null ;;
        postgres) db=$(db_name "$fs"); pg_admin -c "drop database if exists $db with (force)" ;;
        mysql) db=$(db_name "$fs"); my_admin -e "drop database if exists $db" ;;
        etcd) etcd_ctl del --prefix "/$(etcd_prefix "$fs")" >/dev/null ;;
        esac
    done
}

# A shell command printing a request counter of the engine's server, for meta-ops.py.
# PostgreSQL counts per database (transactions); the others count the whole server.
counter_cmd() {
    local e=$1 fs=$2
    case $e in
    redis) echo "redis-cli -h 127.0.0.1 -p $REDIS_PORT info stats | awk -F: '/^total_commands_processed:/ {print \$2+0}'" ;;
    postgres) echo "psql -X -At -h '$PG_HOST' -p $PG_PORT -U postgres -d postgres -c \"select xact_commit + xact_rollback from pg_stat_database where datname = '$(db_name "$fs")'\"" ;;
    mysql) echo "mariadb --no-defaults -S '$MY_SOCK' -u root -N -B -e \"show global status like 'Questions'\" | awk '{print \$2 - 1}'" ;;
    etcd) echo "curl -s http://127.0.0.1:$ETCD_PORT/metrics | awk '/^grpc_server_handled_total/ && /grpc_service=\"etcdserverpb.KV\"/ {s += \$2} END {print s}'" ;;
    esac
}
counter_label() {
    case $1 in
    redis) echo "Redis commands (server-wide)" ;;
    postgres) echo "PG transactions" ;;
    mysql) echo "MySQL statements (server-wide)" ;;
    etcd) echo "etcd KV requests (server-wide)" ;;
    esac
}

# --- Redis memory per file ------------------------------------------------------------
redis_used() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" info memory | awk -F: '/^used_memory:/ {print $2+0}'; }
# Sum of MEMORY USAGE over the keys of one DB (redis-cli --memkeys, exact).
redis_keys_bytes() {
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" -n "$1" --memkeys --memkeys-samples 0 2>/dev/null |
        awk '/ with [0-9]+ bytes/ {for (i = 1; i < NF; i++) if ($(i+1) == "bytes") s += $i} END {print s+0}'
}
redis_keys() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" -n "$1" dbsize; }
redis_memory() {
    local fs db u0 k0 n0 u1 k1 n1 total=$((MEM_DIRS * MEM_FILES))
    for fs in $BENCH_FS; do
        [ "$fs" = local ] && continue
        db=$(redis_db "$fs")
        sleep 2
        u0=$(redis_used); k0=$(redis_keys_bytes "$db"); n0=$(redis_keys "$db")
        run_waited python3 "$DRIVER" mknod --fs "$fs" "$(fs_dir "$fs")" "${FS_PIDS[$fs]// /,}" \
            --dirs "$MEM_DIRS" --files "$MEM_FILES" --detail "$WORK/redis.detail.tsv" ||
            die "$fs: mknod of $total files failed"
        sleep 3
        u1=$(redis_used); k1=$(redis_keys_bytes "$db"); n1=$(redis_keys "$db")
        local per_used per_keys per_n
        per_used=$(awk -v a="$u0" -v b="$u1" -v n="$total" 'BEGIN{printf "%.1f", (b - a) / n}')
        per_keys=$(awk -v a="$k0" -v b="$k1" -v n="$total" 'BEGIN{printf "%.1f", (b - a) / n}')
        per_n=$(awk -v a="$n0" -v b="$n1" -v n="$total" 'BEGIN{printf "%.2f", (b - a) / n}')
        printf '%s\t%s\t%s\n' "Redis used_memory delta / file (bytes)" "$fs" "$per_used" >>"$WORK/redis-mem.tsv"
        printf '%s\t%s\t%s\n' "Redis MEMORY USAGE of DB keys / file (bytes)" "$fs" "$per_keys" >>"$WORK/redis-mem.tsv"
        printf '%s\t%s\t%s\n' "Redis keys / file" "$fs" "$per_n" >>"$WORK/redis.detail.tsv"
        log "$fs: redis used_memory $u0 -> $u1 = $per_used B/file; keys of DB $db: $k0 -> $k1 B = $per_keys B/file, $n0 -> $n1 keys"
    done
}

# --- cleanup: lib.sh's (stop our commands, unmount, remove WORK), then the databases
# and the servers we started.
ENGINES_TOUCHED=()
meta_cleanup() {
    local rc=$? e
    set +e
    trap - EXIT INT TERM
    (bench_cleanup)
    if [ "${BENCH_KEEP:-0}" != 1 ]; then
        for e in ${ENGINES_TOUCHED[@]+"${ENGINES_TOUCHED[@]}"}; do
            [ "$e" = sqlite ] || drop_db "$e" 2>/dev/null
        done
    fi
    stop_servers
    exit $rc
}

# --- run --------------------------------------------------------------------------------
bench_init meta-ops
trap meta_cleanup EXIT
command -v ss >/dev/null || die "ss is missing (apt-get install iproute2)"
LOAD_START=$(loadavg)
UPTIME_START=$(uptime)

for e in "${ENGINES[@]}"; do ensure_server "$e"; done

ei=0
for e in "${ENGINES[@]}"; do
    ENGINE=$e
    log "=== engine $e ==="
    if [ "$e" = postgres ] || [ "$e" = mysql ]; then
        export META_PASSWORD=$DB_PASSWORD
    else
        unset META_PASSWORD # both tools would send it to Redis and etcd as well
    fi
    ENGINES_TOUCHED+=("$e")
    [ "$e" = sqlite ] || reset_db "$e"
    for fs in $BENCH_FS; do
        rm -rf "${WORK:?}/$fs"
        fs_format "$fs"
        fs_mount "$fs"
        log "$fs: $(meta_url "$fs")"
    done
    args=()
    for fs in $BENCH_FS; do
        args+=(--fs "$fs" "$(fs_dir "$fs")" "$(echo ${FS_PIDS[$fs]:-} | tr ' ' ',')")
        if [ "$COUNTERS" = 1 ] && [ "$e" != sqlite ] && [ "$fs" != local ]; then
            args+=(--counter "$fs" "$(counter_cmd "$e" "$fs")")
        fi
    done
    if [ "$COUNTERS" = 1 ] && [ "$e" != sqlite ]; then
        args+=(--counter-label "$(counter_label "$e")")
        # PostgreSQL publishes a backend's statistics up to ~10 s late.
        [ "$e" = postgres ] && args+=(--counter-isolated --counter-delay 11)
    fi
    echo "load average at the start: $(loadavg)" >"$WORK/$e.load"
    run_waited python3 "$DRIVER" ops "${args[@]}" --files "$FILES" --procs "$PROCS" \
        --list-reps "$LIST_REPS" --settle "$SETTLE" --first $((ei % 2)) \
        --out "$WORK/$e.tsv" --detail "$WORK/$e.detail.tsv" || die "$e: the workload failed"
    if [ "$e" = redis ] && [ "$MEM" = 1 ]; then
        redis_memory
    fi
    echo "load average at the end: $(loadavg)" >>"$WORK/$e.load"
    for fs in $BENCH_FS; do
        fs_umount "$fs"
        mkdir -p "$WORK/logs/$e"
        for f in "$WORK/$fs"/*.log; do [ -e "$f" ] && mv "$f" "$WORK/logs/$e/$fs-$(basename "$f")"; done
        rm -rf "${WORK:?}/$fs"
    done
    ei=$((ei + 1))
done

echo
echo "== meta-ops: $FILES files in one directory, Nectar vs JuiceFS $("$JUICEFS" version 2>/dev/null | awk '{print $3}') =="
echo "host: $(nproc) cores; uptime at the start: $UPTIME_START"
echo "uptime at the end: $(uptime)"
for e in "${ENGINES[@]}"; do
    ENGINE=$e
    echo
    echo "--- $e: $(meta_url nectar | sed "s|$WORK|WORK|") vs $(meta_url juicefs | sed "s|$WORK|WORK|") ($(tr '\n' ';' <"$WORK/$e.load" | sed 's/;$//')) ---"
    print_table "$WORK/$e.tsv"
    if [ "$e" = redis ] && [ -s "$WORK/redis-mem.tsv" ]; then
        echo
        print_table "$WORK/redis-mem.tsv"
    fi
    echo
    echo "details:"
    print_table "$WORK/$e.detail.tsv"
done
