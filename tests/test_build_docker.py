"""The rockcraft case, judged by a real engine: a usrmerged base (``bin -> usr/bin``), imports
of a virtualenv's ``bin/`` (symlinks to ``/usr/bin/python3.11``, a script), ``usr/bin``
content and a static busybox at ``/bin/busybox``. The layer has every entry once, under
``usr/bin``; ``docker load`` accepts the image and ``docker run`` of ``/bin/busybox`` works."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from support.cli import ok
from support.dockerd import BUSYBOX, DockerEngine
from support.layouts import read_entries, write_layout

pytestmark = pytest.mark.docker


def usrmerged_rootfs(root: Path) -> bytes:
    for d in ("usr/bin", "usr/sbin", "usr/lib", "etc", "tmp"):
        (root / d).mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "usr/bin/busybox")
    for applet in ("sh", "ls", "cat", "test", "echo"):
        os.symlink("busybox", root / "usr/bin" / applet)
    for link in ("bin", "sbin", "lib"):
        os.symlink(f"usr/{link}", root / link)
    return subprocess.run(
        ["tar", "-C", str(root), "--numeric-owner", "-cf", "-", "."],
        capture_output=True,
        check=True,
    ).stdout


def test_rockcraft_case(docker_engine: DockerEngine, tmp_path: Path) -> None:
    write_layout(tmp_path / "base", [usrmerged_rootfs(tmp_path / "rootfs")], ref="base")
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    os.symlink("/usr/bin/python3.11", venv / "python3")
    os.symlink("python3", venv / "python")
    os.symlink("python3", venv / "python3.11")
    (venv / "pip").write_text("#!/bin/sh\necho pip\n")
    (venv / "pip").chmod(0o755)
    (tmp_path / "extra" / "usr" / "bin").mkdir(parents=True)
    (tmp_path / "extra" / "usr" / "bin" / "hello").write_text("#!/bin/sh\necho hello\n")
    (tmp_path / "extra" / "usr" / "bin" / "hello").chmod(0o755)
    shutil.copy2(BUSYBOX, tmp_path / "busybox")
    (tmp_path / "ocikit.yaml").write_text(
        """
images:
  app:
    from: oci:base:base
    imports:
      - {src: venv/bin, dest: /bin}
      - {src: extra, dest: /}
      - {src: busybox, dest: /bin/busybox}
    config:
      cmd: [/bin/busybox, echo, ok]
"""
    )
    ok("build", "-q", "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    layout = tmp_path / "oci"
    index = json.loads((layout / "index.json").read_bytes())
    manifest = json.loads(
        (layout / "blobs/sha256" / index["manifests"][0]["digest"].split(":")[1]).read_bytes()
    )
    layer = (layout / "blobs/sha256" / manifest["layers"][-1]["digest"].split(":")[1]).read_bytes()
    names = [e.name.rstrip("/") for e in read_entries(gzip.decompress(layer))]
    assert len(names) == len(set(names))
    assert sorted(names) == [
        "usr/bin/busybox",
        "usr/bin/hello",
        "usr/bin/pip",
        "usr/bin/python",
        "usr/bin/python3",
        "usr/bin/python3.11",
    ]
    ok("check", "--strict", f"oci:{layout}:app")
    archive = tmp_path / "app.tar"
    ok("copy", "-q", f"oci:{layout}:app", f"docker-archive:{archive}:ocikit-test/built:1")
    docker_engine.docker("load", "-i", str(archive))
    run = docker_engine.docker(
        "run",
        "--rm",
        "--network",
        "none",
        "ocikit-test/built:1",
        "/bin/busybox",
        "sh",
        "-c",
        "test -L /bin && /bin/pip && /bin/hello && readlink /bin/python3",
    )
    assert run.stdout.decode().split() == ["pip", "hello", "/usr/bin/python3.11"]
    default = docker_engine.docker("run", "--rm", "--network", "none", "ocikit-test/built:1")
    assert default.stdout.strip() == b"ok"
