#!/usr/bin/env bash
# Installs what building, mounting and testing Nectar need on Debian: FUSE 3, the xattr
# and ACL tools, fio, curl, and protoc (the etcd client's build needs it). Packages already present are left alone; `apt-get update`
# runs only when something is missing. Run as root.
set -euo pipefail

PACKAGES=(fuse3 libfuse3-dev pkg-config attr acl fio curl ca-certificates tar make gcc protobuf-compiler)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "install-deps: missing packages ${missing[*]}; run as root to install them" >&2
        exit 1
    fi
    echo "install-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq >&2
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
if ! command -v cargo >/dev/null; then
    echo "install-deps: cargo (Rust 1.95 or later) is required: https://rustup.rs" >&2
    exit 1
fi
# FUSE needs the device node; containers sometimes lack it.
if [[ ! -e /dev/fuse ]]; then
    modprobe fuse 2>/dev/null || true
    [[ -e /dev/fuse ]] || echo "install-deps: warning: /dev/fuse is missing, mounts will fail" >&2
fi
