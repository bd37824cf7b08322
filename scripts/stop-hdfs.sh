#!/usr/bin/env bash
# Stops the KDC and HDFS started by scripts/start-hdfs.sh DIR: the DataNode, both
# NameNodes, then the KDC, each by the PID in its file (SIGTERM, SIGKILL after 10 s).
# Leaves DIR in place; the next start-hdfs.sh starts afresh anyway.
#
#   scripts/stop-hdfs.sh DIR
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib/stop-server.sh"
source "$HERE/lib/hdfs.sh"

if [[ $# -ne 1 ]]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
hdfs_paths "$1"
is_hadoop() { cmdline_matches "$1" 'java .*org\.apache\.hadoop\.hdfs\.server'; }
is_kdc() { cmdline_matches "$1" krb5kdc; }
status=0
for d in dn nn1 nn2; do
    stop_server hdfs "$HDFS/$d.pid" is_hadoop || status=1
done
stop_server kdc "$KDC/kdc.pid" is_kdc || status=1
exit $status
