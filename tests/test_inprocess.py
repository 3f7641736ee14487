"""``support.inprocess``, the in-process runner most tests judge the command line with, says
what the command says as a process: the same exit code, stdout and stderr; and it leaves this
process as it found it (signal handlers, environment, temporary directory, working
directory)."""

from __future__ import annotations

import os
import signal
import tempfile
from pathlib import Path

import pytest

from support import cli, inprocess
from support.archives import SAMPLE


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["frobnicate"],
        ["check", "nope:x"],
        ["inspect", f"docker-archive:{SAMPLE}"],
        ["copy", f"docker-archive:{SAMPLE}", "oci:"],
    ],
    ids=lambda a: " ".join(a)[:40],
)
def test_in_this_process_as_in_a_process(args: list[str]) -> None:
    process, here = cli.ocikit(*args), inprocess.ocikit(*args)
    assert (here.returncode, here.stdout, here.stderr) == (
        process.returncode,
        process.stdout,
        process.stderr,
    )


def test_a_run_leaves_the_signal_handlers_as_they_were() -> None:
    """``main`` ignores SIGINT and SIGTERM once its command is over (the process exits next);
    in this process that would leave pytest deaf to Ctrl-C, and its children born ignoring
    SIGINT."""
    before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
    inprocess.run("--version")
    inprocess.ocikit("frobnicate")
    assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == before


def test_a_run_has_its_environment_and_directory_only_while_it_runs(tmp_path: Path) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    (tmp_path / "l").mkdir()  # not a layout: the copy fails
    (tmp_path / "l" / "precious.txt").write_text("mine")
    cwd, env_tmp, cached = os.getcwd(), os.environ.get("TMPDIR"), tempfile.tempdir
    proc = inprocess.ocikit(
        "copy",
        "-q",
        f"docker-archive:{SAMPLE}",
        "oci:l:t",
        env={"TMPDIR": str(tmpdir)},
        cwd=tmp_path,
    )
    cli.assert_one_line_error(proc, contains="l")
    assert (os.getcwd(), os.environ.get("TMPDIR"), tempfile.tempdir) == (cwd, env_tmp, cached)
    assert os.listdir(tmp_path / "l") == ["precious.txt"] and os.listdir(tmpdir) == []
