"""Files a reader never sees half of, and private places a crash never leaves for good.

- ``atomic_output``: a temporary file beside the target, fsynced and renamed into place; its
  temporary file is locked and reclaimed as ``ocikit.tempfiles`` says.
- ``GuardedFile``: a destination's file whose write errors (a full disk) become one line
  naming the destination.
- The private directories and their reclaiming live in ``ocikit.tempfiles`` (every layer
  uses them) and are re-exported here.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import DestinationError, UsageError
from ..layer.streams import CHUNK
from ..tempfiles import (
    HIDDEN_TMP_PREFIX,
    RUN_PREFIX,
    TMP_PREFIX,
    PrivateDir,
    describe,
    is_held,
    lock_fresh,
    private_tmp_dir,
    reclaim,
    remove_locked,
    remove_tree,
    temp_root,
    try_lock,
    write_error,
)


def check_archive_output(ref: object, path: str, is_stdio: bool, hint: str) -> None:
    """Before any work: an archive goes to a file whose directory exists and that is not a
    directory (``hint`` says what to do instead), or to standard output when it is not a
    terminal (as ``docker save`` refuses)."""
    if is_stdio:
        with contextlib.suppress(ValueError, OSError):  # no usable stdout: the write says so
            if os.isatty(sys.stdout.fileno()):
                raise UsageError(
                    f"{ref}: refusing to write an archive to a terminal; redirect standard "
                    "output (> FILE or | COMMAND) or name a file"
                )
        return
    if os.path.isdir(path):
        raise DestinationError(f"{path}: is a directory{hint}")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise DestinationError(f"{path}: directory {parent} does not exist")


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- writing -------------------------------------------------------------------------------------


class GuardedFile:
    """A file being written for a destination: an OSError (a full disk, a quota) becomes a
    ``DestinationError`` naming ``what``, in one line."""

    def __init__(self, file: BinaryIO, what: str) -> None:
        self._file = file
        self.what = what

    def write(self, data: bytes | bytearray | memoryview) -> int:
        try:
            return self._file.write(data)
        except OSError as e:
            raise write_error(self.what, e) from None

    def flush(self) -> None:
        try:
            self._file.flush()
        except OSError as e:
            raise write_error(self.what, e) from None

    def fileno(self) -> int:
        return self._file.fileno()

    def writable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as e:
            raise write_error(self.what, e) from None

    def discard(self) -> None:
        """Close, whatever the buffered bytes (they are not wanted): never raises."""
        with contextlib.suppress(OSError, ValueError):
            self._file.close()  # closes the descriptor even when the flush fails


@contextlib.contextmanager
def atomic_output(path: str, mode: int = 0o644, what: str | None = None) -> Iterator[BinaryIO]:
    """Yield a file that appears at ``path`` only when the block ends without error. Until
    then it is ``.ocikit-tmp-NAME-*`` beside it, locked; a run that writes ``path`` again
    removes such files that dead processes left."""
    what = what or path
    directory = os.path.dirname(os.path.abspath(path))
    prefix = f"{HIDDEN_TMP_PREFIX}{os.path.basename(path)}-"
    reclaim(directory, (prefix,))
    for _ in range(100):
        try:
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=prefix)
        except OSError as e:
            raise write_error(what, e) from None
        if lock_fresh(tmp, fd):
            break
        os.close(fd)
    else:  # pragma: no cover - a reclaimer took a hundred in a row
        raise DestinationError(f"{what}: cannot make a temporary file")
    raw = os.fdopen(fd, "wb", buffering=CHUNK)
    f = GuardedFile(raw, what)
    try:
        yield f  # type: ignore[misc]
        f.flush()
        try:
            os.fchmod(fd, mode)
            os.fsync(fd)
            os.replace(tmp, path)  # still locked: nobody reclaims it meanwhile
        except OSError as e:
            raise write_error(what, e) from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # first: closing may fail again on a full disk
        f.discard()
        raise
    f.discard()
    try:
        fsync_dir(directory)
    except OSError as e:
        raise write_error(what, e) from None


def atomic_write_bytes(path: str, data: bytes, what: str | None = None) -> None:
    with atomic_output(path, what=what) as f:
        f.write(data)


__all__ = [
    "HIDDEN_TMP_PREFIX",
    "RUN_PREFIX",
    "TMP_PREFIX",
    "GuardedFile",
    "PrivateDir",
    "atomic_output",
    "atomic_write_bytes",
    "describe",
    "fsync_dir",
    "is_held",
    "private_tmp_dir",
    "reclaim",
    "remove_locked",
    "remove_tree",
    "temp_root",
    "try_lock",
    "write_error",
]
