"""Streams that hash (and verify) every byte as it passes; never a whole blob in memory."""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, Protocol, cast

from ..errors import InputError, VerificationError
from ..model.digest import Digest

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12

CHUNK = 1 << 20

Progress = Callable[[int], None]


class _ReadsInto(Protocol):
    def readinto(self, buffer: Buffer, /) -> int | None: ...


def readinto(stream: BinaryIO | io.RawIOBase, buffer: Buffer) -> int:
    """``stream.readinto(buffer)``, 0 at the end. Every binary stream given here has it
    (files, io's raw and buffered streams, the transports' bodies); ``typing.BinaryIO``
    does not declare it."""
    return cast(_ReadsInto, stream).readinto(buffer) or 0


class BlockSource(Protocol):
    """A stream handed over in large blocks, without copies: ``next_block`` returns the next
    block, valid until the next call (its memory is reused), or None at the end; errors of
    the stream are raised there. ``close`` stops it (any thread it runs is ended)."""

    def next_block(self) -> memoryview | None: ...

    def close(self) -> None: ...


class StreamBlocks:
    """The blocks of a readable stream, read on the caller's thread into one buffer; each
    shown to ``on_block`` before it is returned."""

    def __init__(
        self,
        stream: BinaryIO | io.RawIOBase,
        on_block: Callable[[memoryview], object] | None = None,
        size: int = CHUNK,
    ) -> None:
        self._stream = stream
        self._on_block = on_block
        self._view = memoryview(bytearray(size))
        self._done = False

    def next_block(self) -> memoryview | None:
        if self._done:
            return None
        n = readinto(self._stream, self._view)
        if not n:
            self._done = True
            return None
        if self._on_block is not None:
            self._on_block(self._view[:n])
        return self._view[:n]

    def close(self) -> None:
        self._done = True


def binary(stream: io.IOBase) -> BinaryIO:
    """An io stream where a ``BinaryIO`` is asked: it is one at run time, but
    ``typing.BinaryIO`` is a class of its own that io's classes do not derive from."""
    return cast(BinaryIO, stream)


class HashingReader(io.RawIOBase):
    """Reads ``raw``, hashing as it goes; at EOF checks the size and digest it was promised.

    ``sink``, if given, receives every byte read (a tee), so a blob can be copied verbatim
    while something downstream (a decompressor) consumes it. Reading more than
    ``expected_size`` bytes fails at once, so a lying source cannot make us read unbounded data.
    """

    def __init__(
        self,
        raw: BinaryIO,
        *,
        what: str,
        expected_digest: Digest | None = None,
        expected_size: int | None = None,
        algorithm: str | None = None,
        sink: BinaryIO | None = None,
        progress: Progress | None = None,
    ) -> None:
        super().__init__()
        self._raw = raw
        self.what = what
        self.expected_digest = expected_digest
        self.expected_size = expected_size
        algo = expected_digest.algorithm if expected_digest else (algorithm or "sha256")
        self._hash = hashlib.new(algo)
        self.size = 0
        self._sink = sink
        self._progress = progress
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer) -> int:
        if self._done:
            return 0
        n = readinto(self._raw, buffer)
        if not n:
            self._finish()
            return 0
        view = memoryview(buffer)[:n]
        self.size += n
        if self.expected_size is not None and self.size > self.expected_size:
            raise VerificationError(
                f"{self.what}: more than the {self.expected_size} bytes its descriptor declares"
            )
        self._hash.update(view)
        if self._sink is not None:
            self._sink.write(view)
        if self._progress is not None:
            self._progress(n)
        return n

    def _finish(self) -> None:
        self._done = True
        if self.expected_size is not None and self.size != self.expected_size:
            raise VerificationError(
                f"{self.what}: size {self.size} does not match the declared {self.expected_size}"
            )
        if self.expected_digest is not None and self.digest != self.expected_digest:
            raise VerificationError(
                f"{self.what}: content digest {self.digest} does not match {self.expected_digest}"
            )

    def drain(self) -> None:
        """Read to the end, so verification runs even if the consumer stopped early."""
        buf = bytearray(CHUNK)
        while self.readinto(buf):
            pass

    @property
    def digest(self) -> Digest:
        return Digest(f"{self._hash.name}:{self._hash.hexdigest()}")


class HashingWriter(io.RawIOBase):
    """Writes to ``out``, hashing and counting what passes."""

    def __init__(self, out: BinaryIO, algorithm: str = "sha256") -> None:
        super().__init__()
        self._out = out
        self._hash = hashlib.new(algorithm)
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Buffer) -> int:
        view = memoryview(data)
        self._hash.update(view)
        self._out.write(view)
        n = view.nbytes
        self.size += n
        return n

    def close(self) -> None:  # never closes the underlying stream
        super().close()

    @property
    def digest(self) -> Digest:
        return Digest(f"{self._hash.name}:{self._hash.hexdigest()}")


class LimitedReader(io.RawIOBase):
    """A window of ``size`` bytes of a file starting at ``offset``, read with pread."""

    def __init__(self, fd: int, offset: int, size: int) -> None:
        super().__init__()
        self._fd = fd
        self._pos = offset
        self._end = offset + size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer) -> int:
        view = memoryview(buffer)
        want = min(view.nbytes, self._end - self._pos)
        if want <= 0:
            return 0
        n = os.preadv(self._fd, [view[:want]], self._pos)
        if not n:
            raise InputError("archive is truncated")
        self._pos += n
        return n


def copy_stream(src: BinaryIO | io.RawIOBase, dst: BinaryIO | io.RawIOBase) -> int:
    """Copy to EOF in 1 MiB chunks; returns the byte count."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = 0
    while True:
        n = readinto(src, view)
        if not n:
            return total
        dst.write(view[:n])
        total += n
