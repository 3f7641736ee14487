"""A usrmerged Debian root filesystem made by ``mmdebstrap`` (minbase, bookworm) as the base,
built into an image by ocikit itself (a tarball import from scratch), and a run step that
writes through ``/bin`` as people do (``ln -s``, ``cp``, a venv's ``python3 -> ...``
symlinks): the layer holds those entries under ``usr/bin`` only, once each; ``docker load``
accepts the image and ``docker run`` sees the files."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.cli import ok
from support.dockerd import DockerEngine
from support.layouts import read_entries

pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(os.geteuid() != 0, reason="run steps need root"),
]


@pytest.fixture(scope="module")
def debian_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    where = tmp_path_factory.mktemp("debian")
    tar = where / "rootfs.tar"
    proc = subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=minbase", "--skip=output/dev", "bookworm", str(tar)],
        capture_output=True,
        timeout=900,
    )
    if proc.returncode != 0:
        if os.environ.get("CI"):
            raise AssertionError(f"mmdebstrap failed: {proc.stderr.decode()[-2000:]}")
        pytest.skip(f"mmdebstrap cannot make a root filesystem here: {proc.stderr[-300:]!r}")
    yield tar


def test_debian_step_through_bin(
    debian_rootfs: Path, docker_engine: DockerEngine, tmp_path: Path
) -> None:
    (tmp_path / "ocikit.yaml").write_text(
        f"""
images:
  debian:
    from: scratch
    build_only: true
    imports:
      - {{src: {debian_rootfs}, dest: /}}
    config: {{cmd: [/bin/bash]}}
  app:
    from: {{built: debian}}
    run:
      - ln -s /usr/bin/perl /bin/perl-link
      - cp /etc/debian_version /bin/debver
      - mkdir -p /opt/venv/bin && ln -s /usr/bin/perl /opt/venv/bin/python3
      - cp -P /opt/venv/bin/python3 /bin/python3 && ln -s python3 /bin/python
"""
    )
    # the tarball into the context (a symlink leading out of it would be refused)
    try:
        os.link(debian_rootfs, tmp_path / "rootfs.tar")
    except OSError:
        shutil.copyfile(debian_rootfs, tmp_path / "rootfs.tar")
    recipe = (tmp_path / "ocikit.yaml").read_text().replace(str(debian_rootfs), "rootfs.tar")
    (tmp_path / "ocikit.yaml").write_text(recipe)
    ok("build", "-q", "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    layout = tmp_path / "oci"
    index = json.loads((layout / "index.json").read_bytes())
    blobs = layout / "blobs/sha256"
    manifest = json.loads((blobs / index["manifests"][0]["digest"].split(":")[1]).read_bytes())
    layer = (blobs / manifest["layers"][-1]["digest"].split(":")[1]).read_bytes()
    names = [e.name.rstrip("/") for e in read_entries(gzip.decompress(layer))]
    assert len(names) == len(set(names)), "no path twice"
    assert not [n for n in names if n == "bin" or n.startswith("bin/")]
    for path in ("usr/bin/perl-link", "usr/bin/debver", "usr/bin/python3", "usr/bin/python"):
        assert path in names
    ok("check", "--strict", f"oci:{layout}:app")
    archive = tmp_path / "app.tar"
    ok("copy", "-q", f"oci:{layout}:app", f"docker-archive:{archive}:ocikit-test/debian-run:1")
    docker_engine.docker("load", "-i", str(archive))
    out = docker_engine.docker(
        "run",
        "--rm",
        "--network",
        "none",
        "ocikit-test/debian-run:1",
        "bash",
        "-c",
        "test -L /bin && cat /bin/debver && readlink /bin/perl-link /bin/python && "
        "/bin/python -e 'print qq(perl runs\\n)'",
    )
    lines = out.stdout.decode().split()
    assert lines[1:] == ["/usr/bin/perl", "python3", "perl", "runs"], lines
