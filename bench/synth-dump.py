#!/usr/bin/env python3
"""Writes a JuiceFS 1.4 JSON dump of a synthetic volume, for bench/dump-load.sh and
bench/gc.sh: FILES files of 100 bytes (one slice each, ids 1..FILES) in directories of
10,000, under the root.

    bench/synth-dump.py FILES OUT NAME BUCKET     (BUCKET: the volume's file bucket)
"""
import json
import sys

files, path, name, bucket = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
PER_DIR = 10_000
dirs = (files + PER_DIR - 1) // PER_DIR
T = 1796000000


def attr(ino, typ, mode, length=0, nlink=1):
    return json.dumps({"inode": ino, "type": typ, "mode": mode, "uid": 0, "gid": 0,
                       "atime": T, "mtime": T, "ctime": T, "nlink": nlink, "length": length},
                      separators=(",", ":"))


with open(path, "w") as out:
    setting = {"Name": name, "UUID": "4c5d0b5e-0000-4000-8000-000000000001",
               "Storage": "file", "Bucket": bucket, "BlockSize": 4096,
               "Compression": "none", "TrashDays": 0, "MetaVersion": 1}
    counters = {"usedSpace": 4096 * (files + dirs + 1), "usedInodes": files + dirs,
                "nextInodes": files + dirs + 2, "nextChunk": files + 1,
                "nextSession": 0, "nextTrash": 0}
    out.write('{\n  "Setting": %s,\n  "Counters": %s,\n  "Sustained": [],\n  "DelFiles": [],\n'
              % (json.dumps(setting), json.dumps(counters)))
    out.write('  "FSTree": {\n    "attr": %s,\n    "entries": {' % attr(1, "directory", 0o777, nlink=dirs + 2))
    ino, sid = 2, 1
    for d in range(dirs):
        n = min(PER_DIR, files - d * PER_DIR)
        out.write('%s\n      "d%05d": {\n        "attr": %s,\n        "entries": {'
                  % ("" if d == 0 else ",", d, attr(ino, "directory", 0o755, nlink=2)))
        ino += 1
        for f in range(n):
            out.write('%s\n          "f%05d": {"attr": %s, "chunks": [{"index":0,"slices":[{"id":%d,"size":100,"len":100}]}]}'
                      % ("" if f == 0 else ",", f, attr(ino, "regular", 0o644, 100), sid))
            ino += 1
            sid += 1
        out.write('\n        }\n      }')
    out.write('\n    }\n  }\n}\n')
