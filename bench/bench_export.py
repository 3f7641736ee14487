"""Benchmark `ocikit export-layers` of a `docker save` archive (>= 1 GB, several layers), from
the file and from a pipe, beside `skopeo copy docker-archive: oci:` of the same archive (the
same work: every layer gzip-compressed and hashed) and a plain-Python baseline doing what the
build farm does today (tarfile stream reader, gzip level 9, one thread).

    python bench/bench_export.py [--archive PATH] [--size-gb 1.2] [--regenerate] [--keep]
                                 [--runs N] [--skip-baseline] [--ocikit PATH] [--level N]
                                 [--json]

Throughput is MB/s of the uncompressed archive read; "x skopeo" is skopeo's wall time over the
tool's; "size/sk" is the tool's output over skopeo's; "cores" is CPU time over wall time; RSS
is the peak resident set of the tool's own process (not of the cat that feeds the pipe).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from bench_copy import Case, copy_case, notes, run_case
from common import (
    OCIKIT,
    WORK,
    ArchiveInfo,
    Row,
    baseline_argv,
    describe_archive,
    ensure_archive,
    format_table,
    log,
    machine_facts,
    rss_floor_kb,
    skopeo_argv,
    warm_page_cache,
)

TARGET_VS_BASELINE = 20.0
TARGET_VS_SKOPEO = 4.0
TARGET_RSS_MB = 200.0
TARGET_CORES = 1.5  # of 2: "both cores busy"


def export_case(ocikit: Path, level: int | None, source: str) -> Case:
    flags = [] if level is None else ["--level", str(level)]

    def argv(out: Path) -> list[str]:
        return [str(ocikit), "export-layers", "-q", *flags, source, str(out)]

    pipe = source.endswith(":-")
    return Case("ocikit", "pipe" if pipe else "file", argv, pipe=pipe, is_layout=False)


def cases(archive: Path, ocikit: Path, level: int | None, baseline: bool) -> list[Case]:
    found = [
        copy_case(
            "skopeo", skopeo_argv(), ["--dest-compress-format", "gzip"], f"docker-archive:{archive}"
        ),
        export_case(ocikit, level, f"docker-archive:{archive}"),
        export_case(ocikit, level, "docker-archive:-"),
    ]
    if baseline:
        found.append(
            Case("baseline", "file", partial(baseline_argv, archive), is_layout=False, max_runs=1)
        )
    return found


def check_export(out: Path, info: ArchiveInfo) -> None:
    """The export is complete: every layer file there, decompressing to its diff_id."""
    manifest = json.loads((out / "manifest.json").read_bytes())
    digests = json.loads((out / "digests.json").read_bytes())
    layers = [name for entry in manifest for name in entry["Layers"]]
    if len(layers) != info.layers:
        raise ValueError(f"{out}: {len(layers)} layers, the archive has {info.layers}")
    for diff_id, record in digests[0].items():
        path = out / f"{record['layer_id']}.tar.gz"
        h = hashlib.sha256()
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        if f"sha256:{h.hexdigest()}" != diff_id:
            raise ValueError(f"{path}: does not decompress to {diff_id}")


def verdict(rows: list[Row]) -> dict[str, bool | None]:
    ours = [r for r in rows if r.tool == "ocikit" and not r.error]
    base = next((r for r in rows if r.tool == "baseline" and not r.error), None)
    if not ours:
        return {"vs_baseline": None, "vs_skopeo": None, "rss": None, "cores": None}
    slowest = max(r.seconds or 0 for r in ours)
    return {
        "vs_baseline": None
        if base is None or not base.seconds
        else base.seconds / slowest >= TARGET_VS_BASELINE,
        "vs_skopeo": min(r.speed_vs_ref or 0 for r in ours) >= TARGET_VS_SKOPEO,
        "rss": max(r.peak_rss_MB or 0 for r in ours) < TARGET_RSS_MB,
        "cores": min((r.cpu_seconds or 0) / (r.seconds or 1) for r in ours) >= TARGET_CORES,
    }


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
    parser.add_argument("--level", type=int, help="--level for ocikit export-layers")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    facts = machine_facts(args.ocikit)
    archive = args.archive or ensure_archive(args.size_gb, regenerate=args.regenerate)
    info = describe_archive(archive)
    log(f"archive: {info.summary()}; warming the page cache")
    warm_page_cache(archive)
    rows: list[Row] = []
    for case in cases(archive, args.ocikit, args.level, not args.skip_baseline):
        log(f"running {case.tool} ({case.input}) ...")
        check = check_export if case.tool == "ocikit" else None
        rows.append(run_case(case, info, args.runs, args.keep, check=check))
    for row in rows:
        row.compare_to(rows[0])
    floor_mb = round(rss_floor_kb() / 1024, 1)
    aims = verdict(rows)
    report: dict[str, Any] = {
        "machine": facts,
        "archive": {**asdict(info), "path": str(info.path), "summary": info.summary()},
        "notes": notes(args.runs, floor_mb),
        "rss_floor_MB": floor_mb,
        "results": [asdict(r) for r in rows],
        "aims": aims,
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print("machine: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    print(f"archive: {info.summary()}")
    for note in report["notes"]:
        print(f"note: {note}")
    print()
    print(format_table(rows))
    print()
    for row in rows:
        if row.seconds:
            print(f"  {row.tool} ({row.input}): {(row.cpu_seconds or 0) / row.seconds:.2f} cores")
    base = next((r for r in rows if r.tool == "baseline" and r.seconds), None)
    if base is not None:
        for row in rows:
            if row.tool == "ocikit" and row.seconds:
                print(f"  ocikit ({row.input}): {base.seconds / row.seconds:.1f}x the baseline")
    marks = {True: "yes", False: "NO", None: "n/a"}
    print(
        f"\naims: >= {TARGET_VS_BASELINE:g}x the baseline: {marks[aims['vs_baseline']]}; "
        f">= {TARGET_VS_SKOPEO:g}x skopeo: {marks[aims['vs_skopeo']]}; "
        f"peak RSS < {TARGET_RSS_MB:g} MB: {marks[aims['rss']]}; "
        f"both cores busy (>= {TARGET_CORES:g}): {marks[aims['cores']]}"
    )


if __name__ == "__main__":
    main()
