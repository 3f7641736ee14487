"""Benchmark `ocikit copy` of a `docker save` archive (>= 1 GB, several layers) to an OCI layout
with gzip layers, from the file and from a pipe, beside `skopeo copy` of the same archive (file
only: skopeo cannot read a docker-archive from a pipe) and a plain-Python baseline (tarfile +
gzip level 9, one thread).

    python bench/bench_copy.py [--archive PATH] [--size-gb 1.2] [--regenerate] [--keep]
                               [--runs N] [--skip-baseline] [--ocikit PATH] [--ocikit-level N]
                               [--json]

Throughput is MB/s of the uncompressed archive read; "x skopeo" is skopeo's wall time over the
tool's; "size/sk" is the tool's compressed output over skopeo's; RSS is the peak resident set
of the tool's own process (not of the cat that feeds the pipe).
"""

from __future__ import annotations

import argparse
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from common import (
    OCIKIT,
    WORK,
    ArchiveInfo,
    Row,
    RunFailed,
    Usage,
    baseline_argv,
    check_gzip_layout,
    describe_archive,
    ensure_archive,
    format_table,
    log,
    machine_facts,
    measure,
    rss_floor_kb,
    skopeo_argv,
    tree_bytes,
    warm_page_cache,
)

TARGET_SPEED = 4.0  # x skopeo
TARGET_RSS_MB = 200.0
COMPARABLE_SIZE = 1.10  # output at most 10 % larger than skopeo's


def notes(runs: int, rss_floor_mb: float) -> list[str]:
    return [
        "the archive was read once before timing: every tool reads it from the page cache",
        f"wall and cpu s are of the fastest of {runs} runs (the baseline runs once), RSS the"
        " highest",
        "output goes to a fresh directory per run; dirty pages are synced before each run",
        "others% is the share of the CPUs that other processes (cat and the kernel's"
        " write-back included) took during that run: the figures hold when it is low",
        "RSS is each process's own (wait4); Linux makes the peak of the process spawning it"
        f" a floor, here {rss_floor_mb:.1f} MB",
    ]


@dataclass(frozen=True)
class Case:
    """One tool on one input: how to run it into ``out`` and whether that is an OCI layout."""

    tool: str
    input: str
    argv: Callable[[Path], list[str]]
    pipe: bool = False
    is_layout: bool = True
    max_runs: int | None = None  # the baseline is slow: once is enough


def copy_case(tool: str, prefix: list[str], flags: list[str], source: str) -> Case:
    """``PREFIX copy -q FLAGS SOURCE oci:OUT:bench``, reading stdin when SOURCE ends in ``-``."""
    pipe = source.endswith(":-")

    def argv(out: Path) -> list[str]:
        return [*prefix, "copy", "-q", *flags, source, f"oci:{out}:bench"]

    return Case(tool, "pipe" if pipe else "file", argv, pipe=pipe)


def cases(archive: Path, ocikit: Path, level: int | None, baseline: bool) -> list[Case]:
    gzip = ["--dest-compress-format", "gzip"]
    ocikit_gzip = gzip if level is None else [*gzip, "--dest-compress-level", str(level)]
    found = [
        copy_case("skopeo", skopeo_argv(), gzip, f"docker-archive:{archive}"),
        copy_case("ocikit", [str(ocikit)], ocikit_gzip, f"docker-archive:{archive}"),
        copy_case("ocikit", [str(ocikit)], ocikit_gzip, "docker-archive:-"),
    ]
    if baseline:
        argv = partial(baseline_argv, archive)
        found.append(Case("baseline", "file", argv, is_layout=False, max_runs=1))
    return found


def run_case(
    case: Case,
    info: ArchiveInfo,
    runs: int,
    keep: bool,
    check: Callable[[Path, ArchiveInfo], None] | None = None,
) -> Row:
    """Best of ``runs`` wall times (the least disturbed run) with the highest peak RSS seen;
    each output is checked (an OCI layout with gzip layers, or by ``check``) before it counts."""
    out = WORK / "out" / f"{case.tool}-{case.input}"
    out.parent.mkdir(parents=True, exist_ok=True)
    usages: list[Usage] = []
    try:
        for _ in range(min(runs, case.max_runs or runs)):
            shutil.rmtree(out, ignore_errors=True)
            usages.append(measure(case.argv(out), info.path if case.pipe else None))
            if case.is_layout:
                check_gzip_layout(out, info.layers)
            if check is not None:
                check(out, info)
        size = tree_bytes(out)
    except (RunFailed, OSError, KeyError, ValueError) as exc:
        return Row(case.tool, case.input, error=str(exc) or type(exc).__name__)
    finally:
        if not keep:
            shutil.rmtree(out, ignore_errors=True)
    best = min(usages, key=lambda u: u.seconds)
    peak = replace(best, max_rss_kb=max(u.max_rss_kb for u in usages))
    return Row.measured(case.tool, case.input, peak, info.bytes, size)


def verdict(rows: list[Row]) -> dict[str, bool | None]:
    """The aims: ocikit >= 4x skopeo at a comparable size, peak RSS < 200 MB (None: unknown)."""
    ours = [r for r in rows if r.tool == "ocikit"]
    speeds = [r.speed_vs_ref for r in ours if r.speed_vs_ref is not None]
    sizes = [r.size_vs_ref for r in ours if r.size_vs_ref is not None]
    rss = [r.peak_rss_MB for r in ours if r.peak_rss_MB is not None]
    complete = bool(ours) and len(speeds) == len(sizes) == len(rss) == len(ours)
    if not complete:
        return {"speed": None, "size": None, "rss": None}
    return {
        "speed": min(speeds) >= TARGET_SPEED,
        "size": max(sizes) <= COMPARABLE_SIZE,
        "rss": max(rss) < TARGET_RSS_MB,
    }


def print_report(report: dict[str, Any], rows: list[Row]) -> None:
    print("machine: " + ", ".join(f"{k} {v}" for k, v in report["machine"].items()))
    print(f"archive: {report['archive']['summary']}")
    for note in report["notes"]:
        print(f"note: {note}")
    print()
    print(format_table(rows))
    print()
    marks = {True: "yes", False: "NO", None: "n/a"}
    aims = report["aims"]
    print(
        f"aims: ocikit >= {TARGET_SPEED:g}x skopeo: {marks[aims['speed']]}; "
        f"size <= {COMPARABLE_SIZE:g}x skopeo's: {marks[aims['size']]}; "
        f"peak RSS < {TARGET_RSS_MB:g} MB: {marks[aims['rss']]}"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--archive", type=Path, help="a docker-archive to use (default: generate)")
    parser.add_argument("--size-gb", type=float, default=1.2, help="size of a generated archive")
    parser.add_argument("--regenerate", action="store_true", help="rebuild the cached archive")
    parser.add_argument("--keep", action="store_true", help=f"keep outputs in {WORK}/out")
    parser.add_argument("--runs", type=int, default=3, help="runs per case; the best counts")
    parser.add_argument("--skip-baseline", action="store_true", help="the baseline is slow")
    parser.add_argument("--ocikit", type=Path, default=OCIKIT, help="the ocikit to measure")
    parser.add_argument("--ocikit-level", type=int, help="--dest-compress-level for ocikit")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    facts = machine_facts(args.ocikit)
    if args.archive is None and args.size_gb < 1:
        log(f"note: a {args.size_gb:g} GB archive is below the benchmark's 1 GB")
    archive = args.archive or ensure_archive(args.size_gb, regenerate=args.regenerate)
    info = describe_archive(archive)
    log(f"archive: {info.summary()}; warming the page cache")
    warm_page_cache(archive)
    rows: list[Row] = []
    for case in cases(archive, args.ocikit, args.ocikit_level, not args.skip_baseline):
        log(f"running {case.tool} ({case.input}) ...")
        rows.append(run_case(case, info, args.runs, args.keep))
    for row in rows:
        row.compare_to(rows[0])
    floor_mb = round(rss_floor_kb() / 1024, 1)
    report = {
        "machine": facts,
        "archive": {**asdict(info), "path": str(info.path), "summary": info.summary()},
        "notes": notes(args.runs, floor_mb),
        "rss_floor_MB": floor_mb,
        "results": [asdict(r) for r in rows],
        "aims": verdict(rows),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, rows)


if __name__ == "__main__":
    main()
