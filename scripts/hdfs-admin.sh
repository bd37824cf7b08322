#!/usr/bin/env bash
# Runs Hadoop's own tools against the cluster of scripts/start-hdfs.sh DIR, as the HDFS
# superuser (hdfs/localhost): FsShell (`fs`) or DFSHAAdmin (`haadmin`). The tests use it
# to see Nectar's blocks with the reference Java client and to fail the NameNodes over.
#
#   scripts/hdfs-admin.sh DIR fs -ls -R /user/nectar
#   scripts/hdfs-admin.sh DIR haadmin -failover nn1 nn2
#   scripts/hdfs-admin.sh DIR kill nn1        (SIGKILL to a NameNode, as a crash)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/lib/daemon.sh"
source "$HERE/lib/hdfs.sh"

if [[ $# -lt 2 ]]; then
    echo "usage: $0 DIR fs|haadmin ARGS... | $0 DIR kill nn1|nn2" >&2
    exit 2
fi
hdfs_paths "$1"
shift
if [[ $1 == kill ]]; then
    [[ ${2:-} == nn1 || ${2:-} == nn2 ]] || { echo "hdfs-admin: kill nn1 or nn2" >&2; exit 2; }
    kill -KILL "$(cat "$HDFS/$2.pid")"
    exit 0
fi
hdfs_admin "$@" 2> >(grep -v -e '^[0-9:]* WARN util.NativeCodeLoader' >&2)
