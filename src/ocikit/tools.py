"""The tools ocikit runs (mksquashfs, unsquashfs, runc): what they print is read in bounded
pieces and quoted, and a tool that stops working is stopped.

- ``run``: stdout and stderr are read as they come, 64 KiB at a time; only the last
  ``TAIL`` bytes of each are kept, for the error message (``ToolResult.message``: the last
  line, escaped, one line). A tool that prints 100 MB costs 128 KiB.
- Stalls: a tool that for ``IDLE`` seconds uses no CPU, reads and writes nothing
  (``/proc/PID/stat``, ``/proc/PID/io``; its waited-for children's CPU too) and prints
  nothing is killed, with its process group, and so is one still running after ``timeout``
  (when the caller gives one): ``InputError``, one line.
- ``environment``: every tool ocikit runs (mksquashfs, unsquashfs, mount, umount, the
  runtime of run steps) gets this fixed environment, never the user's, and the umask
  ``UMASK``: what a tool does cannot depend on the caller's shell (``SOURCE_DATE_EPOCH``,
  which mksquashfs refuses beside ``-mkfs-time``; ``LANG``, ``TZ``, ``TMPDIR``;
  ``NOTIFY_SOCKET``, which runc would hand to the container).
- ``lines``: a stream split into lines as a terminal shows them (LF, CRLF and a lone CR end
  a line), each escaped (``jsondoc.printable``: no control character reaches the terminal)
  and cut at ``LINE_LIMIT`` bytes; the rest of a longer line is counted, never held.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from .errors import InputError
from .model.jsondoc import printable

READ = 64 << 10  # bytes read from a pipe at once
TAIL = 64 << 10  # bytes of each output kept for the message
LINE_LIMIT = 16 << 10  # bytes of one output line shown
MAX_INPUT = 16 << 10  # bytes of standard input ``run`` gives (a pipe holds 64 KiB)
IDLE = 120.0  # seconds a tool may go without any sign of work
POLL = 1.0  # seconds between looks at its CPU and I/O counters
_EOL = re.compile(rb"\r\n|\r|\n")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
UMASK = 0o022


def environment() -> dict[str, str]:
    """The whole environment of a tool ocikit runs: the system's PATH, the C locale, UTC.
    Nothing else: no ``SOURCE_DATE_EPOCH`` (ocikit passes the epoch as an option), no
    ``TMPDIR`` (none of these tools writes temporary files)."""
    return {"PATH": SYSTEM_PATH, "LC_ALL": "C", "TZ": "UTC0"}


@dataclass(frozen=True)
class ToolResult:
    code: int
    stdout: bytes  # the last TAIL bytes
    stderr: bytes  # the last TAIL bytes

    def message(self) -> str:
        """The last line the tool printed (stderr, else stdout), escaped; one line."""
        for data in (self.stderr, self.stdout):
            text = data.decode("utf-8", "surrogateescape")
            lines = [line for line in text.split("\n") if line.strip()]
            if lines:
                return printable(lines[-1].strip(), 300)
        return "no message"


def run(
    cmd: Sequence[str],
    name: str,
    *,
    timeout: float | None = None,
    cwd: str | os.PathLike[str] | None = None,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> ToolResult:
    """Run ``cmd`` (the tool ``name``, in ``cwd``) to its end; its exit code and the tails of
    its output. ``InputError`` if it stalls for ``IDLE`` s or runs past ``timeout`` s: it is
    killed. ``input``: its whole standard input (at most ``MAX_INPUT`` bytes: a pipe holds
    them, so writing never waits for the tool); else it has none. ``env``: instead of
    ``environment()`` (a credential helper needs the user's, for a keyring)."""
    if input is not None and len(input) > MAX_INPUT:
        raise ValueError(f"{name}: input over {MAX_INPUT} bytes")
    proc = subprocess.Popen(
        list(cmd),
        cwd=cwd,
        stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=environment() if env is None else dict(env),
        umask=UMASK,
        start_new_session=True,  # its own process group: killed whole
    )
    if proc.stdin is not None:
        with contextlib.suppress(BrokenPipeError):  # it may exit without reading
            proc.stdin.write(input or b"")
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    tails = {out_fd: bytearray(), err_fd: bytearray()}
    started = last_sign = looked = time.monotonic()
    usage = _usage(proc.pid)
    try:
        with selectors.DefaultSelector() as selector:
            for fd in tails:
                os.set_blocking(fd, False)
                selector.register(fd, selectors.EVENT_READ)
            while selector.get_map() or proc.poll() is None:
                if selector.get_map():
                    for key, _ in selector.select(POLL):
                        data = _read(key.fd)
                        if data is None:
                            continue
                        if not data:
                            selector.unregister(key.fd)
                            continue
                        tail = tails[key.fd]
                        tail += data
                        del tail[:-TAIL]
                        last_sign = time.monotonic()
                else:  # both outputs closed, the tool still running
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(POLL)
                now = time.monotonic()
                if timeout is not None and now - started > timeout:
                    raise InputError(f"{name} took more than {timeout:g} s; stopped")
                if now - looked < POLL:
                    continue
                looked = now
                current = _usage(proc.pid)
                if current != usage:
                    usage, last_sign = current, now
                elif now - last_sign > IDLE:
                    raise InputError(f"{name} stopped: no progress for {IDLE:g} s (killed)")
        code = proc.wait()
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    return ToolResult(code, bytes(tails[out_fd]), bytes(tails[err_fd]))


def _read(fd: int) -> bytes | None:
    """What the pipe has (b"" at its end); None if nothing after all."""
    try:
        return os.read(fd, READ)
    except BlockingIOError:
        return None


def _usage(pid: int) -> tuple[int, ...]:
    """Signs of work of ``pid``: its CPU time (and its waited-for children's), the bytes it
    read and wrote; () where /proc does not say."""
    out: list[int] = []
    with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
        out += [int(x) for x in fields[11:15]]  # utime, stime, cutime, cstime
    with contextlib.suppress(OSError, ValueError), open(f"/proc/{pid}/io", "rb") as f:
        out += [int(line.split()[1]) for line in f.read().splitlines()[:2]]  # rchar, wchar
    return tuple(out)


def lines(read: Callable[[], bytes], limit: int = LINE_LIMIT) -> Iterator[str]:
    """The lines of what ``read`` returns (b"" at the end), as ``printable`` text: LF, CRLF
    and CR end a line (a CR that would redraw a line shows as a new one); a line longer than
    ``limit`` bytes is cut, its length said."""
    pending = bytearray()
    total = 0  # bytes of the pending line, shown or not
    after_cr = False
    while chunk := read():
        if after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        after_cr = chunk.endswith(b"\r")
        start = 0
        for match in _EOL.finditer(chunk):
            piece = chunk[start : match.start()]
            pending += piece[: max(0, limit - len(pending))]
            yield _line(pending, total + len(piece), limit)
            pending.clear()
            total = 0
            start = match.end()
        rest = chunk[start:]
        pending += rest[: max(0, limit - len(pending))]
        total += len(rest)
    if total:
        yield _line(pending, total, limit)


def _line(head: bytearray, total: int, limit: int) -> str:
    text = bytes(head).decode("utf-8", "surrogateescape")
    return printable(text, limit, total=total, unit="bytes")
