"""The command line: parse arguments, call the library, render text, JSON and progress."""

from __future__ import annotations

import sys
from typing import NoReturn


def run() -> NoReturn:
    """The console script. The command line loads first (0.05 s; a command loads its
    operation when it runs); a Ctrl-C meanwhile ends it with one line and exit 130, like one
    during the work, never with a traceback."""
    # httpx imports its own command line whenever click and rich are installed (click, rich
    # and pygments: ~60 ms of every registry or engine command); ocikit never runs it, so
    # this process, ocikit's own, does without (httpx then defines a stub in its place).
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    try:
        from .main import main
    except KeyboardInterrupt:
        sys.stderr.write("ocikit: interrupted\n")
        sys.exit(130)
    try:
        main()
    except SystemExit as e:
        leave(e.code)


def leave(code: str | int | None) -> NoReturn:
    """End the process with ``code`` once the command is over, without the interpreter's
    teardown of every module: with the registry client loaded that teardown takes ~17 ms,
    15% of a re-push, and frees memory the kernel frees anyway.

    Everything a normal exit does that anyone can see is still done: the handlers
    registered with :mod:`atexit` run (temporary directories' finalizers, coverage), then
    standard output and error are flushed; a failed flush is said in one line, as a failed
    write during the command is. A thread still running (none should be) gets the
    interpreter's usual exit, which waits for it."""
    import os
    import threading

    this = threading.main_thread()
    working = [t for t in threading.enumerate() if t is not this and not t.daemon]
    if working or not isinstance(code, int):
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    code = _flushed(code)
    os._exit(code)


def _flushed(code: int) -> int:
    """``code``, once standard output and error are flushed: a standard output whose reader
    went away makes it 141 (as a broken pipe during the command does), one that cannot be
    written 2, said in one line."""
    import errno

    from .main import BROKEN_PIPE

    line = ""
    try:
        if sys.stdout is not None:
            sys.stdout.flush()
    except OSError as e:
        if e.errno == errno.EPIPE:
            code = code or BROKEN_PIPE
        else:
            from ..tempfiles import describe

            line = f"ocikit: error: standard output: {describe(e)}\n"
            code = code or 2
    try:  # a standard error that cannot be written is ignored, as at any exit
        if sys.stderr is not None:
            sys.stderr.write(line)
            sys.stderr.flush()
    except (OSError, ValueError):
        pass
    return code
