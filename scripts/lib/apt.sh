# Installs Debian packages for the project's scripts; sourced, not run.
#
#   apt_install PACKAGE...
#
# Installs without recommended packages (so every package a script needs is named, and
# a machine with recommendations installed cannot hide a missing one). The package
# lists are updated first when they were never fetched, and once more if the install
# fails (lists too old for the archive). Services the packages bring (redis-server,
# postgresql, mariadb-server, etcd-server) are not started by the install: the tests
# start their own servers on their own ports, and a distribution service would take
# those ports. Output goes to stderr. Needs root.
apt_install() {
    local get=(apt-get -o DPkg::Lock::Timeout=600 -y -qq install --no-install-recommends "$@")
    local policy=/usr/sbin/policy-rc.d ours=
    if [[ $(id -u) -ne 0 ]]; then
        echo "apt_install: $* missing; run as root to install them" >&2
        return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if [[ ! -e $policy ]]; then
        # Debian's way of telling package scripts not to start services (exit 101).
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
    fi
    if ! compgen -G "/var/lib/apt/lists/*_Packages" >/dev/null; then
        apt-get -o DPkg::Lock::Timeout=600 -qq update >&2
    fi
    local status=0
    if ! "${get[@]}" >&2; then
        echo "apt_install: install failed; updating the package lists and trying again" >&2
        apt-get -o DPkg::Lock::Timeout=600 -qq update >&2
        "${get[@]}" >&2 || status=$?
    fi
    [[ -n $ours ]] && rm -f "$policy"
    return "$status"
}
