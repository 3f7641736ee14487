"""Run one container to its end with ONE pipe as its stdout and stderr (a script, run by
``sandbox.run_step`` as ``python -I -S runwait.py STATUS PIDFILE LOG RUNTIME...``; stdlib only).
Without arguments it reads them from stdin (NUL-separated, up to its end), then takes
``/dev/null`` as stdin: started ahead of its step (``sandbox.Helper``), its start-up overlaps
what the caller prepares meanwhile; stdin ended without them, it ends having done nothing.

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

It is on the path of every step, so it starts small (~3 ms over Python's own start): one
thread, ``poll`` on the pipe and on process file descriptors (``pidfd_open``: Linux 5.3)
for the runtime's end and the container's, the runtime started with ``posix_spawn``;
neither ``subprocess``, ``threading``, ``signal`` (its enums) nor ``json`` (``re``) is loaded
unless the runtime failed.
"""

from __future__ import annotations

import ctypes
import os
import select
import sys

PR_SET_CHILD_SUBREAPER = 36
SIGINT, SIG_IGN = 2, 1  # Linux's numbers, on every architecture
HOLD_LIMIT = 1 << 20  # bytes held while the runtime starts the process (then it waits)
LOG_TAIL = 64 << 10  # bytes of the runtime's log read for its error
READ = 64 << 10
COMMAND_LIMIT = 1 << 20  # bytes of the arguments read from stdin


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _runtime_error(log: str) -> str:
    """The last error the runtime logged (JSON lines), else its last line."""
    import json  # the runtime failed: rare

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


def _hold(read_fd: int, runtime: int) -> tuple[int, list[bytes]]:
    """Until the runtime ends: what the pipe brings, held (at most ``HOLD_LIMIT`` bytes, then
    the pipe is left unread: its writer waits); the runtime's exit code and what was held."""
    runtime_fd = os.pidfd_open(runtime)
    poll = select.poll()
    poll.register(read_fd, select.POLLIN)
    poll.register(runtime_fd, select.POLLIN)
    held: list[bytes] = []
    size = 0
    try:
        ended = False
        while not ended:
            for fd, _event in poll.poll():
                if fd == runtime_fd:
                    ended = True
                    continue
                data = os.read(read_fd, READ)
                held.append(data)
                size += len(data)
                if not data or size >= HOLD_LIMIT:
                    poll.unregister(read_fd)
        _, wait_status = os.waitpid(runtime, 0)
    finally:
        os.close(runtime_fd)
    return os.waitstatus_to_exitcode(wait_status), held


def _pass_on(read_fd: int, pid: int) -> dict[str, object]:
    """The pipe copied to stdout until the container's process ``pid`` ended and the pipe
    did (the kernel kills the rest of its pid namespace when it ends); its exit status."""
    lost = {"runtime": -1, "error": "the step's process was not reparented here"}
    try:
        process_fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return lost
    try:  # its parent now, or never told of its end (reaped already: it cannot be another's)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        os.close(process_fd)
        return lost
    poll = select.poll()
    poll.register(read_fd, select.POLLIN)
    poll.register(process_fd, select.POLLIN)
    status: dict[str, object] | None = None
    try:
        while status is None:
            for fd, _event in poll.poll():
                if fd != process_fd:
                    data = os.read(read_fd, READ)
                    if data:
                        _write_all(1, data)
                    else:
                        poll.unregister(read_fd)
                    continue
                try:
                    _, wait_status = os.waitpid(pid, 0)
                except ChildProcessError:
                    return lost
                exit_code = os.waitstatus_to_exitcode(wait_status)
                status = {"exit": exit_code if exit_code >= 0 else 128 - exit_code}
                poll.unregister(process_fd)
                break
    finally:
        os.close(process_fd)
    # the container's init is gone: the kernel killed the rest of its pid namespace, so the
    # pipe ends when the last of them is gone
    while data := os.read(read_fd, READ):
        _write_all(1, data)
    return status


def _command() -> list[str]:
    """The arguments, from stdin (NUL-separated; empty: none); then stdin is /dev/null."""
    data = b""
    while chunk := os.read(0, COMMAND_LIMIT + 1 - len(data)):
        data += chunk
        if len(data) > COMMAND_LIMIT:
            raise SystemExit("runwait: the command is too long")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    return [os.fsdecode(a) for a in data.split(b"\0")] if data else []


def main(argv: list[str]) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal(SIGINT, ctypes.c_void_p(SIG_IGN))  # kept ignored by the runtime it starts
    argv = argv or _command()
    if not argv:  # not needed after all
        return 0
    status_path, pid_file, log, *cmd = argv
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        error = os.strerror(ctypes.get_errno())
        _write_status(status_path, {"runtime": -1, "error": f"PR_SET_CHILD_SUBREAPER: {error}"})
        return 0
    read_fd, write_fd = os.pipe()
    try:
        runtime = os.posix_spawn(
            cmd[0],
            cmd,
            os.environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, write_fd, 1), (os.POSIX_SPAWN_DUP2, write_fd, 2)],
        )
    finally:
        os.close(write_fd)
    code, held = _hold(read_fd, runtime)
    if code != 0:  # its own message, not the step's output: dropped
        os.close(read_fd)
        _write_status(status_path, {"runtime": code, "error": _runtime_error(log)})
        return 0
    for data in held:
        _write_all(1, data)
    with open(pid_file, "rb") as f:
        pid = int(f.read(64).strip())
    _write_status(status_path, _pass_on(read_fd, pid))
    return 0


def _write_status(path: str, status: dict[str, object]) -> None:
    exit_code = status.get("exit")
    if isinstance(exit_code, int) and len(status) == 1:
        text = f'{{"exit": {exit_code}}}'  # what json.dumps writes, without loading json
    else:
        import json  # the runtime failed: rare

        text = json.dumps(status)
    with open(path, "x") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
