"""Standard output as a user's shell uses it: a reader that goes away (``| head -c 100``)
ends the command quietly with the shell's status for a broken pipe (141, as if killed by
SIGPIPE), never ``1`` (``check``'s "problems found"), never a traceback."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from support.cli import OCIKIT
from support.layouts import write_layout


@pytest.fixture(scope="module")
def big_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An image larger than a pipe's buffer."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = os.urandom(1 << 20)
        info = tarfile.TarInfo("big")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    where = tmp_path_factory.mktemp("streams") / "layout"
    write_layout(where, [buf.getvalue()], ref="big")
    return where


@pytest.mark.parametrize("dest", ["docker-archive:-", "oci-archive:-"])
def test_a_reader_that_goes_away(big_layout: Path, dest: str) -> None:
    writer = subprocess.Popen(
        [*OCIKIT, "copy", "-q", f"oci:{big_layout}:big", dest],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert writer.stdout is not None and writer.stderr is not None
    writer.stdout.read(100)
    writer.stdout.close()  # as `head -c 100` does
    err = writer.stderr.read()
    assert writer.wait(timeout=60) == 141
    assert err == b""
