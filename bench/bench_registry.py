"""Benchmark pushing to and pulling from a real registry (`docker-registry` on 127.0.0.1):
a fresh push and a pull of the benchmark image (the layout of bench_check.py: 8 gzip layers)
by `ocikit copy` beside `skopeo copy`, and a second push of the unchanged image by ocikit
through a counting proxy (requests by method, layer bytes sent).

    python bench/bench_registry.py [--runs N] [--keep] [--json]

Each run pushes into a new repository (nothing to skip or mount) and pulls into a fresh
directory. "x skopeo" is skopeo's wall time over ocikit's for the same job.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections import Counter
from typing import Any

from bench_check import LAYOUT, TAG, ensure_layout  # the same image as bench_check.py
from common import (
    OCIKIT,
    ROOT,
    WORK,
    best_of,
    ensure_archive,
    log,
    machine_facts,
    measure,
    print_aims,
    print_jobs,
    skopeo_argv,
    tree_bytes,
)

sys.path.insert(0, str(ROOT / "tests"))
from support.registry import CountingProxy, Registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per case; the best counts")
    parser.add_argument("--keep", action="store_true", help=f"keep pulled layouts in {WORK}/out")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    ensure_layout(ensure_archive(1.2), OCIKIT, False)
    size = tree_bytes(LAYOUT / "blobs")
    src = f"oci:{LAYOUT}:{TAG}"
    out = WORK / "out" / "registry"
    report: dict[str, Any] = {"machine": machine_facts(), "image_MB": round(size / 1e6, 1)}
    skopeo = skopeo_argv()
    results: dict[str, list[Any]] = {}

    def timed(key: str, argv: list[str]) -> None:
        usage = measure(argv)
        results.setdefault(key, []).append(usage)

    for i in range(args.runs):
        # a fresh registry per run: skopeo remembers where it pushed blobs (its blob info
        # cache) and would mount them from an earlier run's repository
        log(f"run {i + 1}/{args.runs}: fresh pushes and pulls ...")
        with Registry() as registry:
            host = registry.host
            timed(
                "push_skopeo",
                [*skopeo, "copy", "--dest-tls-verify=false", src, f"docker://{host}/sk/img:1"],
            )
            timed("push_ocikit", [str(OCIKIT), "copy", "-q", src, f"docker://{host}/oc/img:1"])
            for tool, argv in (
                ("pull_skopeo", [*skopeo, "copy", "--src-tls-verify=false"]),
                ("pull_ocikit", [str(OCIKIT), "copy", "-q"]),
            ):
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                timed(tool, [*argv, f"docker://{host}/oc/img:1", f"oci:{out}/pulled:t"])
            if i == 0:
                log("pushing the unchanged image again ...")
                with CountingProxy(host) as proxy:
                    timed(
                        "push_again_ocikit",
                        [str(OCIKIT), "copy", "-q", src, f"docker://{proxy.host}/oc/img:1"],
                    )
                    methods = Counter(method for method, _ in proxy.requests)
                    sent = proxy.upload_bytes
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    report.update(best_of(results))
    report["push_again_ocikit"].update(
        {"requests": dict(sorted(methods.items())), "layer_bytes_sent": sent}
    )
    for job in ("push", "pull"):
        sk, oc = report[f"{job}_skopeo"]["seconds"], report[f"{job}_ocikit"]["seconds"]
        report[f"{job}_x_skopeo"] = round(sk / oc, 2) if oc else None
    again = report["push_again_ocikit"]
    report["aims"] = {
        "push_again_no_layer_bytes": again["layer_bytes_sent"] == 0,
        "push_again_only_head_and_manifest": set(again["requests"]) <= {"HEAD", "PUT"}
        and again["requests"].get("PUT") == 1,
        "push_at_least_skopeo": (report["push_x_skopeo"] or 0) >= 1.0,
        "pull_at_least_skopeo": (report["pull_x_skopeo"] or 0) >= 1.0,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"image: {LAYOUT}:{TAG}, {report['image_MB']} MB of blobs; best of {args.runs} runs")
    print_jobs(
        report,
        ("push_skopeo", "push_ocikit", "pull_skopeo", "pull_ocikit", "push_again_ocikit"),
        22,
    )
    print(f"\npush: ocikit {report['push_x_skopeo']}x skopeo; pull: {report['pull_x_skopeo']}x")
    print(f"push again: requests {again['requests']}, layer bytes sent {again['layer_bytes_sent']}")
    print_aims(report["aims"])


if __name__ == "__main__":
    main()
