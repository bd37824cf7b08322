#!/usr/bin/env bash
# What POSIX ACLs cost on the metadata path, Nectar side by side with JuiceFS 1.4, both
# formatted with --enable-acl on SQLite + a local directory.
#
#   bench/acl.sh [FILES]     (default 5000; NECTAR_BIN, JUICEFS_BIN as in lib.sh)
#
# In one directory without ACLs and one with a default ACL (a named user and a named
# group, so every new file gets an access ACL too), one process creates FILES empty
# files, stats them all, and chmods them all (a chmod rewrites an ACL's mask). Prints
# operations per second for each, and checks that the inherited ACL is there.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
FILES=${1:-5000}
export BENCH_FORMAT_OPTS="--enable-acl"
bench_init acl

for fs in $BENCH_FS; do
    fs_format "$fs"
    fs_mount "$fs"
    dir=$(fs_dir "$fs")
    mkdir "$dir/plain" "$dir/acl"
    setfacl -d -m u:1234:rwx,g:99:rx "$dir/acl"
    for d in plain acl; do
        python3 - "$dir/$d" "$FILES" >"$WORK/$fs-$d.tsv" <<'PY'
import os, sys, time
d, n = sys.argv[1], int(sys.argv[2])
names = [f"{d}/f{i:06d}" for i in range(n)]
t = time.perf_counter()
for p in names:
    os.close(os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
created = time.perf_counter()
for p in names:
    os.stat(p)
statted = time.perf_counter()
for p in names:
    os.chmod(p, 0o640)
chmodded = time.perf_counter()
print(f"create\t{n / (created - t):.0f}")
print(f"stat\t{n / (statted - created):.0f}")
print(f"chmod\t{n / (chmodded - statted):.0f}")
PY
        while IFS=$'\t' read -r op rate; do
            record "$op/s ($d dir)" "$fs" "$rate"
        done <"$WORK/$fs-$d.tsv"
    done
    getfacl -p "$dir/acl/f000000" | grep -q "user:1234:rwx" ||
        die "$fs: f000000 did not inherit the default ACL"
    fs_umount "$fs"
done
log "load average: $(loadavg)"
print_table "$WORK/results.tsv"
