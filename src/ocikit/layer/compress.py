"""Layer compression behind one interface: gzip (isal), zstd (zstandard), or none.

gzip levels 0-3 use isal's igzip, compressing blocks on several threads (output does not
depend on the thread count: each block is deflated with the previous 32 KiB as dictionary,
and the header carries no name or timestamp); levels 4-9 use zlib on one thread, for users
who want the last percent of size. zstd always runs with at least one worker thread, whose
output is the same for any worker count.
"""

from __future__ import annotations

import contextlib
import io
import os
import queue
import threading
import zlib
from typing import BinaryIO

import zstandard
from isal import igzip_threaded, isal_zlib

from ..errors import InputError, UsageError
from ..model.mediatypes import Compression

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

DEFAULT_LEVEL = {Compression.GZIP: 2, Compression.ZSTD: 3, Compression.NONE: 0}
LEVEL_RANGE = {Compression.GZIP: (0, 9), Compression.ZSTD: (1, 19), Compression.NONE: (0, 0)}
ISAL_MAX_LEVEL = 3
BLOCK = 1 << 20
INFLATE_INPUT = 64 << 10  # input per inflate call: small, or isal copies long tails


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def detect(head: bytes) -> Compression:
    """The compression of a stream, from its first bytes."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    return Compression.NONE


def check_level(compression: Compression, level: int | None) -> int:
    if level is None:
        return DEFAULT_LEVEL[compression]
    lo, hi = LEVEL_RANGE[compression]
    if not lo <= level <= hi:
        raise UsageError(f"{compression.value} compression level must be {lo}..{hi}, got {level}")
    return level


class _ZlibGzipWriter(io.RawIOBase):
    """gzip through zlib at levels 4-9: a single member with no name and mtime 0."""

    def __init__(self, out: BinaryIO, level: int) -> None:
        super().__init__()
        self._out = out
        self._z = zlib.compressobj(level, zlib.DEFLATED, 31)

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | memoryview | bytearray) -> int:  # type: ignore[override]
        self._out.write(self._z.compress(data))
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._out.write(self._z.flush())
        super().close()


class _Passthrough(io.RawIOBase):
    def __init__(self, out: BinaryIO) -> None:
        super().__init__()
        self._out = out

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | memoryview | bytearray) -> int:  # type: ignore[override]
        self._out.write(data)
        return len(data)


def compressing_writer(
    out: BinaryIO, compression: Compression, level: int | None = None, threads: int | None = None
) -> BinaryIO:
    """A writable stream compressing into ``out``; closing it flushes, ``out`` stays open."""
    level = check_level(compression, level)
    threads = threads or cpu_count()
    if compression is Compression.NONE:
        return _Passthrough(out)  # type: ignore[return-value]
    if compression is Compression.GZIP:
        if level <= ISAL_MAX_LEVEL:
            return igzip_threaded.open(  # type: ignore[return-value]
                out, "wb", compresslevel=level, threads=threads, block_size=BLOCK
            )
        return _ZlibGzipWriter(out, level)  # type: ignore[return-value]
    cctx = zstandard.ZstdCompressor(level=level, threads=max(1, threads))
    return cctx.stream_writer(out, closefd=False)  # type: ignore[return-value]


class _ZstdReader(io.RawIOBase):
    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._r = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        try:
            return self._r.readinto(buffer)
        except zstandard.ZstdError as e:
            raise InputError(f"corrupt zstd stream: {e}") from None


class _InflateReader(io.RawIOBase):
    """gzip (every member) through isal's inflate, which releases the GIL; output bounded by
    the caller's buffer whatever the compression ratio."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._d = isal_zlib.decompressobj(wbits=31)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        out = self.next_chunk(len(buffer))
        n = len(out)
        buffer[:n] = out
        return n

    def next_chunk(self, limit: int = BLOCK) -> bytes:
        """The next piece of output, at most ``limit`` bytes; b"" at the end."""
        try:
            return self._next(limit)
        except (isal_zlib.error, zlib.error, EOFError) as e:
            raise InputError(f"corrupt gzip stream: {e}") from None

    def _next(self, limit: int) -> bytes:
        while True:
            if self._d.eof:
                data = self._d.unused_data or self._raw.read(INFLATE_INPUT)
                if not data:
                    return b""  # the end, after a complete member
                self._d = isal_zlib.decompressobj(wbits=31)  # another member
            elif self._d.unconsumed_tail:
                data = self._d.unconsumed_tail
            else:
                data = self._raw.read(INFLATE_INPUT)
                if not data:
                    raise InputError("corrupt gzip stream: truncated")
            out = self._d.decompress(data, limit)
            if out:
                return out


class _ThreadedReader(io.RawIOBase):
    """Runs ``inner.next_chunk`` on a worker thread, ``depth`` chunks ahead of the reader:
    the decompressor (and the hashing of what it reads) on one core, the consumer on another."""

    def __init__(self, inner: _InflateReader, depth: int = 16) -> None:
        super().__init__()
        self._inner = inner
        self._queue: queue.Queue[memoryview | BaseException | None] = queue.Queue(depth)
        self._stop = threading.Event()
        self._cur = memoryview(b"")
        self._eof = False
        self._thread = threading.Thread(target=self._run, name="ocikit-inflate", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                chunk = self._inner.next_chunk()
                if not chunk:
                    self._put(None)
                    return
                self._put(memoryview(chunk))
        except BaseException as e:  # handed to the reader, raised there
            self._put(e)

    def _put(self, item: memoryview | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if not self._cur:
            if self._eof:
                return 0
            item = self._queue.get()
            if item is None or isinstance(item, BaseException):
                self._eof = True
                if item is not None:
                    raise item
                return 0
            self._cur = item
        n = min(len(buffer), len(self._cur))
        buffer[:n] = self._cur[:n]
        self._cur = self._cur[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
            self._thread.join()
        super().close()


def decompressing_reader(raw: BinaryIO, compression: Compression) -> BinaryIO:
    """A readable stream of ``raw``'s uncompressed bytes; reads are bounded whatever the ratio."""
    if compression is Compression.GZIP:
        return _ThreadedReader(_InflateReader(raw))  # type: ignore[return-value]
    if compression is Compression.ZSTD:
        return _ZstdReader(raw)  # type: ignore[return-value]
    return raw
