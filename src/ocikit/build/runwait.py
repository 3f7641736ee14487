"""Run one container to its end with ONE pipe as its stdout and stderr (a script, run by
``sandbox.run_step`` as ``python -I -S runwait.py STATUS PIDFILE LOG RUNTIME...``; stdlib only).

``runc run`` in the foreground makes a pipe of its own for each of the process's stdout and
stderr and copies them to its own with two goroutines: what a step writes to both arrives in
another order each time. Detached (``run --detach``), the runtime gives the process its own
stdio, as it is: here one pipe, as fd 1 and fd 2, so the order is the order of the writes.

A detached container is no longer the runtime's child: this process makes itself a child
subreaper (``PR_SET_CHILD_SUBREAPER``), so the container's process is reparented to it when
the runtime exits, and waits for it to get its exit status. The runtime's own messages go to
its log (``--log LOG``); what it prints on the pipe before the process started (its error,
when it could not start it) is held here, not passed on: the step's output is only what the
step wrote. What happened is written to STATUS as JSON: ``{"exit": N}`` (128 + the signal
for a process killed), or ``{"runtime": N, "error": "..."}`` when the runtime failed.

SIGINT is ignored: on an interruption the caller deletes the container (``runc delete
--force``), and this process reaps it and ends.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading

PR_SET_CHILD_SUBREAPER = 36
HOLD_LIMIT = 1 << 20  # bytes held while the runtime starts the process (then it waits)
LOG_TAIL = 64 << 10  # bytes of the runtime's log read for its error


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class _Pump:
    """Copies the pipe to stdout: holds it until the runtime started the process, then
    passes it on (``start``) or drops it (``drop``: the runtime's own message)."""

    def __init__(self, read_fd: int) -> None:
        self.fd = read_fd
        self.mode = "hold"
        self.held: list[bytes] = []
        self.size = 0
        self.cond = threading.Condition()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while data := os.read(self.fd, 64 << 10):
                with self.cond:
                    while self.mode == "hold" and self.size >= HOLD_LIMIT:
                        self.cond.wait()
                    if self.mode == "hold":
                        self.held.append(data)
                        self.size += len(data)
                        continue
                    if self.mode == "drop":
                        continue
                _write_all(1, data)
        except OSError:  # the reader went away (interrupted): the container is deleted
            pass

    def start(self) -> None:
        with self.cond:
            for data in self.held:
                _write_all(1, data)
            self.held, self.mode = [], "pass"
            self.cond.notify_all()

    def drop(self) -> None:
        with self.cond:
            self.held, self.mode = [], "drop"
            self.cond.notify_all()


def _runtime_error(log: str) -> str:
    """The last error the runtime logged (JSON lines), else its last line."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - LOG_TAIL))
            text = f.read(LOG_TAIL).decode("utf-8", "replace")
    except OSError:
        return ""
    found = ""
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            found = line.strip() or found
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
            found = str(entry.get("msg", ""))
    return found


def main(argv: list[str]) -> int:
    status_path, pid_file, log, *cmd = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        error = os.strerror(ctypes.get_errno())
        status: dict[str, object] = {"runtime": -1, "error": f"PR_SET_CHILD_SUBREAPER: {error}"}
        _write_status(status_path, status)
        return 0
    read_fd, write_fd = os.pipe()
    pump = _Pump(read_fd)
    try:
        runtime = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=write_fd, stderr=write_fd)
    finally:
        os.close(write_fd)
    code = runtime.wait()
    if code != 0:
        pump.drop()
        pump.thread.join(10)
        _write_status(status_path, {"runtime": code, "error": _runtime_error(log)})
        return 0
    pump.start()
    with open(pid_file, "rb") as f:
        pid = int(f.read(64).strip())
    while True:
        try:
            got, wait_status = os.waitpid(-1, 0)
        except ChildProcessError:  # reaped already: it cannot be another's
            status = {"runtime": -1, "error": "the step's process was not reparented here"}
            break
        if got == pid:
            exit_code = os.waitstatus_to_exitcode(wait_status)
            status = {"exit": exit_code if exit_code >= 0 else 128 - exit_code}
            break
    # the container's init is gone: the kernel killed the rest of its pid namespace, so the
    # pipe ends when the last of them is gone
    pump.thread.join()
    _write_status(status_path, status)
    return 0


def _write_status(path: str, status: dict[str, object]) -> None:
    with open(path, "x") as f:
        json.dump(status, f)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
