"""Benchmark `ocikit check` and `ocikit unpack` of an OCI layout with gzip layers (>= 1 GB of
layer tars, several layers): check beside a bare decompressor (isal's igzip_threaded, what
ocikit decompresses with, output discarded), the machine's limit for check's work with the
bytes (`igzip -dc | openssl dgst -sha256` beside `openssl dgst -sha256` of each blob) and a
plain-Python checker (`tarfile` in 'r|gz' mode, one thread); unpack beside `umoci unpack`.
The tools of a table run in turn, round after round (interleaved), the best of each counts.

    python bench/bench_check.py [--archive PATH] [--size-gb 1.2] [--regenerate] [--keep]
                                [--runs N] [--skip-baseline] [--skip-unpack] [--ocikit PATH]
                                [--compare PATH] [--umoci-rootless] [--json]

The layout is made once from the benchmark's `docker save` archive (see bench_copy.py) with
`ocikit copy -q --dest-compress-format gzip docker-archive:ARCHIVE oci:LAYOUT:bench` and cached
in bench/work/check-layout. "in MB/s" is of the compressed layer blobs, "out MB/s" of the
uncompressed layer tars; "x decomp" / "x base" / "x umoci" are the reference row's wall time
over the tool's (above 1: faster); RSS is the peak resident set of the tool's own process.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from common import (
    MB,
    OCIKIT,
    ROOT,
    WORK,
    RunFailed,
    Usage,
    check_gzip_layout,
    describe_archive,
    ensure_archive,
    layout_layers,
    log,
    machine_facts,
    measure,
    rss_floor_kb,
    tool_version,
    warm_page_cache,
)

LAYOUT = WORK / "check-layout"
LIMIT_TOOL = "igzip+openssl"
COMPARE_TOOL = "compared check"
TAG = "bench"
TARGET_CHECK_MB_S = 280.0  # of compressed input (issue 16: the igzip+openssl limit ~310 here)

#: the reference: decompress every layer blob as ocikit does (isal, one worker thread, 1 MiB
#: blocks), discard the output; argv: RESULT_JSON BLOB...
DECOMPRESSOR = """\
import json, sys
from isal import igzip_threaded
sizes = []
buf = bytearray(1 << 20)
for path in sys.argv[2:]:
    n = 0
    with igzip_threaded.open(path, "rb", threads=1, block_size=1 << 20) as f:
        while got := f.readinto(buf):
            n += got
    sizes.append(n)
with open(sys.argv[1], "w") as out:
    json.dump({"uncompressed": sizes}, out)
"""

#: the machine's limit for the work check must do with the bytes: per blob, isal's igzip
#: inflating into openssl's sha256 (the diff_id) while openssl hashes the blob (its digest),
#: one process each, the cores shared; argv: bash -c LIMIT bash BLOB...
LIMIT = """\
set -o pipefail
for blob in "$@"; do
    openssl dgst -sha256 "$blob" >/dev/null &
    igzip -dc "$blob" | openssl dgst -sha256 >/dev/null || exit 1
    wait $! || exit 1
done
"""

#: the plain-Python checker: stdlib tarfile over each gzip blob in stream mode, one thread,
#: every member visited and its name kept (what a naive checker needs to find duplicates);
#: argv: RESULT_JSON BLOB...
BASELINE = """\
import json, sys, tarfile
names = set()
members = 0
for path in sys.argv[2:]:
    with tarfile.open(path, "r|gz") as tar:
        for member in tar:
            members += 1
            names.add(member.name)
with open(sys.argv[1], "w") as out:
    json.dump({"members": members, "paths": len(names)}, out)
"""


def notes(runs: int, rss_floor_mb: float, umoci_mode: str) -> list[str]:
    return [
        "the layer blobs were read once before timing: every tool reads them from the page cache",
        f"the tools run in turn, {runs} rounds; wall and cpu s are of each tool's fastest"
        " run, RSS the highest",
        f"{LIMIT_TOOL}: igzip -dc | openssl dgst -sha256 beside openssl dgst -sha256 of each"
        " blob (what check must do with the bytes, in C: the machine's limit)",
        "unpack goes to a fresh directory per run (removed before, not timed); dirty pages"
        " are synced before each run",
        f"umoci runs {umoci_mode}; it also writes an mtree manifest (sha256 of every file)"
        " of the unpacked tree",
        "others% is the share of the CPUs that other processes (the kernel's write-back"
        " included) took during that run: the figures hold when it is low",
        "RSS is each process's own (wait4); Linux makes the peak of the process spawning it"
        f" a floor, here {rss_floor_mb:.1f} MB",
    ]


# ---------------------------------------------------------------------------- the layout


@dataclass(frozen=True)
class LayoutInfo:
    path: Path
    blobs: tuple[Path, ...]  # the layer blobs, in order
    compressed_bytes: int

    @property
    def layers(self) -> int:
        return len(self.blobs)

    def summary(self, uncompressed: int | None) -> str:
        sizes = ", ".join(f"{p.stat().st_size / MB:.0f}" for p in self.blobs)
        raw = f" -> {uncompressed / 1e9:.2f} GB of layer tars" if uncompressed else ""
        return (
            f"{self.path}:{TAG} ({self.layers} gzip layers of {sizes} MB: "
            f"{self.compressed_bytes / 1e9:.2f} GB{raw})"
        )


def ensure_layout(
    archive: Path, ocikit: Path, regenerate: bool, layout: Path = LAYOUT
) -> LayoutInfo:
    """The archive as an OCI layout with gzip layers, made once by ``ocikit copy`` and cached
    at ``layout`` (remade when the archive is newer); written aside and renamed, so a failure
    is not cached."""
    index = layout / "index.json"
    stale = not index.exists() or index.stat().st_mtime < archive.stat().st_mtime
    if regenerate or stale:
        log(f"converting {archive.name} to {layout} (gzip) ...")
        partial = layout.with_name(layout.name + ".partial")
        remove(partial)
        argv = [str(ocikit), "copy", "-q", "--dest-compress-format", "gzip"]
        subprocess.run([*argv, f"docker-archive:{archive}", f"oci:{partial}:{TAG}"], check=True)
        check_gzip_layout(partial, describe_archive(archive).layers)
        remove(layout)
        partial.replace(layout)
    blobs = []
    for layer in layout_layers(layout):
        algo, hexdigest = layer["digest"].split(":", 1)
        blobs.append(layout / "blobs" / algo / hexdigest)
    return LayoutInfo(layout, tuple(blobs), sum(p.stat().st_size for p in blobs))


def remove(path: Path) -> None:
    """``rm -rf`` in a child: walking a big tree here would raise this process's peak RSS,
    the floor of every later measurement."""
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def count_files(path: Path) -> tuple[int, int]:
    """Regular files under ``path`` and their bytes (``find`` in a child, for the same reason)."""
    script = 'find "$1" -type f -printf "%s\\n" | awk "{n++; s+=\\$1} END {print n+0, s+0}"'
    out = subprocess.run(["sh", "-c", script, "sh", str(path)], capture_output=True, text=True)
    files, size = out.stdout.split()
    return int(files), int(size)


def source_state() -> str:
    """The commit measured, and the files of src/ changed since (the tree is shared)."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown"
    changed = subprocess.run([*git, "status", "--porcelain", "--", "src"], capture_output=True)
    dirty = [line[3:] for line in changed.stdout.decode().splitlines()]
    return head.stdout.strip() + (f" + uncommitted {' '.join(dirty)}" if dirty else "")


# ---------------------------------------------------------------------------- cases and rows


@dataclass(frozen=True)
class Case:
    """One tool: its command (given a fresh output path and a result file) and what must hold
    after each run (given the same two; raises RunFailed)."""

    tool: str
    argv: Callable[[Path, Path], list[str]]
    validate: Callable[[Path, Path], dict[str, Any]] = lambda out, result: {}
    output: Callable[[Path], Path | None] = lambda out: None  # the tree to count, if any


@dataclass
class ToolRow:
    """One tool's line; ``vs_ref`` against the reference row (decompressor, umoci),
    ``vs_baseline`` against the plain-Python checker."""

    tool: str
    seconds: float | None = None
    cpu_seconds: float | None = None
    in_MB_per_s: float | None = None
    out_MB_per_s: float | None = None
    vs_ref: float | None = None
    vs_baseline: float | None = None
    files: int | None = None
    output_MB: float | None = None
    peak_rss_MB: float | None = None
    others_cpu_pct: int | None = None
    facts: dict[str, Any] = field(default_factory=dict)  # what the run reported (validated)
    error: str | None = None

    def fill(self, compressed: int, uncompressed: int | None) -> None:
        if self.seconds:
            self.in_MB_per_s = round(compressed / MB / self.seconds, 1)
            if uncompressed:
                self.out_MB_per_s = round(uncompressed / MB / self.seconds, 1)

    def compare(self, ref: ToolRow | None, baseline: ToolRow | None = None) -> None:
        if self.seconds and ref and ref.seconds:
            self.vs_ref = round(ref.seconds / self.seconds, 2)
        if self.seconds and baseline and baseline.seconds:
            self.vs_baseline = round(baseline.seconds / self.seconds, 2)


def run_cases(cases: Sequence[Case], runs: int, keep: bool) -> list[ToolRow]:
    """Each case ``runs`` times, interleaved (A, B, C, A, B, C, ...: the machine's load falls
    on every tool alike); per tool the best wall time (with its CPU seconds) and the highest
    peak RSS seen. Outputs are removed before each run (not timed) and after the last
    unless ``keep``; a tool that fails once is not run again."""
    usages: dict[str, list[Usage]] = {c.tool: [] for c in cases}
    facts: dict[str, dict[str, Any]] = {c.tool: {} for c in cases}
    errors: dict[str, str] = {}

    def paths(case: Case) -> tuple[Path, Path]:
        out = WORK / "out" / case.tool.replace(" ", "-").replace("+", "-")
        return out, WORK / "out" / f"{out.name}.result.json"

    (WORK / "out").mkdir(parents=True, exist_ok=True)
    failures = (RunFailed, OSError, KeyError, ValueError, subprocess.CalledProcessError)
    try:
        for _ in range(runs):
            for case in cases:
                if case.tool in errors:
                    continue
                out, result = paths(case)
                try:
                    remove(out)
                    result.unlink(missing_ok=True)
                    usages[case.tool].append(measure(case.argv(out, result)))
                    facts[case.tool] = case.validate(out, result)
                except failures as exc:
                    errors[case.tool] = str(exc) or type(exc).__name__
        for case in cases:
            tree = case.output(paths(case)[0])
            if tree is not None and case.tool not in errors:
                try:
                    facts[case.tool]["files"], facts[case.tool]["bytes"] = count_files(tree)
                except failures as exc:
                    errors[case.tool] = str(exc) or type(exc).__name__
    finally:
        if not keep:
            for case in cases:
                out, result = paths(case)
                remove(out)
                result.unlink(missing_ok=True)
    return [_row(c.tool, usages[c.tool], facts[c.tool], errors.get(c.tool)) for c in cases]


def _row(tool: str, usages: list[Usage], facts: dict[str, Any], error: str | None) -> ToolRow:
    if error is not None or not usages:
        return ToolRow(tool, error=error or "not run")
    best = min(usages, key=lambda u: u.seconds)
    peak = replace(best, max_rss_kb=max(u.max_rss_kb for u in usages))
    return ToolRow(
        tool,
        seconds=round(peak.seconds, 2),
        cpu_seconds=round(peak.cpu_seconds, 2),
        files=facts.get("files"),
        output_MB=round(facts["bytes"] / MB, 1) if "bytes" in facts else None,
        peak_rss_MB=round(peak.max_rss_kb / 1024, 1),
        others_cpu_pct=round(100 * peak.others_share),
        facts=facts,
    )


def read_result(expected: Callable[[dict[str, Any]], str | None]) -> Callable[..., dict]:
    """A validator reading the script's result file; ``expected`` names what is wrong."""

    def validate(_out: Path, result: Path) -> dict[str, Any]:
        facts = json.loads(result.read_text())
        wrong = expected(facts)
        if wrong:
            raise RunFailed(wrong)
        return facts

    return validate


def check_cases(
    layout: LayoutInfo, ocikit: Path, baseline: bool, compare: Path | None = None
) -> list[Case]:
    blobs = [str(p) for p in layout.blobs]
    ref = f"oci:{layout.path}:{TAG}"

    def layers_all(facts: dict[str, Any]) -> str | None:
        got = len(facts.get("uncompressed", []))
        return None if got == layout.layers else f"{got} layers read of {layout.layers}"

    found = [
        Case(
            "decompressor",
            lambda out, result: [sys.executable, "-c", DECOMPRESSOR, str(result), *blobs],
            read_result(layers_all),
        ),
        Case("ocikit check", lambda out, result: [str(ocikit), "check", "-q", ref]),
    ]
    if compare is not None:  # another ocikit (an older commit), in the same rounds
        found.append(Case(COMPARE_TOOL, lambda out, result: [str(compare), "check", "-q", ref]))
    if shutil.which("igzip") and shutil.which("openssl"):
        found.insert(1, Case(LIMIT_TOOL, lambda out, result: ["bash", "-c", LIMIT, "bash", *blobs]))
    if baseline:
        found.append(
            Case(
                "baseline",
                lambda out, result: [sys.executable, "-c", BASELINE, str(result), *blobs],
                read_result(lambda facts: None if facts["members"] else "no members read"),
            )
        )
    return found


def umoci_argv(rootless: bool) -> list[str]:
    return ["umoci", "unpack", *(["--rootless"] if rootless else [])]


def unpack_cases(layout: LayoutInfo, ocikit: Path, rootless: bool) -> list[Case]:
    ref = f"oci:{layout.path}:{TAG}"
    umoci = [*umoci_argv(rootless), "--image", f"{layout.path}:{TAG}"]
    return [
        Case(
            "umoci unpack",
            lambda out, result: [*umoci, str(out)],
            output=lambda out: out / "rootfs",
        ),
        Case(
            "ocikit unpack",
            lambda out, result: [str(ocikit), "unpack", "-q", ref, str(out)],
            output=lambda out: out,
        ),
    ]


def check_facts(ocikit: Path, layout: LayoutInfo) -> dict[str, Any]:
    """``ocikit check --json`` once, untimed: how many entries it saw and what it found."""
    argv = [str(ocikit), "check", "-q", "--json", f"oci:{layout.path}:{TAG}"]
    proc = subprocess.run(argv, capture_output=True, text=True)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return {"exit": proc.returncode, "error": proc.stderr.strip()[-500:]}
    keep = ("layers", "entries", "errors", "warnings", "ok")
    found = {k: report.get(k) for k in keep}
    found["rules"] = sorted({f.get("rule", "?") for f in report.get("findings", [])})
    return {"exit": proc.returncode, **found}


# ---------------------------------------------------------------------------- reports

Column = tuple[str, str, int]  # (field, header, width)
CHECK_COLUMNS: tuple[Column, ...] = (
    ("tool", "tool", 14),
    ("seconds", "wall s", 8),
    ("cpu_seconds", "cpu s", 7),
    ("in_MB_per_s", "in MB/s", 9),
    ("out_MB_per_s", "out MB/s", 10),
    ("vs_ref", "x decomp", 10),
    ("vs_baseline", "x base", 8),
    ("peak_rss_MB", "RSS MB", 8),
    ("others_cpu_pct", "others%", 9),
)
UNPACK_COLUMNS: tuple[Column, ...] = (
    ("tool", "tool", 14),
    ("seconds", "wall s", 8),
    ("cpu_seconds", "cpu s", 7),
    ("in_MB_per_s", "in MB/s", 9),
    ("out_MB_per_s", "out MB/s", 10),
    ("vs_ref", "x umoci", 9),
    ("files", "files", 8),
    ("output_MB", "out MB", 8),
    ("peak_rss_MB", "RSS MB", 8),
    ("others_cpu_pct", "others%", 9),
)


def format_rows(rows: Sequence[ToolRow], columns: Sequence[Column]) -> str:
    lines = [_cells([c[1] for c in columns], columns)]
    for row in rows:
        if row.error:
            lines.append(_cells([row.tool, "FAILED"], columns))
            lines.append(f"    {row.error.splitlines()[0][:200]}")
        else:
            values = asdict(row)
            cells = ["-" if values[c[0]] is None else str(values[c[0]]) for c in columns]
            lines.append(_cells(cells, columns))
    return "\n".join(lines)


def _cells(values: Sequence[str], columns: Sequence[Column]) -> str:
    """The first column left-aligned, the figures right-aligned."""
    return "".join(
        f"{v:<{c[2]}}" if i == 0 else f"{v:>{c[2]}}"
        for i, (v, c) in enumerate(zip(values, columns, strict=False))
    ).rstrip()


def find_row(rows: Sequence[ToolRow], tool: str) -> ToolRow | None:
    return next((r for r in rows if r.tool == tool and not r.error), None)


def aims(check_rows: Sequence[ToolRow], paths: int | None) -> dict[str, Any]:
    ours = find_row(check_rows, "ocikit check")
    if ours is None or ours.in_MB_per_s is None:
        return {"check_MB_per_s": None, "check_vs_decompressor": None, "met": None}
    limit = find_row(check_rows, LIMIT_TOOL)
    return {
        "check_MB_per_s": ours.in_MB_per_s,
        "check_cpu_seconds": ours.cpu_seconds,
        "check_vs_decompressor": ours.vs_ref,
        "limit_MB_per_s": limit.in_MB_per_s if limit else None,
        "check_of_limit": round(limit.seconds / ours.seconds, 2)
        if limit and limit.seconds and ours.seconds
        else None,
        "check_peak_rss_MB": ours.peak_rss_MB,
        "paths": paths,
        "met": ours.in_MB_per_s >= TARGET_CHECK_MB_S,
    }


def print_report(report: dict[str, Any], checks: list[ToolRow], unpacks: list[ToolRow]) -> None:
    print("machine: " + ", ".join(f"{k} {v}" for k, v in report["machine"].items()))
    print(f"layout: {report['layout']['summary']}")
    for note in report["notes"]:
        print(f"note: {note}")
    print()
    print(format_rows(checks, CHECK_COLUMNS))
    facts = report["check_json"]
    if facts:
        print(
            f"  ocikit check --json: exit {facts.get('exit')}, {facts.get('entries')} entries, "
            f"{facts.get('errors')} errors, {facts.get('warnings')} warnings"
            + (f" ({', '.join(facts['rules'])})" if facts.get("rules") else "")
        )
    base = find_row(checks, "baseline")
    if base:
        print(f"  baseline: {base.facts['members']} members, {base.facts['paths']} paths")
    if unpacks:
        print()
        print(format_rows(unpacks, UNPACK_COLUMNS))
    print()
    goal = report["aims"]
    marks = {True: "yes", False: "NO", None: "n/a"}
    if goal["met"] is None:
        print(f"aim: check >= {TARGET_CHECK_MB_S:g} MB/s of compressed input: n/a")
        return
    paths = f" for {goal['paths']} paths" if goal.get("paths") else ""
    limit = ""
    if goal.get("limit_MB_per_s"):
        limit = (
            f"; the {LIMIT_TOOL} limit {goal['limit_MB_per_s']:g} MB/s,"
            f" check at {goal['check_of_limit']}x of it"
        )
    print(
        f"aim: check >= {TARGET_CHECK_MB_S:g} MB/s of compressed input: {marks[goal['met']]}"
        f" ({goal['check_MB_per_s']:g} MB/s, {goal['check_cpu_seconds']:g} CPU s,"
        f" {goal['check_vs_decompressor']}x the decompressor's speed{limit};"
        f" peak RSS {goal['check_peak_rss_MB']:g} MB{paths})"
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--archive", type=Path, help="a docker-archive to use (default: generate)")
    parser.add_argument("--size-gb", type=float, default=1.2, help="size of a generated archive")
    parser.add_argument(
        "--regenerate", action="store_true", help="rebuild the cached archive and layout"
    )
    parser.add_argument("--keep", action="store_true", help=f"keep outputs in {WORK}/out")
    parser.add_argument("--runs", type=int, default=3, help="runs per tool; the best counts")
    parser.add_argument("--skip-baseline", action="store_true", help="no plain-Python checker")
    parser.add_argument("--skip-unpack", action="store_true", help="measure check only")
    parser.add_argument("--ocikit", type=Path, default=OCIKIT, help="the ocikit to measure")
    parser.add_argument(
        "--compare",
        type=Path,
        help="another ocikit (say, of an older commit) whose check runs in the same rounds",
    )
    parser.add_argument(
        "--umoci-rootless",
        action="store_true",
        help="umoci unpack --rootless (the default unless root)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    facts = machine_facts(args.ocikit)
    facts["umoci"] = tool_version(["umoci", "--version"])
    facts["source"] = source_state()
    if args.archive is None and args.size_gb < 1:
        log(f"note: a {args.size_gb:g} GB archive is below the benchmark's 1 GB")
    archive = args.archive or ensure_archive(args.size_gb, regenerate=args.regenerate)
    layout = ensure_layout(archive, OCIKIT, args.regenerate)
    log(f"layout: {layout.summary(None)}; warming the page cache")
    for blob in layout.blobs:
        warm_page_cache(blob)
    rootless = args.umoci_rootless or os.geteuid() != 0
    umoci_mode = "with --rootless" if rootless else "as root (no --rootless)"

    cases = check_cases(layout, args.ocikit, not args.skip_baseline, args.compare)
    log(f"running {', '.join(c.tool for c in cases)}, {args.runs} rounds interleaved ...")
    checks = run_cases(cases, args.runs, args.keep)
    decompressor = find_row(checks, "decompressor")
    uncompressed = sum(decompressor.facts["uncompressed"]) if decompressor else None
    log("running ocikit check --json once (untimed) ...")
    check_json = check_facts(args.ocikit, layout)
    unpacks: list[ToolRow] = []
    if not args.skip_unpack:
        log(f"running umoci unpack, ocikit unpack, {args.runs} rounds interleaved ...")
        unpacks = run_cases(unpack_cases(layout, args.ocikit, rootless), args.runs, args.keep)

    for row in checks + unpacks:
        row.fill(layout.compressed_bytes, uncompressed)
    baseline = find_row(checks, "baseline")
    for row in checks:
        row.compare(decompressor, baseline)
    for row in unpacks:
        row.compare(find_row(unpacks, "umoci unpack"))
    floor_mb = round(rss_floor_kb() / 1024, 1)
    paths = baseline.facts["paths"] if baseline else None
    report = {
        "machine": facts,
        "layout": {
            "path": str(layout.path),
            "archive": str(archive),
            "layers": layout.layers,
            "blob_bytes": [p.stat().st_size for p in layout.blobs],
            "compressed_bytes": layout.compressed_bytes,
            "uncompressed_bytes": uncompressed,
            "summary": layout.summary(uncompressed),
        },
        "notes": notes(args.runs, floor_mb, umoci_mode),
        "rss_floor_MB": floor_mb,
        "umoci_rootless": rootless,
        "check": [asdict(r) for r in checks],
        "check_json": check_json,
        "unpack": [asdict(r) for r in unpacks],
        "aims": aims(checks, paths),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, checks, unpacks)


if __name__ == "__main__":
    main()
