#!/usr/bin/env bash
# Starts a Kerberized, highly available HDFS on 127.0.0.1 for Nectar's HDFS tests: an MIT
# KDC (realm NECTAR.TEST), two NameNodes of the nameservice `nectarns` (nn1 active, nn2
# standby, manual failover) and one DataNode.
#
#   scripts/start-hdfs.sh DIR [PORT]
#
# PORT (default 18200) is the KDC's; the NameNodes take PORT+1 and PORT+2 (RPC) and PORT+3
# and PORT+4 (HTTP); the DataNode takes ephemeral ports. All bind to 127.0.0.1 and must be
# free. DIR holds everything: the KDC's database, config and log (DIR/kdc), the keytabs, the
# cluster's data, configs and logs (DIR/hdfs) and the PID files.
#
# Hadoop itself is Apache Hadoop 2.7.3, the last release whose `hadoop-hdfs` jar carries the
# NameNode and DataNode (later ones ship only client jars): its jars are taken from the
# source distribution of PyPI `pyspark==2.4.8`, downloaded once, hash-checked, into
# $NECTAR_HADOOP_PKG (default DIR/../hadoop-pkg), where later runs find them. It speaks the
# same RPC (v9, protobuf) and data transfer protocol as Hadoop 3 for everything Nectar uses.
# The JVMs run on Debian's OpenJDK 17; the KDC is Debian's krb5-kdc. Both are installed
# when missing (needs root). Nothing under /etc is touched: KRB5_CONFIG points at DIR/kdc.
#
# Principals and keytabs (DIR/kdc/*.keytab, mode 0600):
#   nectar@NECTAR.TEST        the tenant; owns /user/nectar (mode 700); its tickets live
#                             at most NECTAR_HDFS_TICKET_SECONDS (default a day), so a
#                             test can make them expire while it runs
#   hdfs/localhost@...        the superuser (NameNodes, DataNode, admin commands)
#   other@NECTAR.TEST         a second tenant owning /user/other (mode 700)
#
# On success the script prints the variables the tests read (only `export` lines go to
# stdout; progress goes to stderr):
#
#   eval "$(scripts/start-hdfs.sh /tmp/hdfs)"
#   cargo test -p nectar-object --test hdfs
#   scripts/hdfs-admin.sh /tmp/hdfs fs -ls -R /user/nectar
#   scripts/stop-hdfs.sh /tmp/hdfs
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/daemon.sh
source "$HERE/lib/daemon.sh"
# shellcheck source=lib/apt.sh
source "$HERE/lib/apt.sh"
# shellcheck source=lib/hdfs.sh
source "$HERE/lib/hdfs.sh"

if [[ $# -lt 1 || $# -gt 2 ]]; then
    echo "usage: $0 DIR [PORT]" >&2
    exit 2
fi
PORT=${2:-18200}
if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT + 4 > 32767)); then
    echo "start-hdfs: bad port '$PORT' (PORT+4 must stay below 32768)" >&2
    exit 2
fi
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
PKG=${NECTAR_HADOOP_PKG:-$(dirname "$DIR")/hadoop-pkg}
TICKET_SECONDS=${NECTAR_HDFS_TICKET_SECONDS:-86400}
if ! [[ $TICKET_SECONDS =~ ^[0-9]+$ ]] || ((TICKET_SECONDS < 10)); then
    echo "start-hdfs: NECTAR_HDFS_TICKET_SECONDS must be a number of seconds, 10 or more" >&2
    exit 2
fi
hdfs_paths "$DIR"

log() { echo "start-hdfs: $*" >&2; }

print_env() {
    echo "export NECTAR_TEST_HDFS_URL=hdfs://$NAMESERVICE/user/nectar"
    echo "export NECTAR_TEST_HDFS_OTHER_URL=hdfs://$NAMESERVICE/user/other"
    echo "export NECTAR_TEST_HDFS_NAMENODES=127.0.0.1:$((PORT + 1)),127.0.0.1:$((PORT + 2))"
    echo "export NECTAR_TEST_HDFS_DIR=$DIR"
    echo "export NECTAR_TEST_HADOOP_CONF_DIR=$CONF"
    echo "export NECTAR_TEST_KRB5_CONFIG=$KDC/krb5.conf"
    echo "export NECTAR_TEST_KRB5PRINCIPAL=nectar@$REALM"
    echo "export NECTAR_TEST_KRB5KEYTAB=$KDC/nectar.keytab"
    echo "export NECTAR_TEST_KDC_LOG=$KDC/kdc.log"
    echo "export NECTAR_TEST_HDFS_TICKET_SECONDS=$(cat "$KDC/ticket-seconds" 2>/dev/null || echo "$TICKET_SECONDS")"
}

if [[ -f $KDC/kdc.pid ]] && ! exited "$KDC/kdc.pid" && [[ -f $HDFS/nn1.pid ]] && ! exited "$HDFS/nn1.pid"; then
    log "already running, see $HDFS/logs"
    print_env
    exit 0
fi

for p in $(seq "$PORT" $((PORT + 4))); do
    if (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        log "port $p on 127.0.0.1 is already in use by another process"
        exit 1
    fi
done

# --- Packages and Hadoop's jars --------------------------------------------------------
missing=()
command -v krb5kdc >/dev/null || missing+=(krb5-kdc)
command -v kadmin.local >/dev/null || missing+=(krb5-admin-server)
command -v kinit >/dev/null || missing+=(krb5-user)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt_install "${missing[@]}"
fi
hdfs_install_jars "$PKG"

# --- KDC --------------------------------------------------------------------------------
rm -rf "$DIR/kdc" "$DIR/hdfs"
mkdir -p "$KDC" "$HDFS"
chmod 700 "$KDC"
# clockskew 5 s (default 300): a ticket past its end is refused within seconds, so a test
# whose tickets expire proves they were renewed.
cat >"$KDC/krb5.conf" <<EOF
[libdefaults]
  default_realm = $REALM
  dns_lookup_kdc = false
  dns_lookup_realm = false
  rdns = false
  ignore_acceptor_hostname = true
  udp_preference_limit = 1
  clockskew = 5
  default_ccache_name = FILE:$KDC/ccache
[realms]
  $REALM = {
    kdc = 127.0.0.1:$PORT
  }
[domain_realm]
  localhost = $REALM
  127.0.0.1 = $REALM
EOF
cat >"$KDC/kdc.conf" <<EOF
[kdcdefaults]
  kdc_listen = 127.0.0.1:$PORT
  kdc_tcp_listen = 127.0.0.1:$PORT
[realms]
  $REALM = {
    database_name = $KDC/principal
    acl_file = $KDC/kadm5.acl
    key_stash_file = $KDC/stash
    max_life = 24h 0m 0s
    max_renewable_life = 7d 0h 0m 0s
    supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
  }
[logging]
  kdc = FILE:$KDC/kdc.log
EOF
export KRB5_CONFIG=$KDC/krb5.conf KRB5_KDC_PROFILE=$KDC/kdc.conf
kdb5_util create -s -r "$REALM" -P "$(head -c 18 /dev/urandom | base64)" >/dev/null
kadm() {
    local out
    out=$(kadmin.local -q "$1" 2>&1) || { echo "$out" >&2; return 1; }
}
kadm "addprinc -randkey -maxlife \"$TICKET_SECONDS seconds\" nectar@$REALM"
kadm "addprinc -randkey other@$REALM"
kadm "addprinc -randkey hdfs/localhost@$REALM"
kadm "addprinc -randkey HTTP/localhost@$REALM"
kadm "ktadd -k $KDC/nectar.keytab nectar@$REALM"
kadm "ktadd -k $KDC/other.keytab other@$REALM"
kadm "ktadd -k $KDC/hdfs.keytab hdfs/localhost@$REALM HTTP/localhost@$REALM"
chmod 600 "$KDC"/*.keytab
echo "$TICKET_SECONDS" >"$KDC/ticket-seconds"
log "starting the KDC on 127.0.0.1:$PORT (log: $KDC/kdc.log)"
start_detached "$KDC/kdc.pid" krb5kdc -n </dev/null >"$KDC/krb5kdc.out" 2>&1 &
for _ in $(seq 1 100); do
    port_answers "$PORT" && break
    exited "$KDC/kdc.pid" && break
    sleep 0.1
done
if ! port_answers "$PORT"; then
    log "the KDC did not start; $KDC/krb5kdc.out says:"
    tail -n 20 "$KDC/krb5kdc.out" >&2
    exit 1
fi

# --- HDFS -------------------------------------------------------------------------------
mkdir -p "$HDFS"/{logs,data,shared-edits,web/webapps/hdfs,web/webapps/datanode,web/webapps/secondary,web/webapps/static}
chmod 700 "$HDFS/data"
# The jars are shared by every cluster; the admin script finds them through this link.
ln -s "$PKG/jars" "$HDFS/jars"
printf '%s\n' 'log4j.rootLogger=INFO,c' 'log4j.appender.c=org.apache.log4j.ConsoleAppender' \
    'log4j.appender.c.layout=org.apache.log4j.PatternLayout' \
    'log4j.appender.c.layout.ConversionPattern=%d{HH:mm:ss} %p %c{1}: %m%n' \
    'log4j.logger.org.apache.hadoop.util.NativeCodeLoader=ERROR' >"$HDFS/log4j.properties"
hdfs_write_conf "$CONF" "" "$PORT"
hdfs_write_conf "$HDFS/conf-nn1" nn1 "$PORT"
hdfs_write_conf "$HDFS/conf-nn2" nn2 "$PORT"

log "formatting the NameNode"
if ! hdfs_java "$HDFS/conf-nn1" org.apache.hadoop.hdfs.server.namenode.NameNode \
    -format -force -nonInteractive -clusterid nectar >"$HDFS/logs/format.log" 2>&1; then
    log "formatting failed; last lines of $HDFS/logs/format.log:"
    tail -n 20 "$HDFS/logs/format.log" >&2
    exit 1
fi
# The standby starts from a copy of the new image (instead of -bootstrapStandby, which
# would fetch it over SPNEGO-protected HTTP).
cp -a "$HDFS/name-nn1" "$HDFS/name-nn2"

for nn in nn1 nn2; do
    log "starting NameNode $nn"
    hdfs_java_detached "$HDFS/conf-$nn" "$HDFS/logs/$nn.log" "$HDFS/$nn.pid" \
        org.apache.hadoop.hdfs.server.namenode.NameNode
done
for nn in nn1 nn2; do
    wait_log "$HDFS/logs/$nn.log" "$HDFS/$nn.pid" "IPC Server listener on"
done
hdfs_admin haadmin -transitionToActive nn1 >"$HDFS/logs/haadmin.log" 2>&1 || {
    log "could not make nn1 active; see $HDFS/logs/haadmin.log"
    tail -n 20 "$HDFS/logs/haadmin.log" >&2
    exit 1
}
log "starting the DataNode"
hdfs_java_detached "$CONF" "$HDFS/logs/dn.log" "$HDFS/dn.pid" org.apache.hadoop.hdfs.server.datanode.DataNode
wait_log "$HDFS/logs/dn.log" "$HDFS/dn.pid" "Successfully sent block report"
wait_log "$HDFS/logs/nn1.log" "$HDFS/nn1.pid" "Leaving safe mode"

# The tenants' home directories, each private to its owner.
hdfs_admin fs -mkdir -p /user/nectar /user/other >"$HDFS/logs/setup.log" 2>&1 &&
    hdfs_admin fs -chown nectar:nectar /user/nectar >>"$HDFS/logs/setup.log" 2>&1 &&
    hdfs_admin fs -chown other:other /user/other >>"$HDFS/logs/setup.log" 2>&1 &&
    hdfs_admin fs -chmod 700 /user/nectar /user/other >>"$HDFS/logs/setup.log" 2>&1 || {
    log "could not create the tenants' directories; see $HDFS/logs/setup.log"
    tail -n 20 "$HDFS/logs/setup.log" >&2
    exit 1
}
log "ready: KDC pid $(cat "$KDC/kdc.pid"), NameNodes $(cat "$HDFS/nn1.pid") $(cat "$HDFS/nn2.pid"), DataNode $(cat "$HDFS/dn.pid")"
print_env
