"""Writing files so that a reader never sees half of one: temp file, fsync, rename."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import DestinationError
from ..layer.streams import CHUNK


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_output(path: str, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a file that appears at ``path`` only when the block ends without error."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.tmp-")
    except OSError as e:
        raise DestinationError(f"{path}: cannot write: {e.strerror}") from None
    try:
        with os.fdopen(fd, "wb", buffering=CHUNK) as f:
            yield f
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def atomic_write_bytes(path: str, data: bytes) -> None:
    with atomic_output(path) as f:
        f.write(data)
