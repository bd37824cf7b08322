# The test HDFS cluster's layout, jars, configuration and JVMs; sourced by start-hdfs.sh,
# stop-hdfs.sh and hdfs-admin.sh, not run.
#
#   hdfs_paths DIR                 sets KDC, HDFS, CONF, REALM and NAMESERVICE for DIR
#   hdfs_install_jars PKG          downloads (once) and unpacks Hadoop 2.7.3's jars in PKG
#   hdfs_write_conf CONFDIR NN KDC_PORT
#                                  core-site.xml and hdfs-site.xml for NameNode NN (nn1,
#                                  nn2) or, with NN empty, for clients and the DataNode
#   hdfs_java CONFDIR CLASS ARGS   runs a Hadoop class in the foreground
#   hdfs_java_detached CONFDIR LOG PIDFILE CLASS ARGS
#                                  starts one in the background (PIDFILE holds the JVM's PID)
#   hdfs_admin fs|haadmin ARGS     FsShell or DFSHAAdmin as the superuser hdfs/localhost
#   wait_log LOG PIDFILE TEXT      waits up to 60 s for TEXT in LOG while PIDFILE's process lives
#   port_answers PORT              true when something listens on 127.0.0.1:PORT

# The source distribution whose deps/jars hold Hadoop 2.7.3, pinned by its hash.
HADOOP_SDIST=pyspark==2.4.8
HADOOP_SDIST_SHA256=3a19b71b8dc8dd91ebc943604a05e1ab01bce052456d42937035632d852d78dc
# What the NameNode, DataNode, FsShell and DFSHAAdmin load (found with -Xlog:class+load):
# the cluster runs with these only.
HADOOP_JARS=(
    hadoop-annotations-2.7.3 hadoop-auth-2.7.3 hadoop-common-2.7.3 hadoop-hdfs-2.7.3
    hadoop-mapreduce-client-app-2.7.3 hadoop-mapreduce-client-common-2.7.3
    hadoop-mapreduce-client-core-2.7.3 hadoop-yarn-api-2.7.3 hadoop-yarn-common-2.7.3
    hadoop-yarn-server-common-2.7.3
    guava-14.0.1 protobuf-java-2.5.0 htrace-core-3.1.0-incubating jetty-6.1.26
    jetty-util-6.1.26 javax.servlet-api-3.1.0 javax.ws.rs-api-2.0.1 netty-all-4.1.47.Final
    commons-cli-1.2 commons-codec-1.10 commons-collections-3.2.2 commons-configuration-1.6
    commons-io-2.4 commons-lang-2.6 commons-logging-1.1.3 jackson-core-asl-1.9.13
    jackson-mapper-asl-1.9.13 xercesImpl-2.9.1 log4j-1.2.17 apache-log4j-extras-1.2.17
    slf4j-api-1.7.16 slf4j-log4j12-1.7.16 jcl-over-slf4j-1.7.16
)

hdfs_paths() {
    KDC=$1/kdc
    HDFS=$1/hdfs
    CONF=$HDFS/conf
    REALM=NECTAR.TEST
    NAMESERVICE=nectarns
}

hdfs_install_jars() {
    local pkg=$1 jar missing=0
    for jar in "${HADOOP_JARS[@]}"; do
        [[ -f $pkg/jars/$jar.jar ]] || missing=1
    done
    ((missing)) || return 0
    mkdir -p "$pkg"
    local sdist=$pkg/dl/pyspark-2.4.8.tar.gz
    if [[ ! -f $sdist ]]; then
        echo "start-hdfs: downloading $HADOOP_SDIST (220 MB) for Hadoop 2.7.3's jars into $pkg" >&2
        # pip prepares an sdist's metadata, which needs setuptools and wheel: a venv of
        # the package directory's own holds them.
        if [[ ! -x $pkg/venv/bin/pip ]]; then
            python3 -m venv "$pkg/venv" >&2
            "$pkg/venv/bin/pip" install --quiet --disable-pip-version-check setuptools wheel >&2
        fi
        echo "$HADOOP_SDIST --hash=sha256:$HADOOP_SDIST_SHA256" >"$pkg/requirements.txt"
        "$pkg/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
            --no-build-isolation --require-hashes -r "$pkg/requirements.txt" -d "$pkg/dl" >&2
    fi
    echo "$HADOOP_SDIST_SHA256  $sdist" | sha256sum --check --quiet >&2 || {
        echo "start-hdfs: $sdist does not match its pinned hash; remove it and run again" >&2
        return 1
    }
    rm -rf "$pkg/jars.tmp"
    mkdir -p "$pkg/jars.tmp"
    local members=()
    for jar in "${HADOOP_JARS[@]}"; do
        members+=("pyspark-2.4.8/deps/jars/$jar.jar")
    done
    tar -xzf "$sdist" -C "$pkg/jars.tmp" --strip-components=3 "${members[@]}"
    rm -rf "$pkg/jars"
    mv "$pkg/jars.tmp" "$pkg/jars"
}

# Prints one Hadoop configuration property.
hdfs_prop() {
    echo "  <property><name>$1</name><value>$2</value></property>"
}

hdfs_write_conf() {
    local dir=$1 nn=$2 port=$3 ns=$NAMESERVICE
    mkdir -p "$dir"
    {
        echo "<configuration>"
        hdfs_prop fs.defaultFS "hdfs://$ns"
        hdfs_prop hadoop.tmp.dir "$HDFS/tmp"
        hdfs_prop hadoop.security.authentication kerberos
        hdfs_prop hadoop.security.authorization true
        hdfs_prop hadoop.rpc.protection privacy
        echo "</configuration>"
    } >"$dir/core-site.xml"
    {
        echo "<configuration>"
        hdfs_prop dfs.replication 1
        hdfs_prop dfs.webhdfs.enabled false
        hdfs_prop dfs.namenode.safemode.extension 0
        hdfs_prop dfs.heartbeat.interval 1
        hdfs_prop dfs.datanode.data.dir "file://$HDFS/data"
        hdfs_prop dfs.datanode.address 127.0.0.1:0
        hdfs_prop dfs.datanode.http.address 127.0.0.1:0
        hdfs_prop dfs.datanode.ipc.address 127.0.0.1:0
        hdfs_prop dfs.datanode.hostname 127.0.0.1
        hdfs_prop dfs.namenode.datanode.registration.ip-hostname-check false
        hdfs_prop dfs.nameservices "$ns"
        hdfs_prop "dfs.ha.namenodes.$ns" nn1,nn2
        hdfs_prop "dfs.namenode.rpc-address.$ns.nn1" "127.0.0.1:$((port + 1))"
        hdfs_prop "dfs.namenode.rpc-address.$ns.nn2" "127.0.0.1:$((port + 2))"
        hdfs_prop "dfs.namenode.http-address.$ns.nn1" "127.0.0.1:$((port + 3))"
        hdfs_prop "dfs.namenode.http-address.$ns.nn2" "127.0.0.1:$((port + 4))"
        hdfs_prop dfs.namenode.secondary.http-address 127.0.0.1:0
        hdfs_prop dfs.namenode.shared.edits.dir "file://$HDFS/shared-edits"
        hdfs_prop "dfs.client.failover.proxy.provider.$ns" \
            org.apache.hadoop.hdfs.server.namenode.ha.ConfiguredFailoverProxyProvider
        hdfs_prop dfs.ha.fencing.methods 'shell(/bin/true)'
        hdfs_prop dfs.ha.standby.checkpoints false
        hdfs_prop dfs.ha.tail-edits.period 1
        # A client told to fail over gives up after a few quick tries, not minutes.
        hdfs_prop dfs.client.failover.max.attempts 6
        hdfs_prop dfs.client.failover.sleep.base.millis 200
        hdfs_prop dfs.client.failover.sleep.max.millis 2000
        if [[ -n $nn ]]; then
            hdfs_prop dfs.namenode.name.dir "file://$HDFS/name-$nn"
            hdfs_prop dfs.ha.namenode.id "$nn"
        fi
        # Kerberos for RPC (privacy: encrypted), block access tokens, and SASL with
        # encryption on the DataNode's data transfer (no privileged ports, so no jsvc),
        # its blocks encrypted with AES/CTR as production clusters set it (without the
        # cipher suite SASL's own 3DES would encrypt them, at a tenth of the speed).
        hdfs_prop dfs.block.access.token.enable true
        hdfs_prop dfs.namenode.kerberos.principal "hdfs/localhost@$REALM"
        hdfs_prop dfs.namenode.keytab.file "$KDC/hdfs.keytab"
        hdfs_prop dfs.datanode.kerberos.principal "hdfs/localhost@$REALM"
        hdfs_prop dfs.datanode.keytab.file "$KDC/hdfs.keytab"
        hdfs_prop dfs.web.authentication.kerberos.principal "HTTP/localhost@$REALM"
        hdfs_prop dfs.web.authentication.kerberos.keytab "$KDC/hdfs.keytab"
        hdfs_prop dfs.namenode.kerberos.internal.spnego.principal "HTTP/localhost@$REALM"
        hdfs_prop ignore.secure.ports.for.testing true
        hdfs_prop dfs.data.transfer.protection privacy
        hdfs_prop dfs.encrypt.data.transfer.cipher.suites AES/CTR/NoPadding
        echo "</configuration>"
    } >"$dir/hdfs-site.xml"
}

# The JVM's options: a small heap; the KDC's krb5.conf; JDK 17 opens the Kerberos
# internals Hadoop 2.7 reaches into.
hdfs_jvm_opts() {
    echo "-Xmx384m -XX:+UseSerialGC -Dlog4j.configuration=file:$HDFS/log4j.properties" \
        "-Djava.security.krb5.conf=$KDC/krb5.conf" \
        "--add-exports=java.security.jgss/sun.security.krb5=ALL-UNNAMED" \
        "--add-exports=java.security.jgss/sun.security.jgss=ALL-UNNAMED"
}

hdfs_classpath() {
    echo "$1:$HDFS/web:$HDFS/jars/*"
}

hdfs_java() {
    local conf=$1
    shift
    # shellcheck disable=SC2046
    java $(hdfs_jvm_opts) -cp "$(hdfs_classpath "$conf")" "$@"
}

hdfs_java_detached() {
    local conf=$1 log=$2 pidfile=$3
    shift 3
    # shellcheck disable=SC2046
    start_detached "$pidfile" java $(hdfs_jvm_opts) -cp "$(hdfs_classpath "$conf")" "$@" \
        </dev/null >"$log" 2>&1 &
}

hdfs_admin() {
    local what=$1 class
    shift
    case $what in
    fs) class=org.apache.hadoop.fs.FsShell ;;
    haadmin) class=org.apache.hadoop.hdfs.tools.DFSHAAdmin ;;
    *)
        echo "hdfs_admin: fs or haadmin, not '$what'" >&2
        return 2
        ;;
    esac
    (
        export KRB5_CONFIG=$KDC/krb5.conf KRB5CCNAME=FILE:$HDFS/cc_admin
        kinit -kt "$KDC/hdfs.keytab" "hdfs/localhost@$REALM" &&
            hdfs_java "$CONF" "$class" "$@"
    )
}

wait_log() {
    local log=$1 pidfile=$2 text=$3
    for _ in $(seq 1 120); do
        grep -q "$text" "$log" 2>/dev/null && return 0
        if exited "$pidfile"; then
            echo "start-hdfs: the process of $pidfile exited; last lines of $log:" >&2
            tail -n 20 "$log" >&2
            return 1
        fi
        sleep 0.5
    done
    echo "start-hdfs: no '$text' in $log within 60 s; its last lines:" >&2
    tail -n 20 "$log" >&2
    return 1
}

port_answers() {
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
