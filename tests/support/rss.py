"""Run ``ocikit`` as a real process and measure its peak resident memory.

``wait4``'s ``ru_maxrss`` counts the forked child before ``exec`` (a copy of the test
process's size), so the child reports its own high-water mark (``VmHWM`` of
``/proc/self/status``, which starts afresh at ``exec``) at exit, to a file."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

_WRAPPER = """
import atexit, sys
def _report(path=sys.argv.pop(1)):
    with open("/proc/self/status") as f:
        hwm = next(line for line in f if line.startswith("VmHWM:"))
    with open(path, "w") as out:
        out.write(hwm.split()[1])
atexit.register(_report)
from ocikit.cli.main import main
main(sys.argv[1:])
"""


def run_measured(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, int]:
    """``ocikit ARGS``: exit code, stderr, peak RSS in MiB."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "hwm"
        proc = subprocess.run(
            [sys.executable, "-c", _WRAPPER, str(report), *args],
            capture_output=True,
            env=None if env is None else {**os.environ, **env},
            timeout=600,
        )
        peak_kib = int(report.read_text()) if report.exists() else 0
    return proc.returncode, proc.stderr.decode(errors="replace"), peak_kib // 1024
