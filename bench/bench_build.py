"""Benchmark `ocikit build`: a five-image recipe built from nothing, then rebuilt with every
image cached; and a 20,000-file tree imported as a layer, beside `umoci insert` of the same
tree and a plain-Python baseline (tarfile + gzip level 6, one thread).

    python bench/bench_build.py [--runs N] [--json]

Inputs are generated once under bench/work/build (a synthetic usrmerged base of ~5,000 files
as an OCI layout, trees of small files). "x umoci" is umoci's wall time over ocikit's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

from common import OCIKIT, ROOT, WORK, best_of, log, machine_facts, measure, print_aims, print_jobs

sys.path.insert(0, str(ROOT / "tests"))
from support.layouts import directory, file, symlink, tar_bytes, write_layout

HERE = WORK / "build"
TREE_FILES = 20_000

RECIPE = """
images:
  base:
    from: oci:base:base
    build_only: true
    imports:
      - {src: etc, dest: /etc/bench}
  lib:
    from: {built: base}
    build_only: true
    imports:
      - {src: lib, dest: /usr/lib/bench}
  app1:
    from: {built: lib}
    imports:
      - {src: app1, dest: /opt/app1}
      - {src: bin, dest: /bin}
    config: {cmd: [/opt/app1/run], env: {APP: one}}
  app2:
    from: {built: lib}
    imports:
      - {src: app2, dest: /opt/app2}
    config: {cmd: [/opt/app2/run], env: {APP: two}}
  tools:
    from: scratch
    imports:
      - {src: tools, dest: /tools}
"""

TREE_RECIPE = """
images:
  tree:
    from: scratch
    imports:
      - {src: tree, dest: /tree}
"""


def _tree(root: Path, files: int, seed: int, max_size: int = 8192) -> None:
    rng = random.Random(seed)
    per_dir = 100
    for i in range(files):
        d = root / f"d{i // per_dir // 20:02d}" / f"s{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        size = rng.randrange(0, max_size)
        (d / f"f{i:05d}.txt").write_bytes(rng.randbytes(size // 2) + b"\n" * (size - size // 2))


def prepare() -> None:
    if (HERE / "ready").exists():
        return
    shutil.rmtree(HERE, ignore_errors=True)
    HERE.mkdir(parents=True)
    log("generating the base (~5,000 files) and the trees ...")
    rng = random.Random(1)
    entries = [directory(d) for d in ("usr", "usr/bin", "usr/lib", "usr/share", "etc")]
    entries += [symlink("bin", "usr/bin"), symlink("lib", "usr/lib")]
    for i in range(5000):
        sub = f"usr/share/pkg{i // 100:02d}"
        if i % 100 == 0:
            entries.append(directory(sub))
        entries.append(file(f"{sub}/file{i}", rng.randbytes(rng.randrange(0, 16384))))
    write_layout(HERE / "base", [tar_bytes(entries)], ref="base")
    for name, count, seed in (("etc", 50, 2), ("lib", 2000, 3), ("app1", 300, 4), ("app2", 300, 5)):
        _tree(HERE / name, count, seed)
    _tree(HERE / "tools", 3000, 6)
    (HERE / "bin").mkdir()
    for name in ("app1", "app1-helper"):
        (HERE / "bin" / name).write_text("#!/bin/sh\n")
        os.chmod(HERE / "bin" / name, 0o755)
    _tree(HERE / "tree", TREE_FILES, 7)
    (HERE / "ocikit.yaml").write_text(RECIPE)
    (HERE / "tree.yaml").write_text(TREE_RECIPE)
    (HERE / "ready").write_text("")


BASELINE = """
import gzip, sys, tarfile
with gzip.open(sys.argv[2], "wb", compresslevel=6) as out:
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.add(sys.argv[1], arcname="tree")
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per case; the best counts")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    prepare()
    out = HERE / "out"
    results: dict[str, list[Any]] = {}
    ocikit = str(OCIKIT)
    for i in range(args.runs):
        log(f"run {i + 1}/{args.runs} ...")
        for d in ("cache", "oci", "tree-cache", "tree-oci", "umoci", "baseline.tar.gz"):
            shutil.rmtree(out / d, ignore_errors=True)
            (out / d).unlink(missing_ok=True) if (out / d).is_file() else None
        out.mkdir(parents=True, exist_ok=True)
        build = [
            ocikit,
            "build",
            "-q",
            "-f",
            str(HERE / "ocikit.yaml"),
            "--cache-dir",
            str(out / "cache"),
            "--output",
            f"oci:{out / 'oci'}",
        ]
        results.setdefault("recipe_full", []).append(measure(build))
        results.setdefault("recipe_cached", []).append(measure(build))
        tree = [
            ocikit,
            "build",
            "-q",
            "-f",
            str(HERE / "tree.yaml"),
            "--cache-dir",
            str(out / "tree-cache"),
            "--output",
            f"oci:{out / 'tree-oci'}",
        ]
        results.setdefault("tree_ocikit", []).append(measure(tree))
        umoci = out / "umoci"
        measure(["umoci", "init", "--layout", str(umoci)])
        measure(["umoci", "new", "--image", f"{umoci}:t"])
        results.setdefault("tree_umoci", []).append(
            measure(["umoci", "insert", "--image", f"{umoci}:t", str(HERE / "tree"), "/tree"])
        )
        results.setdefault("tree_baseline", []).append(
            measure(
                [sys.executable, "-c", BASELINE, str(HERE / "tree"), str(out / "baseline.tar.gz")]
            )
        )
    report: dict[str, Any] = {"machine": machine_facts(), "tree_files": TREE_FILES}
    report.update(best_of(results))
    oc = report["tree_ocikit"]["seconds"]
    report["tree_x_umoci"] = round(report["tree_umoci"]["seconds"] / oc, 2)
    report["tree_x_baseline"] = round(report["tree_baseline"]["seconds"] / oc, 2)
    report["aims"] = {"cached_rebuild_under_2s": report["recipe_cached"]["seconds"] < 2.0}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"inputs: {HERE}; best of {args.runs} runs")
    print_jobs(
        report, ("recipe_full", "recipe_cached", "tree_ocikit", "tree_umoci", "tree_baseline"), 22
    )
    print(
        f"\n{TREE_FILES}-file tree as a layer: ocikit {report['tree_x_umoci']}x umoci insert, "
        f"{report['tree_x_baseline']}x the tarfile+gzip baseline"
    )
    print_aims(report["aims"])


if __name__ == "__main__":
    main()
