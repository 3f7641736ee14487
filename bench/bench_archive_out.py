"""``ocikit copy oci:SRC docker-archive:-``: when the first byte reaches standard output, how
much ``$TMPDIR`` the copy uses at its peak, and what it costs (wall and CPU seconds).

    .venv/bin/python bench/bench_archive_out.py                 # this tree's ocikit
    .venv/bin/python bench/bench_archive_out.py --other SRCDIR  # and another ocikit's src/
                                                                # (interleaved, best of --runs)

The image (made once, ``bench/work/archive-out/``, gitignored): ``--size-mb`` (400) of files
of this machine's ``/usr`` in four layers, as an OCI layout with uncompressed layers and one
with gzip layers. Copying the first streams (each layer's size is known); copying the second
decompresses, so each layer is staged before it goes into the archive.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

from common import MB, WORK, log, machine_facts

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
TREES = ["/usr/lib", "/usr/share", "/usr/bin", "/usr/libexec"]


def _put(layout: Path, data_or_path: bytes | Path) -> dict[str, object]:
    if isinstance(data_or_path, bytes):
        digest, size = hashlib.sha256(data_or_path).hexdigest(), len(data_or_path)
    else:
        h = hashlib.sha256()
        with data_or_path.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        digest, size = h.hexdigest(), data_or_path.stat().st_size
    target = layout / "blobs" / "sha256" / digest
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data_or_path, bytes):
        target.write_bytes(data_or_path)
    else:
        shutil.move(data_or_path, target)
    return {"digest": f"sha256:{digest}", "size": size}


def _layer_tar(tree: str, out: Path, budget: int) -> None:
    """Regular files of ``tree`` (no links), up to ``budget`` bytes, in a sorted order."""
    used = 0
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(tree):
            dirnames.sort()
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                size = os.path.getsize(path)
                if used + size > budget:
                    return
                info = tar.gettarinfo(path, path.lstrip("/"))
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                try:
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                except OSError:
                    continue
                used += size


def make_source(size_mb: int) -> tuple[Path, Path]:
    base = WORK / "archive-out" / f"{size_mb}mb"
    plain, gz = base / "none", base / "gzip"
    if (gz / "index.json").exists():
        return plain, gz
    shutil.rmtree(base, ignore_errors=True)
    plain.mkdir(parents=True)
    (plain / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    layers, diff_ids = [], []
    for i, tree in enumerate(TREES):
        tmp = base / f"layer{i}.tar"
        _layer_tar(tree, tmp, size_mb * 1_000_000 // len(TREES))
        desc = _put(plain, tmp)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", **desc})
        diff_ids.append(desc["digest"])
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                **_put(plain, config),
            },
            "layers": layers,
        }
    ).encode()
    desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **_put(plain, manifest)}
    desc["annotations"] = {"org.opencontainers.image.ref.name": "bench"}
    (plain / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [desc]}))
    subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "ocikit"),
            "copy",
            "-q",
            "--dest-compress-format",
            "gzip",
            f"oci:{plain}:bench",
            f"oci:{gz}:bench",
        ],
        check=True,
    )
    return plain, gz


def _tree_bytes(root: str) -> int:
    total = 0
    for dirpath, _, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


def run_once(src_dir: str | None, source: Path) -> dict[str, float]:
    """One copy to standard output (read here and discarded)."""
    tmp = Path(tempfile.mkdtemp(prefix="bench-tmpdir-", dir=WORK))
    env = dict(os.environ, TMPDIR=str(tmp))
    if src_dir is not None:
        env["PYTHONPATH"] = src_dir
    argv = [str(PYTHON), "-m", "ocikit", "copy", "-q", f"oci:{source}:bench", "docker-archive:-"]
    os.sync()
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_bytes(str(tmp)))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    first = proc.stdout.read(1)
    first_at = time.perf_counter() - start
    total = len(first)
    while chunk := proc.stdout.read(1 << 20):
        total += len(chunk)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    watcher.join()
    shutil.rmtree(tmp, ignore_errors=True)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv} failed")
    return {
        "first_byte_s": first_at,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "tmp_peak_mb": peak / MB,
        "out_mb": total / MB,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=400)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--other", help="another ocikit's src/ directory, run interleaved")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    plain, gz = make_source(args.size_mb)
    impls: list[tuple[str, str | None]] = [("this", None)]
    if args.other:
        impls.insert(0, ("other", args.other))
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for run in range(args.runs):
        for name, src_dir in impls:
            for kind, source in (("uncompressed", plain), ("gzip", gz)):
                log(f"run {run + 1}/{args.runs}: {name}, {kind} source")
                results.setdefault((name, kind), []).append(run_once(src_dir, source))
    rows = []
    for (name, kind), runs in results.items():
        best = min(runs, key=lambda r: r["wall_s"])
        rows.append(
            {
                "ocikit": name,
                "source": kind,
                "first byte s": f"{min(r['first_byte_s'] for r in runs):.2f}",
                "wall s": f"{best['wall_s']:.2f}",
                "cpu s": f"{min(r['cpu_s'] for r in runs):.2f}",
                "$TMPDIR peak MB": f"{max(r['tmp_peak_mb'] for r in runs):.0f}",
                "archive MB": f"{best['out_mb']:.0f}",
            }
        )
    if args.json:
        json.dump({"machine": machine_facts(), "rows": rows}, sys.stdout, indent=2)
        return
    heads = list(rows[0])
    widths = [max(len(h), *(len(r[h]) for r in rows)) + 2 for h in heads]
    print("".join(f"{h:<{w}}" for h, w in zip(heads, widths, strict=True)).rstrip())
    for r in rows:
        print("".join(f"{r[h]:<{w}}" for h, w in zip(heads, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
