"""Run the ``ocikit`` command line in this process (for property tests and tests that set
module constants such as deadlines), with real UTF-8 byte streams as stdout and stderr."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

from ocikit.cli.main import main


@dataclass(frozen=True)
class Result:
    code: int
    stdout: bytes
    stderr: str


def run(*args: str) -> Result:
    """``ocikit ARGS`` through ``main`` (the same exception handling and exit codes)."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)
    err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="replace", write_through=True)
    code: int | str | None = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as e:
            code = e.code
    assert isinstance(code, int), f"exit code {code!r}"
    stdout = out.buffer.getvalue()  # type: ignore[attr-defined]
    stderr = err.buffer.getvalue().decode()  # type: ignore[attr-defined]
    return Result(code, stdout, stderr)


def assert_one_line(result: Result, *, code: int = 2, contains: str | None = None) -> str:
    """Exit ``code`` with exactly one non-empty line on stderr and no traceback."""
    err = result.stderr
    assert result.code == code, f"exit {result.code}, want {code}; stderr: {err!r}"
    assert "Traceback" not in err, err
    assert err.endswith("\n") and err.count("\n") == 1 and err.strip(), f"not one line: {err!r}"
    if contains is not None:
        assert contains.lower() in err.lower(), f"{contains!r} not in {err!r}"
    return err.strip()
