#!/usr/bin/env bash
# Runs Hadoop's own tools against the cluster of scripts/start-hdfs.sh DIR, as the HDFS
# superuser (hdfs/localhost): FsShell (`fs`) or DFSHAAdmin (`haadmin`). The tests use it
# to see Nectar's blocks with the reference Java client and to fail the NameNodes over.
#
#   scripts/hdfs-admin.sh DIR fs -ls -R /user/nectar
#   scripts/hdfs-admin.sh DIR haadmin -failover nn1 nn2
#   scripts/hdfs-admin.sh DIR restart         (both NameNodes killed with SIGKILL, as in a
#                                             crash, started again, nn1 made active)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib/daemon.sh"
source "$HERE/lib/hdfs.sh"

if [[ $# -lt 2 ]]; then
    echo "usage: $0 DIR fs|haadmin ARGS... | $0 DIR restart" >&2
    exit 2
fi
hdfs_paths "$1"
shift
if [[ $1 == restart ]]; then
    for nn in nn1 nn2; do
        kill -KILL "$(cat "$HDFS/$nn.pid")" 2>/dev/null || true
    done
    for nn in nn1 nn2; do
        while ! exited "$HDFS/$nn.pid"; do sleep 0.1; done
        mv -f "$HDFS/logs/$nn.log" "$HDFS/logs/$nn.log.$(date +%s)"
        hdfs_java_detached "$HDFS/conf-$nn" "$HDFS/logs/$nn.log" "$HDFS/$nn.pid" \
            org.apache.hadoop.hdfs.server.namenode.NameNode
    done
    for nn in nn1 nn2; do
        wait_log "$HDFS/logs/$nn.log" "$HDFS/$nn.pid" "IPC Server listener on"
    done
    hdfs_admin haadmin -transitionToActive nn1
    exit
fi
hdfs_admin "$@" 2> >(grep -v -e '^[0-9:]* WARN util.NativeCodeLoader' >&2)
