"""Run the ``ocikit`` command line as a user would: a subprocess, from files and real pipes."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

OCIKIT = [sys.executable, "-m", "ocikit"]
TIMEOUT = 600


def ocikit(
    *args: str,
    stdin: IO[bytes] | int | None = None,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """``ocikit ARGS``; stdout and stderr captured. ``input`` goes through a real pipe."""
    return subprocess.run(
        [*OCIKIT, *args],
        stdin=stdin if input is None else None,
        input=input,
        capture_output=True,
        env=None if env is None else {**os.environ, **env},
        cwd=cwd,
        timeout=TIMEOUT,
    )


def ok(*args: str, **kw) -> subprocess.CompletedProcess[bytes]:
    """``ocikit ARGS`` that must succeed."""
    proc = ocikit(*args, **kw)
    assert proc.returncode == 0, f"ocikit {' '.join(args)}: {proc.stderr.decode(errors='replace')}"
    return proc


def ocikit_from_pipe(
    producer: Sequence[str],
    *args: str,
    producer_env: Mapping[str, str] | None = None,
    tee: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """``PRODUCER | ocikit ARGS`` (or ``PRODUCER | tee FILE | ocikit ARGS``) through real pipes.

    The producer must succeed unless ocikit failed (then it may die of SIGPIPE).
    """
    prod = subprocess.Popen(producer, stdout=subprocess.PIPE, env=producer_env)
    assert prod.stdout is not None
    feed: IO[bytes] = prod.stdout
    middle = None
    if tee is not None:
        middle = subprocess.Popen(["tee", str(tee)], stdin=feed, stdout=subprocess.PIPE)
        feed.close()
        assert middle.stdout is not None
        feed = middle.stdout
    try:
        proc = ocikit(*args, stdin=feed, env=env)
    finally:
        feed.close()
        if middle is not None:
            middle.wait(timeout=TIMEOUT)
        prod.wait(timeout=TIMEOUT)
    if proc.returncode == 0:
        assert prod.returncode == 0, f"{' '.join(producer)} failed with {prod.returncode}"
    return proc


def assert_one_line_error(
    proc: subprocess.CompletedProcess[bytes], *, contains: str | None = None, code: int = 2
) -> str:
    """Exit ``code``, exactly one non-empty line on stderr, no traceback. Returns the line."""
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == code, f"exit {proc.returncode}, want {code}; stderr: {err!r}"
    assert "Traceback" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1 and err.strip(), f"not one line: {err!r}"
    if contains is not None:
        assert contains.lower() in err.lower(), f"{contains!r} not in {err!r}"
    return err.strip()


def assert_recipe_errors(proc: subprocess.CompletedProcess[bytes], *, code: int = 2) -> list[str]:
    """Exit ``code``, no traceback, a recipe's errors as ocikit lists several: the line
    ``ocikit: error: RECIPE: N errors:``, then N lines, each ``  path: message``. Returns
    the problems (without the indent)."""
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == code, f"exit {proc.returncode}, want {code}; stderr: {err!r}"
    assert "Traceback" not in err, err
    first, *rest = err.splitlines()
    assert err.endswith("\n") and first.startswith("ocikit: error: "), err
    assert first.endswith(f": {len(rest)} errors:") and len(rest) > 1, f"not a list: {err!r}"
    assert all(line.startswith("  ") and line[2:].strip() for line in rest), err
    return [line[2:] for line in rest]
