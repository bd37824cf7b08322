#!/usr/bin/env python3
"""Metadata-operation driver of bench/meta-ops.sh: the identical workload for every
file system, run from one process (plus a pool of worker processes for the parallel
variants), with os.* calls only.

  meta-ops.py ops   --fs NAME DIR PIDS [--fs ...] [--counter NAME CMD ...] --out TSV --detail TSV
  meta-ops.py mknod --fs NAME DIR PIDS --dirs 10 --files 10000 --detail TSV

"ops" runs these phases in one fresh directory DIR/meta-ops of each file system; the
phases are interleaved (phase 1 on every file system, then phase 2, ...) and the file
system that goes first alternates from phase to phase, so a load change on the shared
machine hits both alike:

  create        os.open(O_CREAT|O_EXCL|O_WRONLY) + os.close of N empty files
  stat          os.stat of each file
  rename        os.rename of each file to a new name in the same directory
  readdir       os.listdir of the N-entry directory (entries/s; --list-reps times)
  ls -l         os.listdir, then os.lstat of every entry, as `ls -l` does
  unlink        os.unlink of each file
  create xP     P processes create N/P files each in another fresh directory
  unlink xP     P processes unlink them again

Before each timed phase the driver sleeps --settle seconds (default 1.5, longer than
the 1 s kernel attribute/entry caches of both clients), so no phase is served from the
kernel caches the previous one filled.

PIDS (comma-separated) are the file system's mount processes: their user+system CPU
time per operation is reported as a detail. A --counter CMD is a shell command printing
one number (a request counter of the database server); its increase per operation is
reported as a detail, read outside the timed part.

"mknod" makes DIRS directories of FILES files each with os.mknod (the Redis memory
test of meta-ops.sh) and reports the rate as a detail.

Lines "metric<TAB>fs<TAB>value" are appended to --out (main results) and --detail.
"""

import argparse
import multiprocessing as mp
import os
import stat
import subprocess
import sys
import time


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cpu_seconds(pids):
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / tick


def run_counter(cmd):
    if not cmd:
        return None
    try:
        out = subprocess.run(cmd, shell=True, check=True, capture_output=True, text=True, timeout=120).stdout
        return float(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as e:
        log(f"counter command failed ({cmd}): {e}")
        return None


class FS:
    def __init__(self, name, root, pids, counter):
        self.name = name
        self.root = root
        self.pids = [int(p) for p in pids.split(",") if p.strip()]
        self.counter = counter
        self.dir = os.path.join(root, "meta-ops")
        self.par = os.path.join(root, "meta-ops-par")


# --- the workloads; each returns the number of operations (or entries) done ----------

def w_create(d, n):
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    for i in range(n):
        os.close(os.open(f"{d}/f{i:06d}", flags, 0o644))
    return n


def w_stat(d, n):
    for i in range(n):
        os.stat(f"{d}/f{i:06d}")
    return n


def w_rename(d, n):
    for i in range(n):
        os.rename(f"{d}/f{i:06d}", f"{d}/g{i:06d}")
    return n


def w_readdir(d, n):
    got = len(os.listdir(d))
    if got != n:
        raise RuntimeError(f"{d}: readdir returned {got} entries, expected {n}")
    return got


def w_lsl(d, n):
    names = os.listdir(d)
    if len(names) != n:
        raise RuntimeError(f"{d}: readdir returned {len(names)} entries, expected {n}")
    for name in names:
        os.lstat(f"{d}/{name}")
    return len(names)


def w_unlink(d, n):
    for i in range(n):
        os.unlink(f"{d}/g{i:06d}")
    left = os.listdir(d)
    if left:
        raise RuntimeError(f"{d}: {len(left)} entries left after unlink")
    return n


def _par_worker(kind, d, k, per, barrier):
    try:
        barrier.wait()
        if kind == "create":
            flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
            for i in range(per):
                os.close(os.open(f"{d}/p{k}-{i:06d}", flags, 0o644))
        else:
            for i in range(per):
                os.unlink(f"{d}/p{k}-{i:06d}")
    except Exception as e:  # reported through the exit code
        print(f"worker {k}: {e}", file=sys.stderr, flush=True)
        os._exit(1)
    os._exit(0)


def parallel(kind, d, n, procs):
    """Runs `kind` (create or unlink) in `procs` processes; returns (ops, seconds) timed
    from the moment all workers are ready."""
    ctx = mp.get_context("fork")
    per = n // procs
    barrier = ctx.Barrier(procs + 1)
    ws = [ctx.Process(target=_par_worker, args=(kind, d, k, per, barrier)) for k in range(procs)]
    for w in ws:
        w.start()
    barrier.wait()
    t0 = time.perf_counter()
    for w in ws:
        w.join()
    t1 = time.perf_counter()
    bad = [w.exitcode for w in ws if w.exitcode != 0]
    if bad:
        raise RuntimeError(f"{kind} x{procs} in {d}: {len(bad)} worker(s) failed")
    return per * procs, t1 - t0


# --- the phases -------------------------------------------------------------------

def phases(n, procs, reps):
    # (metric, detail label, function(fs) -> (ops, seconds), repetitions)
    def timed(fn, attr="dir"):
        def run(fs):
            d = getattr(fs, attr)
            t0 = time.perf_counter()
            ops = fn(d, n)
            return ops, time.perf_counter() - t0
        return run

    def par(kind):
        return lambda fs: parallel(kind, fs.par, n, procs)

    return [
        ("create (ops/s)", "create", timed(w_create), 1),
        ("stat (ops/s)", "stat", timed(w_stat), 1),
        ("rename (ops/s)", "rename", timed(w_rename), 1),
        ("readdir (entries/s)", "readdir", timed(w_readdir), reps),
        ("ls -l: readdir+lstat (entries/s)", "ls -l", timed(w_lsl), reps),
        ("unlink (ops/s)", "unlink", timed(w_unlink), 1),
        (f"create, {procs} procs (ops/s)", f"create x{procs}", par("create"), 1),
        (f"unlink, {procs} procs (ops/s)", f"unlink x{procs}", par("unlink"), 1),
    ]


def append(path, metric, fs, value):
    if path:
        with open(path, "a") as f:
            f.write(f"{metric}\t{fs}\t{value:.6g}\n")


def cmd_ops(args, fss):
    n, procs = args.files, args.procs
    if n % procs:
        sys.exit(f"--files ({n}) must be a multiple of --procs ({procs})")
    for fs in fss:
        os.mkdir(fs.dir)
        os.mkdir(fs.par)
    # An isolated counter (one database per file system) is read once after each phase,
    # --counter-delay seconds after it (PostgreSQL publishes its statistics late); a
    # server-wide counter right before and after each file system's run.
    last = {}
    if args.counter_isolated:
        time.sleep(args.counter_delay)
        last = {fs.name: run_counter(fs.counter) for fs in fss}
    for pi, (metric, label, run, reps) in enumerate(phases(n, procs, args.list_reps)):
        order = fss if (pi + args.first) % 2 == 0 else fss[::-1]
        done = {}
        for fs in order:
            ops = secs = 0.0
            for r in range(reps):
                time.sleep(args.settle)
                if r == 0:
                    c0 = None if args.counter_isolated else run_counter(fs.counter)
                    cpu0 = cpu_seconds(fs.pids)
                o, s = run(fs)
                ops += o
                secs += s
            cpu1 = cpu_seconds(fs.pids)
            c1 = None if args.counter_isolated else run_counter(fs.counter)
            rate = ops / secs
            cpu = 1e6 * (cpu1 - cpu0) / ops
            append(args.out, metric, fs.name, rate)
            append(args.detail, f"{label}: client CPU us/op", fs.name, cpu)
            done[fs.name] = ops
            msg = f"{fs.name:8} {label:12} {rate:10.1f}/s  ({ops:.0f} in {secs:.2f} s, client CPU {cpu:.0f} us/op"
            if c0 is not None and c1 is not None:
                per = (c1 - c0) / ops
                append(args.detail, f"{label}: {args.counter_label}/op", fs.name, per)
                msg += f", {per:.2f} {args.counter_label}/op"
            log(msg + f", load {os.getloadavg()[0]:.2f})")
        if args.counter_isolated:
            time.sleep(args.counter_delay)
            for fs in fss:
                c1 = run_counter(fs.counter)
                c0, last[fs.name] = last.get(fs.name), c1
                if c0 is not None and c1 is not None:
                    per = (c1 - c0) / done[fs.name]
                    append(args.detail, f"{label}: {args.counter_label}/op", fs.name, per)
                    log(f"{fs.name:8} {label:12} {per:.2f} {args.counter_label}/op")
    for fs in fss:
        os.rmdir(fs.dir)
        os.rmdir(fs.par)


def cmd_mknod(args, fss):
    total = args.dirs * args.files
    for fs in fss:
        top = os.path.join(fs.root, "mknod")
        os.mkdir(top)
        t0 = time.perf_counter()
        for k in range(args.dirs):
            d = f"{top}/d{k:02d}"
            os.mkdir(d)
            for i in range(args.files):
                os.mknod(f"{d}/f{i:06d}", 0o644 | stat.S_IFREG)
        secs = time.perf_counter() - t0
        append(args.detail, f"mknod {total} files in {args.dirs} dirs (ops/s)", fs.name, total / secs)
        log(f"{fs.name:8} mknod {total} files in {secs:.1f} s = {total / secs:.0f}/s")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["ops", "mknod"])
    ap.add_argument("--fs", nargs=3, action="append", metavar=("NAME", "DIR", "PIDS"), required=True)
    ap.add_argument("--counter", nargs=2, action="append", default=[], metavar=("NAME", "CMD"))
    ap.add_argument("--counter-label", default="server requests")
    ap.add_argument("--counter-isolated", action="store_true",
                    help="the counters count only their own file system's database")
    ap.add_argument("--counter-delay", type=float, default=0.0)
    ap.add_argument("--files", type=int, default=10000)
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--dirs", type=int, default=10)
    ap.add_argument("--list-reps", type=int, default=3)
    ap.add_argument("--settle", type=float, default=1.5)
    ap.add_argument("--first", type=int, default=0, help="1: the second --fs goes first in phase 1")
    ap.add_argument("--out")
    ap.add_argument("--detail")
    args = ap.parse_args()
    counters = dict(args.counter)
    fss = [FS(name, d, pids, counters.get(name)) for name, d, pids in args.fs]
    if args.mode == "ops":
        cmd_ops(args, fss)
    else:
        cmd_mknod(args, fss)


if __name__ == "__main__":
    main()
