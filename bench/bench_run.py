"""Benchmark a `run` step: the same change made to a Debian minbase (mmdebstrap, bookworm) by
`ocikit build` (runc on an overlay of the base's layers) and by `umoci unpack` + the change
in a chroot + `umoci repack`; then a second, different step on the cached base.

    python bench/bench_run.py [--runs N] [--json]

"x umoci" is umoci's wall time over ocikit's. The second step must not copy the base: the
bench reports how much the cache's extracted layers grew (aim: 0 bytes) besides its time.
Needs root (overlay mounts, runc) and network for mmdebstrap once.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from typing import Any

from common import (
    OCIKIT,
    WORK,
    best_of,
    log,
    machine_facts,
    measure,
    print_aims,
    print_jobs,
    tree_bytes,
)

HERE = WORK / "run"
CHANGE = (
    "cp -a /usr/share/doc /opt/doc && rm -rf /usr/share/man /usr/share/locale "
    "&& echo marker > /bin/marker && ln -s /usr/bin/perl /bin/perl-link"
)
SECOND = "echo second > /etc/second-step"


def prepare() -> None:
    if (HERE / "base" / "index.json").exists():
        return
    HERE.mkdir(parents=True, exist_ok=True)
    tar = HERE / "rootfs.tar"
    if not tar.exists():
        log("mmdebstrap --variant=minbase bookworm (once) ...")
        subprocess.run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=minbase",
                "--skip=output/dev",
                "bookworm",
                str(tar),
            ],
            check=True,
        )
    (HERE / "base.yaml").write_text(
        "images:\n  debian:\n    from: scratch\n    imports:\n      - {src: rootfs.tar, dest: /}\n"
        "    config: {cmd: [/bin/bash]}\n"
    )
    log("the base image, built by ocikit from the root filesystem ...")
    subprocess.run(
        [
            str(OCIKIT),
            "build",
            "-q",
            "-f",
            str(HERE / "base.yaml"),
            "--no-cache",
            "--output",
            f"oci:{HERE / 'base'}",
        ],
        check=True,
    )


def recipe(step: str) -> str:
    return f"images:\n  changed:\n    from: oci:base:debian\n    run: {json.dumps(step)}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per case; the best counts")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    prepare()
    out = HERE / "out"
    results: dict[str, list[Any]] = {}
    growth = []
    for i in range(args.runs):
        log(f"run {i + 1}/{args.runs} ...")
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        (HERE / "first.yaml").write_text(recipe(CHANGE))
        (HERE / "second.yaml").write_text(recipe(SECOND))
        build = [
            str(OCIKIT),
            "build",
            "-q",
            "--cache-dir",
            str(out / "cache"),
            "--output",
            f"oci:{out / 'oci'}",
        ]
        results.setdefault("ocikit_step", []).append(
            measure([*build, "-f", str(HERE / "first.yaml")])
        )
        before = tree_bytes(out / "cache" / "layers")
        results.setdefault("ocikit_second_step", []).append(
            measure([*build, "-f", str(HERE / "second.yaml")])
        )
        growth.append(tree_bytes(out / "cache" / "layers") - before)
        # umoci: unpack, the same change in a chroot, repack
        shutil.copytree(HERE / "base", out / "umoci")
        bundle = out / "bundle"
        script = (
            f"umoci unpack --image {out / 'umoci'}:debian {bundle} && "
            f"chroot {bundle / 'rootfs'} /bin/sh -c '{CHANGE}' && "
            f"umoci repack --image {out / 'umoci'}:changed {bundle}"
        )
        results.setdefault("umoci_unpack_change_repack", []).append(
            measure(["/bin/sh", "-c", script])
        )
    report: dict[str, Any] = {"machine": machine_facts(), "change": CHANGE}
    report.update(best_of(results))
    umoci = report["umoci_unpack_change_repack"]["seconds"]
    report["step_x_umoci"] = round(umoci / report["ocikit_step"]["seconds"], 2)
    report["second_step_x_umoci"] = round(umoci / report["ocikit_second_step"]["seconds"], 2)
    report["second_step_base_bytes_copied"] = max(growth)
    report["base_MB"] = round(tree_bytes(HERE / "base" / "blobs") / 1e6, 1)
    report["aims"] = {
        "step_faster_than_umoci": report["step_x_umoci"] > 1.0,
        "second_step_copies_no_base": report["second_step_base_bytes_copied"] == 0,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"base: Debian bookworm minbase, {report['base_MB']} MB of blobs; best of {args.runs}")
    print_jobs(report, ("ocikit_step", "ocikit_second_step", "umoci_unpack_change_repack"), 28)
    print(
        f"\nstep + layer: ocikit {report['step_x_umoci']}x umoci; a second step on the cached "
        f"base: {report['second_step_x_umoci']}x, base bytes copied "
        f"{report['second_step_base_bytes_copied']}"
    )
    print_aims(report["aims"])


if __name__ == "__main__":
    sys.exit(main())
