"""The one way a blob is written to a file: ``TempBlob``.

A blob is written to a temporary file in a private directory (``ocikit.tempfiles``: locked
while its writer lives, reclaimed if the process dies), its bytes counted. ``commit(digest)``
hands the file on (``store``: renamed into an OCI layout, staged for an archive, uploaded);
``abort`` removes it. The digest is the one the writing pipeline computed over the very bytes
it wrote (``transcode``'s output hash, a ``HashingReader``, ``Digest.of``): a second hash
here would cost every copy about 8 % more CPU and prove nothing more.

A durable blob (an OCI layout's, an export's) is flushed at ``commit``, then fsynced and
stored on the process's one I/O thread, while the next blob is written: ``Durability``
collects an owner's pending work, and its owner waits for all of it (``wait``) before it
names any of those blobs (replaces ``index.json``, publishes an export). The fsync comes
before the rename, so a blob that is in place is on disk. Nobody may wait for the I/O thread
while holding a lock that work on it takes (a layout's ``flock``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from ..errors import DestinationError, OcikitError
from ..layer.streams import CHUNK
from ..model import Digest
from .base import BlobWriter
from .fsutil import GuardedFile, write_error

#: what a committed blob's file is handed to: (path, digest, size)
Store = Callable[[str, Digest, int], None]

_io: ThreadPoolExecutor | None = None
_io_lock = threading.Lock()


def _io_thread() -> ThreadPoolExecutor:
    """The process's one thread for fsyncs (and the renames after them)."""
    global _io
    with _io_lock:
        if _io is None:
            _io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ocikit-fsync")
        return _io


class Durability:
    """One owner's blobs on their way to disk (fsync, then ``store``) on the I/O thread."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._pending: list[Future[None]] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[[], None]) -> None:
        future = _io_thread().submit(fn)
        with self._lock:
            self._pending.append(future)

    def wait(self) -> None:
        """Wait for every blob submitted so far; the first failure is raised, in one line."""
        with self._lock:
            pending, self._pending = self._pending, []
        errors = [f.exception() for f in pending]
        for e in errors:
            if isinstance(e, OcikitError):
                raise e
            if isinstance(e, OSError):
                raise write_error(self.what, e) from e
            if e is not None:
                raise DestinationError(f"{self.what}: cannot write a blob: {e}") from e

    def settle(self) -> None:
        """Wait for every blob submitted so far, whatever became of them (to clean up)."""
        with contextlib.suppress(Exception):
            self.wait()


class _CountedFile(GuardedFile):
    """The temporary file: what is written is counted on the way."""

    def __init__(self, fd: int, what: str) -> None:
        super().__init__(os.fdopen(fd, "wb", buffering=CHUNK), what)
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        n = super().write(data)
        self.size += n
        return n


class TempBlob(BlobWriter):
    """A blob written to a temporary file in ``directory`` (a private one); see the module.

    ``store`` takes the file at ``commit`` (it may rename it; else the file stays at ``path``
    for its owner); with ``durable`` the file is fsynced first, and both happen on the I/O
    thread."""

    def __init__(
        self,
        directory: str,
        what: str,
        store: Store | None = None,
        *,
        durable: Durability | None = None,
        prefix: str = "blob-",
    ) -> None:
        self.what = what
        self._store = store
        self._durable = durable
        try:
            fd, self.path = tempfile.mkstemp(dir=directory, prefix=prefix)
        except OSError as e:
            raise write_error(what, e) from None
        try:
            os.fchmod(fd, 0o644)  # blobs are world-readable, as every OCI tool writes them
        except OSError as e:
            os.close(fd)
            self._unlink()
            raise write_error(what, e) from None
        self._file = _CountedFile(fd, what)
        self.file = self._file  # type: ignore[assignment]

    @property
    def size(self) -> int:
        """The bytes written so far."""
        return self._file.size

    def _commit(self, digest: Digest) -> None:
        if self._durable is None:
            self._file.close()
            self._stored(digest)
            return
        self._file.flush()  # now: the I/O thread never touches the buffer
        self._durable.submit(lambda: self._finish(digest))

    def _finish(self, digest: Digest) -> None:
        """On the I/O thread: fsync, then store (never the other way round)."""
        try:
            os.fsync(self._file.fileno())
        except OSError as e:
            self._abort()
            raise write_error(self.what, e) from None
        self._file.close()
        self._stored(digest)

    def _stored(self, digest: Digest) -> None:
        if self._store is None:
            return
        try:
            self._store(self.path, digest, self._file.size)
        except BaseException:
            self._unlink()
            raise

    def _abort(self) -> None:
        self._unlink()  # first: closing may fail again on a full disk
        self._file.discard()

    def _unlink(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
