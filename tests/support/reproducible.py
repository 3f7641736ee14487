"""What two builds' results differ in: the images whose manifest digests differ, which of
their blobs, and ``diffoscope``'s account of the first pair (the reproducibility tests'
assertion messages)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

DIFF_LINES = 200  # of diffoscope's account, at most


def digests(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(i["name"], i["layer_type"], i["digest"]) for i in result["images"]]


def blob_path(cache: Path, digest: str) -> Path:
    return cache / "blobs" / "sha256" / digest.split(":")[1]


def what_differs(a: tuple[Path, dict[str, Any]], b: tuple[Path, dict[str, Any]]) -> str:
    """For the images whose digests differ: which blobs differ, and diffoscope's account of
    the first pair (at most ``DIFF_LINES`` lines)."""
    (cache_a, result_a), (cache_b, result_b) = a, b
    pairs: list[tuple[str, str, str]] = []
    for x, y in zip(result_a["images"], result_b["images"], strict=True):
        if x["digest"] == y["digest"]:
            continue
        ma = json.loads(blob_path(cache_a, x["digest"]).read_bytes())
        mb = json.loads(blob_path(cache_b, y["digest"]).read_bytes())
        where = f"{x['name']} ({x['layer_type']})"
        for i, (la, lb) in enumerate(zip(ma["layers"], mb["layers"], strict=False)):
            if la["digest"] != lb["digest"]:
                pairs.append((f"{where} layer {i}", la["digest"], lb["digest"]))
        if ma["config"]["digest"] != mb["config"]["digest"]:
            pairs.append((f"{where} config", ma["config"]["digest"], mb["config"]["digest"]))
    lines = [f"{what}: {da} != {db}" for what, da, db in pairs]
    if pairs:
        what, da, db = pairs[0]
        lines.append(f"diffoscope of {what}:")
        lines += diffoscope(blob_path(cache_a, da), blob_path(cache_b, db))
    return "\n".join(lines)


def diffoscope(a: Path, b: Path) -> list[str]:
    tool = shutil.which("diffoscope")
    if tool is None:
        return ["(diffoscope is not installed: Debian package diffoscope-minimal)"]
    proc = subprocess.run(
        [tool, "--no-progress", "--text", "-", str(a), str(b)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    text = (proc.stdout + proc.stderr).decode(errors="replace").splitlines()
    more = len(text) - DIFF_LINES
    return text[:DIFF_LINES] + ([f"... {more} more lines"] if more > 0 else [])
