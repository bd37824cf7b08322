#!/usr/bin/env bash
# Proves that the README's commands work on a fresh Debian 12, whatever this machine
# happens to have installed: builds a clean Debian 12 root with debootstrap (minbase: the
# smallest root Debian makes), copies this work tree into it, and runs there, as root:
#
#   1. scripts/quickstart.sh, then writes a file on the mount, reads it back, unmounts;
#   2. scripts/quickstart.sh again, which must only mount, and finds the file again;
#   3. with --full, the whole suite: CI=true scripts/test.sh.
#
#   scripts/fresh-check.sh [--full | --suite-only] [--keep]
#
# --suite-only runs only step 3, the suite (it builds everything it needs itself).
#
# Only the Rust toolchain comes from this machine (bind-mounted read-only, at the same
# paths), with /dev/fuse, /proc, /sys and the network's settings (resolv.conf and any
# local certificate authorities in /usr/local/share/ca-certificates); packages and crates are fetched from their
# registries as a new user's would be. Downloaded .deb files are kept in
# .cache/debootstrap to save the next run the download, never the install. Everything
# runs in a mount namespace of its own, so no mount made inside ever shows on this
# machine; on exit, even a failed one, the processes left in the root are killed and the
# root is deleted (--keep leaves it, for a look inside). Needs root.
#
# Takes 8 to 12 minutes (most of it the release build); --full adds the suite's time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

FULL=
KEEP=
SUITE_ONLY=
for arg in "$@"; do
    case $arg in
    --full) FULL=1 ;;
    --suite-only) FULL=1 SUITE_ONLY=1 ;;
    --keep) KEEP=1 ;;
    *)
        echo "usage: $0 [--full | --suite-only] [--keep]" >&2
        exit 2
        ;;
    esac
done

log() { echo "fresh-check: $*" >&2; }

# The part that runs inside the namespace (re-executed by unshare below).
if [[ ${NECTAR_FRESH_INNER:-} ]]; then
    R=$NECTAR_FRESH_INNER
    mount -t proc proc "$R/proc"
    mount --rbind /sys "$R/sys"
    mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"
    mkdir -p "$R/dev/pts"
    mount --bind /dev/pts "$R/dev/pts"
    [[ -e $R/dev/fuse ]] || touch "$R/dev/fuse"
    mount --bind /dev/fuse "$R/dev/fuse"
    for dir in "$RUSTUP_HOME" "$CARGO_BIN"; do
        mkdir -p "$R$dir"
        mount --bind "$dir" "$R$dir"
        mount -o remount,bind,ro "$R$dir"
    done
    # What a new user types, nothing more: PATH with the toolchain, HOME, a locale.
    exec chroot "$R" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
        PATH="$CARGO_BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        RUSTUP_HOME="$RUSTUP_HOME" RUSTUP_TOOLCHAIN="$RUSTUP_TOOLCHAIN" CARGO_HOME=/root/.cargo \
        FULL="$FULL" SUITE_ONLY="$SUITE_ONLY" bash -euo pipefail -c '
cd /root/nectar
step() { echo "fresh-check: [inside] $*" >&2; }
if [[ -z $SUITE_ONLY ]]; then
step "1. scripts/quickstart.sh"
start=$(date +%s)
scripts/quickstart.sh
step "quick start took $(($(date +%s) - start)) s"
head -c 20000000 /dev/urandom >/tmp/payload
cp /tmp/payload /mnt/nectar/payload
echo "hello from a fresh Debian" >/mnt/nectar/hello
sync
cmp /tmp/payload /mnt/nectar/payload
[[ $(cat /mnt/nectar/hello) == "hello from a fresh Debian" ]]
nectar umount /mnt/nectar
if mountpoint -q /mnt/nectar; then step "still mounted after nectar umount"; exit 1; fi
step "2. scripts/quickstart.sh again: it must only mount"
start=$(date +%s)
scripts/quickstart.sh 2>&1 | tee /tmp/second.log
grep -q "volume myvol exists" /tmp/second.log
if grep -q "building nectar" /tmp/second.log; then step "the second run built again"; exit 1; fi
cmp /tmp/payload /mnt/nectar/payload
[[ $(cat /mnt/nectar/hello) == "hello from a fresh Debian" ]]
step "second run took $(($(date +%s) - start)) s"
nectar umount /mnt/nectar
fi
if [[ -n $FULL ]]; then
    step "3. CI=true scripts/test.sh"
    start=$(date +%s)
    CI=true scripts/test.sh
    step "the suite took $(($(date +%s) - start)) s"
fi
step "all steps passed"
'
fi

[[ $(id -u) -eq 0 ]] || { log "run as root (debootstrap and chroot need it)"; exit 1; }
[[ -e /dev/fuse ]] || { log "/dev/fuse is missing here, so nothing can mount inside either"; exit 1; }
CARGO=$(command -v cargo) || { log "no cargo on PATH: the check borrows this machine's Rust toolchain"; exit 1; }
if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends debootstrap >&2
fi
export RUSTUP_HOME=${RUSTUP_HOME:-$HOME/.rustup}
export CARGO_BIN
CARGO_BIN=$(dirname "$(realpath -s "$CARGO")")
[[ -d $RUSTUP_HOME/toolchains ]] ||
    { log "no rustup toolchains in $RUSTUP_HOME: the check needs a rustup-installed Rust"; exit 1; }
# The toolchain this checkout builds with here, pinned so rustup inside never downloads.
export RUSTUP_TOOLCHAIN
RUSTUP_TOOLCHAIN=$(rustup show active-toolchain | awk '{print $1}')
MIRROR=${NECTAR_DEBIAN_MIRROR:-http://deb.debian.org/debian}

R=$(mktemp -d /var/tmp/nectar-fresh.XXXXXX)
# The root's "/": mktemp makes it 0700, which would lock every user but root (the
# database servers' own users) out of the whole tree.
chmod 755 "$R"
cleanup() {
    local status=$? pid left i
    set +e
    # The processes still in the root (a mount daemon, a test server) hold the namespace
    # and so its mounts; once they are gone nothing of it remains.
    for i in 1 2 3 4 5 6 7 8 9 10; do
        left=
        for pid in $(ls /proc | grep -E '^[0-9]+$'); do
            [[ $(readlink "/proc/$pid/root" 2>/dev/null) == "$R" ]] || continue
            left=1
            kill -"$([[ $i -lt 5 ]] && echo TERM || echo KILL)" "$pid" 2>/dev/null
        done
        [[ -z $left ]] && break
        sleep 1
    done
    # Never delete through a mount: unmount anything under the root that shows here.
    awk -v r="$R" 'index($2, r "/") == 1 {print $2}' /proc/self/mounts | sort -r |
        while read -r m; do umount -l "$m"; done
    if [[ -n $KEEP ]]; then
        log "root kept in $R"
    else
        rm -rf --one-file-system "$R"
    fi
    if ((status == 0)); then
        log "PASSED"
        echo "fresh-check: 1 passed, 0 failed"
    else
        log "FAILED (exit status $status)"
        echo "fresh-check: 0 passed, 1 failed"
    fi
    exit "$status"
}
trap cleanup EXIT

# The work tree as a clean clone would have it (tracked files and new ones, with their
# uncommitted changes), without build output or caches; taken first, so that the tree
# checked is the one of the moment the check was started.
mkdir -p "$R/root/nectar"
git ls-files -z --cached --others --exclude-standard |
    tar --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C "$R/root/nectar"

log "building a Debian 12 root in $R from $MIRROR"
mkdir -p "$ROOT/.cache/debootstrap"
start=$(date +%s)
if ! debootstrap --variant=minbase --cache-dir="$ROOT/.cache/debootstrap" bookworm "$R" "$MIRROR" \
    >"$R.debootstrap.log" 2>&1; then
    tail -20 "$R.debootstrap.log" >&2
    rm -f "$R.debootstrap.log"
    exit 1
fi
rm -f "$R.debootstrap.log"
log "root built in $(($(date +%s) - start)) s"
cp /etc/resolv.conf "$R/etc/resolv.conf"
# The network's own certificate authorities, where a site adds some (a TLS proxy in front
# of the registries): they belong to the network, not to the machine, so the fresh root
# gets them too. They take effect when the quick start installs ca-certificates.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$R/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$R/usr/local/share/ca-certificates/"
fi
cat >"$R/etc/apt/sources.list" <<EOF
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
EOF


log "running the README's commands inside${FULL:+, then the whole suite}"
NECTAR_FRESH_INNER=$R FULL=$FULL SUITE_ONLY=$SUITE_ONLY unshare --mount --propagation private "$ROOT/scripts/fresh-check.sh" "$@"
