"""The C work of a ``docker save`` -> ``oci:`` conversion alone, in one straight loop: what no
converter that writes gzip layers and checks their digests can do without.

Every 1 MiB block of the archive is read (from the page cache), deflated by isal as ocikit's
gzip writer deflates it (the same level, the previous block's last 32 KiB as dictionary),
and both streams are hashed (sha256 of the tar: the diff_id; of the gzip: the blob's
digest). Nothing else runs: no tar parsing, no threads, no files written. The CPU seconds of
each step, added up and divided by the cores, are the least wall time any such conversion
can take on this machine.

    python bench/save_floor.py ARCHIVE.tar [--level 2] [--json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from typing import Any

from isal import isal_zlib

BLOCK = 1 << 20  # ocikit's gzip block (and isal's threaded writer's)
LEVEL = 2  # ocikit's default gzip level


def c_work(path: str, level: int = LEVEL) -> dict[str, Any]:
    """CPU seconds of each step over the file at ``path``, and the floor on this machine."""
    compressor = isal_zlib._ParallelCompress(buffersize=BLOCK + BLOCK // 10, level=level)
    tar_hash, gzip_hash = hashlib.sha256(), hashlib.sha256()
    spent = {"read": 0.0, "deflate": 0.0, "sha256 of the tars": 0.0, "sha256 of the gzip": 0.0}
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    zdict = b""
    size = compressed = 0
    clock = time.process_time
    with open(path, "rb", buffering=0) as f:
        while True:
            t0 = clock()
            n = f.readinto(buf)
            t1 = clock()
            if not n:
                break
            out, _crc = compressor.compress_and_crc(view[:n], zdict)
            t2 = clock()
            tar_hash.update(view[:n])
            t3 = clock()
            gzip_hash.update(out)
            t4 = clock()
            zdict = bytes(view[max(0, n - 32768) : n])
            spent["read"] += t1 - t0
            spent["deflate"] += t2 - t1
            spent["sha256 of the tars"] += t3 - t2
            spent["sha256 of the gzip"] += t4 - t3
            size += n
            compressed += len(out)
    cores = os.cpu_count() or 1
    total = sum(spent.values())
    return {
        "bytes": size,
        "gzip_bytes": compressed,
        "cpu_s": {k: round(v, 2) for k, v in spent.items()},
        "total_cpu_s": round(total, 2),
        "cores": cores,
        "floor_s": round(total / cores, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("archive")
    parser.add_argument("--level", type=int, default=LEVEL)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    found = c_work(args.archive, args.level)
    if args.json:
        print(json.dumps(found, indent=2))
        return
    steps = " + ".join(f"{k} {v:.2f}" for k, v in found["cpu_s"].items())
    print(
        f"{found['bytes'] / 1e6:.0f} MB -> {found['gzip_bytes'] / 1e6:.0f} MB of gzip: {steps} = "
        f"{found['total_cpu_s']:.2f} CPU s; on {found['cores']} cores no conversion takes less "
        f"than {found['floor_s']:.2f} s"
    )


if __name__ == "__main__":
    main()
