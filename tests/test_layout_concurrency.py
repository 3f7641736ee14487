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


def test_a_writer_that_made_the_layout_and_fails_never_removes_it_under_another(
    tmp_path: Path, monkeypatch
) -> None:
    """Writer A makes the layout, writer B opens it, A fails: A removes the layout only if
    nothing else is in it. B's private directory is made under the lock with the layout
    checked, so A's undo cannot fall between them (one run in two of eight writers failed
    with "no such file or directory" when it did)."""
    from ocikit.transports.oci_layout import OciLayoutDestination, _Layout
    from ocikit.transports.reference import Reference

    root = tmp_path / "layout"
    first = OciLayoutDestination(Reference("oci", str(root), "a"))
    real = _Layout.reclaim_dead

    def first_fails_meanwhile(self: _Layout) -> list[tuple[str, int]]:
        monkeypatch.setattr(_Layout, "reclaim_dead", real)
        first.abort()  # between the second writer's opening of the layout and its work
        return real(self)

    monkeypatch.setattr(_Layout, "reclaim_dead", first_fails_meanwhile)
    second = OciLayoutDestination(Reference("oci", str(root), "b"))
    assert root.is_dir() and (root / "oci-layout").is_file()
    assert Path(second.work.path).is_dir(), "the second writer has its directory"
    second.abort()
