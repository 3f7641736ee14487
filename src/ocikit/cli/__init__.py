"""The command line: parse arguments, call the library, render text, JSON and progress."""

from __future__ import annotations

import sys


def run() -> None:
    """The console script. The command line loads first (0.05 s; a command loads its
    operation when it runs); a Ctrl-C meanwhile ends it with one line and exit 130, like one
    during the work, never with a traceback. It ends the process (``_leave``): call ``main``
    to run the command line inside a process that goes on."""
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
        if e.code is None or isinstance(e.code, int):
            _leave(e.code or 0)
        raise


def _leave(code: int) -> None:
    """End the process as Python ends it (the threads it waits for joined, the exit
    handlers run, standard output and error flushed, the exit code kept), without the
    teardown that frees every module and object one by one (20-40 ms of a command that
    loaded httpx or the build engine; the process's end frees them at once). Anything
    unexpected on the way: the caller's ``sys.exit``, Python's own way."""
    import atexit
    import os
    import threading

    shutdown = getattr(threading, "_shutdown", None)  # what Python's exit runs first
    if shutdown is None or threading.current_thread() is not threading.main_thread():
        return
    try:
        shutdown()
        atexit._run_exitfuncs()
        atexit._clear()  # run once, whatever follows
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except BaseException:  # a flush to a closed pipe, an interrupt: Python says it its way
        return
    os._exit(code)
