"""The command line: parse arguments, call the library, render text, JSON and progress."""

from __future__ import annotations

import sys


def run() -> None:
    """The console script. The command line loads first (0.05 s; a command loads its
    operation when it runs); a Ctrl-C meanwhile ends it with one line and exit 130, like one
    during the work, never with a traceback."""
    try:
        from .main import main
    except KeyboardInterrupt:
        sys.stderr.write("ocikit: interrupted\n")
        sys.exit(130)
    main()
