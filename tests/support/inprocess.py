"""Run the ``ocikit`` command line in this process, through ``main`` (the same exception
handling, messages and exit codes as the command), with real UTF-8 byte streams as stdout and
stderr.

``run`` gives a ``Result``; ``ocikit`` and ``ok`` are drop-in replacements for
``support.cli``'s (a ``CompletedProcess``, so ``support.cli.assert_one_line_error`` judges it
the same way): a test that judges what a command decides, not how a process behaves, runs in
milliseconds instead of a second. What only a process shows stays with ``support.cli``:
stdin and stdout as pipes or files (``-``), signals, a terminal, start-up, leftovers of a
killed process.

Each run is made to look like a fresh process: the environment given is set for the run only
(``TMPDIR`` included: Python's cached temporary directory is forgotten), ``ocikit``'s
per-process state is reset (its first private directory reclaims leftovers again, no
interrupt counted, ``--debug`` off), and the SIGINT and SIGTERM handlers ``main`` installs
(and leaves ignored when it ends) are put back as they were.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ocikit import tempfiles
from ocikit.cli.main import _debug, _signals, main


@dataclass(frozen=True)
class Result:
    code: int
    stdout: bytes
    stderr: str


@contextlib.contextmanager
def _fresh_process(env: Mapping[str, str] | None, cwd: Path | None) -> Iterator[None]:
    saved_env = {k: os.environ.get(k) for k in env or {}}
    saved_tempdir = tempfile.tempdir
    saved_cwd = os.getcwd() if cwd is not None else None
    saved_signals = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    saved_reclaimed = tempfiles._reclaimed_tmp
    try:
        os.environ.update(env or {})
        tempfile.tempdir = None  # $TMPDIR is read again, as a new process reads it
        tempfiles._reclaimed_tmp = False
        _signals.update(count=0, said=0, finished=0)
        _debug["on"] = False
        if cwd is not None:
            os.chdir(cwd)
        yield
    finally:
        if saved_cwd is not None:
            os.chdir(saved_cwd)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        tempfile.tempdir = saved_tempdir
        tempfiles._reclaimed_tmp = saved_reclaimed
        _signals.update(count=0, said=0, finished=0)
        _debug["on"] = False
        for signum, handler in saved_signals.items():
            signal.signal(signum, handler)


def _main(args: tuple[str, ...], env: Mapping[str, str] | None, cwd: Path | None) -> Result:
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace", write_through=True)
    code: int | str | None = 0
    with _fresh_process(env, cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code
    assert isinstance(code, int), f"exit code {code!r}"
    stdout = out.buffer.getvalue()  # type: ignore[attr-defined]
    stderr = err.buffer.getvalue().decode()  # type: ignore[attr-defined]
    return Result(code, stdout, stderr)


def run(*args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Result:
    """``ocikit ARGS`` through ``main``; ``env`` is added to the environment for the run."""
    return _main(args, env, cwd)


def ocikit(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``support.cli.ocikit`` in this process: stdout and stderr as bytes, the exit code."""
    result = _main(args, env, cwd)
    return subprocess.CompletedProcess(
        ["ocikit", *args], result.code, result.stdout, result.stderr.encode()
    )


def ok(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``ocikit ARGS`` in this process that must succeed (``support.cli.ok``)."""
    proc = ocikit(*args, env=env, cwd=cwd)
    assert proc.returncode == 0, f"ocikit {' '.join(args)}: {proc.stderr.decode(errors='replace')}"
    return proc


def assert_one_line(result: Result, *, code: int = 2, contains: str | None = None) -> str:
    """Exit ``code`` with exactly one non-empty line on stderr and no traceback."""
    err = result.stderr
    assert result.code == code, f"exit {result.code}, want {code}; stderr: {err!r}"
    assert "Traceback" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1 and err.strip(), f"not one line: {err!r}"
    if contains is not None:
        assert contains.lower() in err.lower(), f"{contains!r} not in {err!r}"
    return err.strip()
