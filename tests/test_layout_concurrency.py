"""Concurrent writers to one OCI layout lose no tag; a killed copy leaves no dangling index."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

SAMPLE = Path(__file__).parent.parent / "examples" / "hello.docker.tar"
OCIKIT = [sys.executable, "-m", "ocikit"]


def _referenced_blobs_exist(layout: Path) -> None:
    index = json.loads((layout / "index.json").read_bytes())
    for desc in index["manifests"]:
        manifest_path = layout / "blobs" / "sha256" / desc["digest"].split(":")[1]
        manifest = json.loads(manifest_path.read_bytes())
        for d in [manifest["config"], *manifest["layers"]]:
            assert (layout / "blobs" / "sha256" / d["digest"].split(":")[1]).is_file()


def test_parallel_writers_keep_every_tag(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    procs = [
        subprocess.Popen(
            [*OCIKIT, "copy", "-q", f"docker-archive:{SAMPLE}", f"oci:{layout}:t{i}"],
            stderr=subprocess.PIPE,
        )
        for i in range(8)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    index = json.loads((layout / "index.json").read_bytes())
    tags = sorted(d["annotations"]["org.opencontainers.image.ref.name"] for d in index["manifests"])
    assert tags == sorted(f"t{i}" for i in range(8))
    assert not [p for p in (layout / "blobs" / "sha256").iterdir() if p.name.startswith(".")]
    _referenced_blobs_exist(layout)


def test_killed_copy_leaves_layout_consistent(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    subprocess.run(
        [*OCIKIT, "copy", "-q", f"docker-archive:{SAMPLE}", f"oci:{layout}:a"], check=True
    )
    before = (layout / "index.json").read_bytes()
    data = SAMPLE.read_bytes()
    p = subprocess.Popen(
        [*OCIKIT, "copy", "-q", "docker-archive:-", f"oci:{layout}:b"], stdin=subprocess.PIPE
    )
    assert p.stdin is not None
    p.stdin.write(data[: len(data) // 2])  # half an archive, then the process dies
    p.stdin.flush()
    time.sleep(0.5)
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert (layout / "index.json").read_bytes() == before
    _referenced_blobs_exist(layout)
