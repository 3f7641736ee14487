"""The console script leaves without the interpreter's teardown (``ocikit.cli.leave``), and
still does all a normal exit does that anyone can see: the ``atexit`` handlers run, standard
output and error are flushed (a failed flush said in one line), a thread still running is
waited for, the exit code is the command's.

Each case runs in a child process: ``leave`` ends the process it runs in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.layouts import file, tar_bytes, write_layout

_LEAVE = (
    "import atexit, sys, threading, time\n"
    "from ocikit.cli import leave\n"
    "mark = sys.argv[1]\n"
    "atexit.register(lambda: open(mark, 'a').write('atexit\\n'))\n"
    "{before}\n"
    "sys.stdout.write('x' * 1000)  # buffered: written only by the flush\n"
    "sys.stderr.write('said')\n"
    "leave({code})\n"
)


def _leave(
    tmp_path: Path, code: object = 0, before: str = "", stdout: int | None = subprocess.PIPE
) -> tuple[subprocess.CompletedProcess[bytes], str]:
    mark = tmp_path / "mark"
    script = _LEAVE.format(before=before, code=repr(code))
    proc = subprocess.run(
        [sys.executable, "-c", script, str(mark)],
        stdout=stdout,
        stderr=subprocess.PIPE,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": ""},
    )
    return proc, mark.read_text() if mark.exists() else ""


@pytest.mark.parametrize("code", [0, 1, 2, 130])
def test_leave_runs_exit_handlers_flushes_and_exits_with_the_code(
    tmp_path: Path, code: int
) -> None:
    proc, mark = _leave(tmp_path, code)
    assert proc.returncode == code
    assert proc.stdout == b"x" * 1000
    assert proc.stderr == b"said"
    assert mark == "atexit\n"


def test_leave_waits_for_a_thread_still_running(tmp_path: Path) -> None:
    before = (
        "def work():\n"
        "    time.sleep(0.3)\n"
        "    open(mark, 'a').write('thread\\n')\n"
        "threading.Thread(target=work).start()"
    )
    proc, mark = _leave(tmp_path, 1, before)
    assert proc.returncode == 1
    assert mark == "thread\natexit\n"  # as the interpreter orders them: threads first


@pytest.mark.parametrize("code", [None, "bye"])
def test_leave_with_no_number_exits_as_python_does(tmp_path: Path, code: object) -> None:
    proc, mark = _leave(tmp_path, code)
    assert proc.returncode == (0 if code is None else 1)
    assert proc.stderr == (b"said" if code is None else b"saidbye\n")
    assert mark == "atexit\n"


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_leave_says_a_standard_output_it_could_not_write(tmp_path: Path) -> None:
    with open("/dev/full", "wb") as full:
        proc, mark = _leave(tmp_path, 0, stdout=full.fileno())
    assert proc.returncode == 2
    assert proc.stderr == b"saidocikit: error: standard output: no space left on device\n"
    assert mark == "atexit\n"


def test_leave_exits_as_a_broken_pipe_when_standard_output_went_away(tmp_path: Path) -> None:
    read, write = os.pipe()
    os.close(read)
    try:
        proc, _ = _leave(tmp_path, 0, stdout=write)
    finally:
        os.close(write)
    assert proc.returncode == 141
    assert proc.stderr == b"said"


def test_the_console_script_leaves_with_its_output_whole(tmp_path: Path) -> None:
    """``python -m ocikit`` (what the console script runs): JSON a pipe reads whole, exit 0;
    a usage error's line and exit 2."""
    write_layout(tmp_path / "oci", [tar_bytes([file("a", b"a")])], ref="t")
    ok = subprocess.run(
        [sys.executable, "-m", "ocikit", "inspect", "--json", f"oci:{tmp_path / 'oci'}:t"],
        capture_output=True,
        timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(b"{") and ok.stdout.endswith(b"}\n")
    bad = subprocess.run(
        [sys.executable, "-m", "ocikit", "copy", "oci:x"], capture_output=True, timeout=60
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith(b"ocikit: error: ") and bad.stderr.count(b"\n") == 1
