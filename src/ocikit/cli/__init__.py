"""The command line: parse arguments, call the library, render text, JSON and progress."""

from __future__ import annotations

import sys


def run() -> None:
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
    main()
