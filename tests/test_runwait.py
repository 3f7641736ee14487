"""``build.runwait``, the helper every run step starts under, with a stand-in for the runtime
(a shell that does what ``runc run --detach`` does: writes the process's pid, leaves it
running detached, ends): the runtime's own output is held, then passed on before the step's
when it started the step, dropped when it failed; the step's exit status (a signal as 128 +
N) reaches STATUS from the process the helper reaped as subreaper. And the helper starts
small: it is on the path of every step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from ocikit.build import sandbox

RUNWAIT = str(Path(sandbox.__file__).with_name("runwait.py"))


def runwait(tmp_path: Path, runtime: str) -> tuple[bytes, dict[str, object]]:
    """Run the helper with ``sh -c RUNTIME`` as the runtime ($1: the pid file, $2: its log);
    what it wrote on stdout and STATUS."""
    status, pid, log = tmp_path / "status", tmp_path / "pid", tmp_path / "log"
    argv = [sys.executable, "-I", "-S", RUNWAIT, str(status), str(pid), str(log)]
    proc = subprocess.run(
        [*argv, "/bin/sh", "-c", runtime, "runtime", str(pid), str(log)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert proc.stderr == b""
    return proc.stdout, json.loads(status.read_bytes())


def test_the_step_s_output_and_exit_code(tmp_path: Path) -> None:
    step = "sleep 0.2; echo out; echo err >&2; echo more; exit 3"
    out, status = runwait(tmp_path, f"echo early; sh -c '{step}' & echo $! > $1")
    assert out == b"early\nout\nerr\nmore\n"
    assert status == {"exit": 3}


def test_a_step_killed_by_a_signal(tmp_path: Path) -> None:
    _out, status = runwait(tmp_path, "sh -c 'sleep 0.1; kill -9 $$' & echo $! > $1")
    assert status == {"exit": 128 + 9}


def test_the_runtime_failing_says_its_logged_error_not_its_output(tmp_path: Path) -> None:
    logged = '{"level":"info","msg":"starting"}\n{"level":"error","msg":"no such rootfs"}'
    out, status = runwait(tmp_path, f"echo its own noise; echo '{logged}' > $2; exit 1")
    assert out == b""
    assert status == {"runtime": 1, "error": "no such rootfs"}


def test_a_process_that_is_not_its_child(tmp_path: Path) -> None:
    _out, status = runwait(tmp_path, "echo 1 > $1")
    assert status == {"runtime": -1, "error": "the step's process was not reparented here"}


def test_it_starts_small() -> None:
    """Neither subprocess, threading, signal (enum) nor json (re) is loaded to run a step."""
    probe = (
        "import sys\n"
        f"with open({RUNWAIT!r}) as f:\n"
        "    exec(compile(f.read(), 'runwait.py', 'exec'), {'__name__': 'runwait'})\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], capture_output=True, check=True, text=True
    ).stdout.split()
    heavy = {"subprocess", "threading", "signal", "json", "re", "enum"} & set(loaded)
    assert not heavy, heavy


def test_started_ahead_its_command_from_stdin(tmp_path: Path) -> None:
    """Without arguments the helper reads them from stdin (NUL-separated, to its end), and
    the runtime gets /dev/null as stdin, not that pipe; stdin ended empty, it ends at once
    having run nothing."""
    status, pid, log = tmp_path / "status", tmp_path / "pid", tmp_path / "log"
    runtime = "sh -c 'read x; echo read:$?:$x' & echo $! > $1"
    argv = [str(status), str(pid), str(log), "/bin/sh", "-c", runtime, "rt", str(pid)]
    proc = subprocess.run(
        [sys.executable, "-I", "-S", RUNWAIT],
        input=b"\0".join(a.encode() for a in argv),
        capture_output=True,
        timeout=60,
        check=True,
    )
    assert proc.stdout == b"read:1:\n"  # end of file at once: /dev/null
    assert json.loads(status.read_bytes()) == {"exit": 0}
    idle = subprocess.run(
        [sys.executable, "-I", "-S", RUNWAIT], input=b"", capture_output=True, timeout=60
    )
    assert (idle.returncode, idle.stdout, idle.stderr) == (0, b"", b"")
