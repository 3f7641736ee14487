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
import struct
import threading
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, BinaryIO, cast

import zstandard
from isal import igzip, igzip_threaded, isal_zlib

from ..errors import InputError, UsageError
from ..model.mediatypes import Compression
from ..model.mediatypes import detect as detect  # where it was: a stream's first bytes
from .streams import BlockSource, StreamBlocks, binary, readinto

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12

    from ..model.digest import Hasher

# isal's stubs type ``isal_zlib.error`` as a value, not as the exception class it is
_ISAL_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]

DEFAULT_LEVEL = {Compression.GZIP: 2, Compression.ZSTD: 3, Compression.NONE: 0}
LEVEL_RANGE = {Compression.GZIP: (0, 9), Compression.ZSTD: (1, 19), Compression.NONE: (0, 0)}
ISAL_MAX_LEVEL = 3
BLOCK = 1 << 20
GZIP_READ_SIZE = 1 << 20  # compressed bytes the gzip reader asks its input for at once
#: what ``ThreadedBlocks`` hands over: a block is ~2 ms of inflating, so the worker threads
#: need the GIL (to hand a block on, to read their input) a few hundred times a second at
#: most (every wait for it can last a switch interval while the consumer runs Python)
INFLATE_BLOCK = 2 << 20
INFLATE_DEPTH = 4  # blocks in flight per stream: 8 MiB at most
READ_BLOCK = 1 << 20  # compressed input read ahead, INFLATE_DEPTH blocks of it at most


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


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

    def write(self, data: Buffer) -> int:
        view = memoryview(data)
        self._out.write(self._z.compress(view))
        return view.nbytes

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

    def write(self, data: Buffer) -> int:
        view = memoryview(data)
        self._out.write(view)
        return view.nbytes


def abort_writer(writer: BinaryIO) -> None:
    """Stop a writer of ``compressing_writer`` at once, dropping what it holds: no flush, no
    trailer, its threads stopped, and closing it later does nothing. (``close`` would wait
    for every queued block; an interrupt inside isal's threaded writer can leave a block
    whose completion is never signalled, and then it waits forever.)"""
    if isinstance(writer, _HashedInput):
        writer = writer.drop()
    if isinstance(writer, _BlockGzipWriter):
        writer.abort()
        return
    raw = getattr(writer, "raw", None)
    if isinstance(raw, igzip_threaded._ThreadedGzipWriter):
        if all(hasattr(raw, a) for a in _THREADED_INTERNALS):
            _stop_threaded_gzip(raw)
        else:  # another isal: its close, on a thread nobody waits for
            threading.Thread(target=_close_quietly, args=(writer,), daemon=True).start()
        return
    if isinstance(writer, _ZlibGzipWriter | _Passthrough):
        io.RawIOBase.close(writer)  # the stream's end is not written
        return
    with contextlib.suppress(Exception):  # zstd: its end is written; the output is dropped
        writer.close()


#: what ``_stop_threaded_gzip`` uses of isal's threaded writer (isal 1.9; an isal without them
#: gets a close nobody waits for)
_THREADED_INTERNALS = (
    "running",
    "compression_workers",
    "output_worker",
    "input_queues",
    "output_queues",
    "_closed",
)


def _close_quietly(writer: BinaryIO) -> None:
    with contextlib.suppress(Exception):
        writer.close()


def _stop_threaded_gzip(raw: igzip_threaded._ThreadedGzipWriter) -> None:
    """Stop isal's threaded gzip writer without waiting for its queues. Its threads wait
    on their queues with a timeout and return once ``running`` is false and nothing comes;
    a thread putting a block waits for room, so whatever is queued is dropped until they
    are all gone (no sentinel: one would take the room a blocked thread waits for)."""
    raw.running = False
    threads = [*raw.compression_workers, raw.output_worker]
    queues: list[queue.Queue[Any]] = [*raw.input_queues, *raw.output_queues]
    while any(t.is_alive() for t in threads):
        for q in queues:
            with contextlib.suppress(queue.Empty):
                while True:
                    q.get_nowait()
        for t in threads:
            t.join(0.02)
    raw._closed = True  # the buffered writer above it (and its finalizer) skips the flush


class _BlockPool:
    """Buffers that go round between the threads of one stream: made as needed, ``depth``
    at most (a fresh 1 MiB allocation costs page faults; a small stream makes one)."""

    def __init__(self, size: int, depth: int, made: int = 0) -> None:
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._size, self._depth, self._made = size, depth, made

    def take(self, timeout: float = 0.1) -> bytearray | None:
        """A free block, a new one while fewer than ``depth`` exist, else one given back
        within ``timeout`` seconds (None: none was, ask again)."""
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        if self._made < self._depth:
            self._made += 1
            return bytearray(self._size)
        try:
            return self._free.get(timeout=timeout)
        except queue.Empty:
            return None

    def give(self, block: bytearray) -> None:
        self._free.put(block)


class _Job:
    """One block to deflate: its bytes, the previous block's last 32 KiB, and where the
    result goes (a queue of one: the output thread waits on it, in the blocks' order)."""

    __slots__ = ("block", "done", "n", "zdict")

    def __init__(self, block: bytearray, n: int, zdict: bytes) -> None:
        self.block, self.n, self.zdict = block, n, zdict
        self.done: queue.SimpleQueue[tuple[bytes, int] | BaseException] = queue.SimpleQueue()


#: isal's per-block deflate (what its threaded writer runs; a private name of isal's, so an
#: isal without it gets that threaded writer itself: the same bytes, with its copies)
_HAS_BLOCK_DEFLATE = hasattr(isal_zlib, "_ParallelCompress")


class _BlockGzipWriter(io.RawIOBase):
    """isal's threaded gzip (``igzip_threaded``'s writer under its buffered writer), byte for
    byte: the same header, blocks cut where that buffered writer cuts them (a write that
    does not fit the block being filled ends it; a write larger than a block is cut into
    blocks of its own), each deflated with the previous block's last 32 KiB as dictionary,
    the same trailer. Without its copies: a block is filled once, in place, from a few
    buffers that go round (isal makes a fresh ``bytes`` of every block, page faults and
    all, after the buffered writer's copy), and a stream of one block (a small layer) is
    deflated on the caller's thread, no thread started."""

    def __init__(
        self, out: BinaryIO, level: int, threads: int, hasher: Hasher | None = None
    ) -> None:
        super().__init__()
        self._out = out
        self._hasher = hasher  # given every block's bytes, in order, on the output thread
        self._level = level
        self._threads = max(1, threads)
        # isal's sizes: what a block may deflate to (more raises, as in isal)
        self._outsize = 2 * BLOCK + 500 if level == 0 else BLOCK + max(BLOCK // 10, 500)
        self._buf = bytearray(BLOCK)
        self._pos = 0
        self._zdict = b""
        self._crc = 0
        self._size = 0
        self._blocks = _BlockPool(BLOCK, 2 * self._threads + 2, made=1)  # in flight at most
        self._todo: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._order: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._writer: threading.Thread | None = None
        self._error: BaseException | None = None
        self._stopped = False
        out.write(struct.pack("<BBBBIBB", 0x1F, 0x8B, 8, 0, 0, 0xFF, 4 if level == 0 else 0))

    def writable(self) -> bool:
        return True

    def write(self, data: Buffer) -> int:
        if self._error is not None:
            raise self._error
        view = memoryview(data).cast("B")
        n = view.nbytes
        pos = self._pos
        if n <= BLOCK - pos:
            self._buf[pos : pos + n] = view
            self._pos = pos + n
            if self._pos == BLOCK:  # where the next write would end it anyway
                self._submit()
            return n
        self._submit()
        if n > BLOCK:
            for start in range(0, n, BLOCK):
                piece = view[start : start + BLOCK]
                self._buf[: piece.nbytes] = piece
                self._pos = piece.nbytes
                self._submit()
        else:
            self._buf[:n] = view
            self._pos = n
            if n == BLOCK:
                self._submit()
        return n

    def _submit(self) -> None:
        """The block being filled goes to the compressing threads; another is taken."""
        n = self._pos
        if not n:
            return
        block = self._buf
        job = _Job(block, n, self._zdict)
        self._zdict = bytes(memoryview(block)[max(0, n - 32768) : n])
        if self._writer is None:
            self._start()
        self._todo.put(job)
        self._order.put(job)
        self._pos = 0
        self._buf = self._take()

    def _take(self) -> bytearray:
        while (block := self._blocks.take()) is None:
            if self._error is not None:
                raise self._error from None
        return block

    def _start(self) -> None:
        self._workers = [
            threading.Thread(target=self._deflate, name="ocikit-gzip", daemon=True)
            for _ in range(self._threads)
        ]
        self._writer = threading.Thread(target=self._write_out, name="ocikit-gzip-out", daemon=True)
        for t in (*self._workers, self._writer):
            t.start()

    def _deflate(self) -> None:
        compressor = isal_zlib._ParallelCompress(buffersize=self._outsize, level=self._level)
        while (job := self._todo.get()) is not None:
            if self._stopped:
                job.done.put(InterruptedError())
                continue
            try:
                job.done.put(compressor.compress_and_crc(memoryview(job.block)[: job.n], job.zdict))
            except BaseException as e:
                job.done.put(e)

    def _write_out(self) -> None:
        while (job := self._order.get()) is not None:
            while True:  # a block whose completion never comes ends with an abort
                try:
                    result = job.done.get(timeout=0.05)
                    break
                except queue.Empty:
                    if self._stopped:
                        return
            if self._error is None and not self._stopped:
                try:
                    if isinstance(result, BaseException):
                        raise result
                    compressed, crc = result
                    self._crc = isal_zlib.crc32_combine(self._crc, crc, job.n)
                    self._size += job.n
                    self._out.write(compressed)
                    if self._hasher is not None:  # the GIL released: beside the caller
                        self._hasher.update(memoryview(job.block)[: job.n])
                except BaseException as e:
                    self._error = e
            self._blocks.give(job.block)

    def _join(self) -> None:
        for _ in self._workers:
            self._todo.put(None)
        self._order.put(None)
        for t in (*self._workers, self._writer):
            if t is not None and t.is_alive():  # not one an interrupt kept from starting
                t.join()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._writer is None:  # one block at most: deflated here
                if self._pos:
                    compressor = isal_zlib._ParallelCompress(
                        buffersize=self._outsize, level=self._level
                    )
                    view = memoryview(self._buf)[: self._pos]
                    compressed, crc = compressor.compress_and_crc(view, b"")
                    self._crc, self._size = crc, self._pos
                    self._out.write(compressed)
                    if self._hasher is not None:
                        self._hasher.update(view)
            else:
                self._submit()
                self._join()
                if self._error is not None:
                    raise self._error
            self._out.write(isal_zlib.compress(b"", wbits=-15))
            self._out.write(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        finally:
            super().close()

    def abort(self) -> None:
        """Stop at once: nothing more is written, no trailer; the threads end (a block being
        deflated finishes first, into nothing; a thread stuck writing is left behind)."""
        if self.closed:
            return
        self._stopped = True
        if self._writer is not None:
            for _ in self._workers:
                self._todo.put(None)
            self._order.put(None)
            for t in (*self._workers, self._writer):  # a block's deflate: milliseconds
                if t.is_alive():  # not one an interrupt kept from starting (Ctrl-C)
                    t.join(0.5)
        io.RawIOBase.close(self)


class _HashedInput(io.RawIOBase):
    """What is written goes to ``hasher`` (on the caller's thread), then to ``inner``."""

    def __init__(self, inner: BinaryIO, hasher: Hasher) -> None:
        super().__init__()
        self.inner = inner
        self._hasher = hasher
        self._dropped = False

    def drop(self) -> BinaryIO:
        """Closed without a flush (closing it later does nothing): ``inner``, to stop."""
        self._dropped = True
        super().close()
        return self.inner

    def writable(self) -> bool:
        return True

    def write(self, data: Buffer) -> int:
        self._hasher.update(data)
        return self.inner.write(data)

    def flush(self) -> None:
        if not (self._dropped or self.closed or self.inner.closed):
            self.inner.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.inner.close()
        finally:
            super().close()


def compressing_writer(
    out: BinaryIO,
    compression: Compression,
    level: int | None = None,
    threads: int | None = None,
    *,
    input_hasher: Hasher | None = None,
) -> BinaryIO:
    """A writable stream compressing into ``out``; closing it flushes, ``out`` stays open.
    ``input_hasher`` is given every byte written, in order, by the time ``close`` returns
    (gzip's block writer hashes each block on its output thread, beside the caller)."""
    level = check_level(compression, level)
    threads = threads or cpu_count()
    if compression is Compression.GZIP and level <= ISAL_MAX_LEVEL and _HAS_BLOCK_DEFLATE:
        return binary(_BlockGzipWriter(out, level, threads, input_hasher))
    writer = _compressing_writer(out, compression, level, threads)
    return writer if input_hasher is None else binary(_HashedInput(writer, input_hasher))


def _compressing_writer(
    out: BinaryIO, compression: Compression, level: int, threads: int
) -> BinaryIO:
    if compression is Compression.NONE:
        return binary(_Passthrough(out))
    if compression is Compression.GZIP:
        if level <= ISAL_MAX_LEVEL:  # an isal without its block deflate: its own writer
            writer: BinaryIO = igzip_threaded.open(
                out, "wb", compresslevel=level, threads=threads, block_size=BLOCK
            )
            return writer
        return binary(_ZlibGzipWriter(out, level))
    cctx = zstandard.ZstdCompressor(level=level, threads=max(1, threads))
    # a binary stream (write, flush, close) that zstandard's stubs type as a class of its own
    return cast(BinaryIO, cctx.stream_writer(out, closefd=False))


class _ZstdReader(io.RawIOBase):
    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._r = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer) -> int:
        try:
            return self._r.readinto(buffer)
        except zstandard.ZstdError as e:
            raise InputError(f"corrupt zstd stream: {e}") from None


class _GzipReader(io.RawIOBase):
    """gzip (every member, zero padding after them allowed) through isal's C reader, which
    releases the GIL while it inflates; output bounded by the caller's buffer whatever the
    compression ratio."""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        # isal's C reader (what IGzipFile reads through) without IGzipFile's buffered and
        # Python layers above it: one C call a block; IGzipFile where it is not there
        c_reader = getattr(isal_zlib, "_GzipReader", None)
        self._gz: isal_zlib._GzipReader | igzip.IGzipFile = (
            igzip.IGzipFile(fileobj=raw, mode="rb")
            if c_reader is None
            else c_reader(raw, GZIP_READ_SIZE)
        )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer) -> int:
        try:
            return self._gz.readinto(buffer)
        except (igzip.BadGzipFile, _ISAL_ERROR, zlib.error) as e:
            raise InputError(f"corrupt gzip stream: {e}") from None
        except EOFError:
            raise InputError("corrupt gzip stream: truncated") from None

    def close(self) -> None:
        if not self.closed:
            self._gz.close()  # leaves ``raw`` open
        super().close()


class _ThreadedReader(io.RawIOBase):
    """Reads ``inner`` on a worker thread, ``depth`` blocks ahead of the reader: the
    decompressor (and the hashing of what it reads) on one core, the consumer on another."""

    def __init__(self, inner: io.RawIOBase, depth: int = 8) -> None:
        super().__init__()
        self._inner = inner
        # SimpleQueue: no Python-level locking, so the worker rarely needs the GIL
        self._queue: queue.SimpleQueue[tuple[bytearray, int] | BaseException | None] = (
            queue.SimpleQueue()
        )
        self._blocks = _BlockPool(BLOCK, depth)
        self._stop = threading.Event()
        self._block: bytearray | None = None
        self._cur = memoryview(b"")
        self._eof = False
        self._thread = threading.Thread(target=self._run, name="ocikit-inflate", daemon=True)
        self._thread.start()

    def readable(self) -> bool:
        return True

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                block = self._blocks.take()
                if block is None:
                    continue
                n = self._inner.readinto(block)
                if not n:
                    self._queue.put(None)
                    return
                self._queue.put((block, n))
        except BaseException as e:  # handed to the reader, raised there
            self._queue.put(e)

    def readinto(self, buffer: Buffer) -> int:
        if not self._cur:
            if self._eof:
                return 0
            if self._block is not None:
                self._blocks.give(self._block)
                self._block = None
            item = self._queue.get()
            if item is None or isinstance(item, BaseException):
                self._eof = True
                if item is not None:
                    raise item
                return 0
            self._block, n = item
            self._cur = memoryview(self._block)[:n]
        view = memoryview(buffer)
        n = min(view.nbytes, len(self._cur))
        view[:n] = self._cur[:n]
        self._cur = self._cur[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._stop.set()
            self._cur = memoryview(b"")
            while self._thread.is_alive():  # it stops at its next block
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
                self._thread.join(0.05)
                if not self._thread.is_alive() or self._stop_waited():
                    break
            if not self._thread.is_alive():
                self._inner.close()
            # else: blocked reading its input (a pipe that says nothing): a daemon thread,
            # left to the process's end rather than made to hang an interrupt
        super().close()

    def _stop_waited(self) -> bool:
        self._waits = getattr(self, "_waits", 0) + 1
        return self._waits > 40  # two seconds


_Item = tuple[bytearray, int] | BaseException | None


class ThreadedBlocks:
    """A ``BlockSource`` of ``inner`` (a readable stream) read on a worker thread into a few
    large blocks that go round between the threads and the consumer, never copied.

    Decompression runs on the reader thread (isal and zstandard release the GIL), with the
    hashing of its input; ``on_block``, given each block in order before the consumer (to
    hash and count it), on a second thread: three threads that each spend most of their
    time in C, so the cores share the work whichever part is the heaviest. An error of
    either thread reaches the consumer in its place in the stream. At most ``depth`` blocks
    of ``size`` bytes exist.
    """

    def __init__(
        self,
        inner: io.RawIOBase | BinaryIO,
        on_block: Callable[[memoryview], object] | None = None,
        *,
        size: int = INFLATE_BLOCK,
        depth: int = INFLATE_DEPTH,
        name: str = "ocikit-inflate",
        close_inner: bool = True,
        upstream: BlockSource | None = None,
    ) -> None:
        self._inner = inner
        self._close_inner = close_inner
        self._upstream = upstream  # what ``inner`` reads from: closed with this
        self._on_block = on_block
        self._filled: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._ready = self._filled if on_block is None else queue.SimpleQueue()
        self._blocks = _BlockPool(size, max(2, depth))
        self._stop = threading.Event()
        self._held: bytearray | None = None  # the block the consumer has
        self._done = False
        self._threads = [threading.Thread(target=self._read, name=name, daemon=True)]
        if on_block is not None:
            self._threads.append(
                threading.Thread(target=self._stage, name="ocikit-hash", daemon=True)
            )
        for t in self._threads:
            t.start()

    def _read(self) -> None:
        try:
            while not self._stop.is_set():
                block = self._blocks.take()
                if block is None:
                    continue
                n = readinto(self._inner, block)
                if not n:
                    break
                self._filled.put((block, n))
        except BaseException as e:  # handed to the consumer, raised there
            self._filled.put(e)
        else:  # the end, or stopped: a consumer waiting is let go
            self._filled.put(None)

    def _stage(self) -> None:
        assert self._on_block is not None
        while True:
            item = self._filled.get()
            if isinstance(item, tuple) and not self._stop.is_set():
                try:
                    self._on_block(memoryview(item[0])[: item[1]])
                except BaseException as e:
                    self._ready.put(e)
                    return
            self._ready.put(item)
            if not isinstance(item, tuple):
                return

    def next_block(self) -> memoryview | None:
        if self._held is not None:
            self._blocks.give(self._held)
            self._held = None
        if self._done:
            return None
        item = self._ready.get()
        if item is None or isinstance(item, BaseException):
            self._done = True
            if item is not None:
                raise item
            return None
        self._held, n = item
        return memoryview(self._held)[:n]

    def close(self) -> None:
        """Stop the threads (at their next block) and close ``inner``; a reader blocked on
        its input (a pipe that says nothing) is left to the process's end after two seconds."""
        if self._stop.is_set():
            return
        self._stop.set()
        self._done = True
        self._held = None
        self._filled.put(None)  # wakes the stage thread, which then stops
        if self._upstream is not None:
            self._upstream.close()  # a reader waiting for its input gets its end
        for _ in range(40):
            for q in (self._filled, self._ready):
                with contextlib.suppress(queue.Empty):
                    while True:
                        q.get_nowait()
            if self._on_block is not None:
                self._filled.put(None)
            for t in self._threads:
                t.join(0.05 / len(self._threads))
            if not any(t.is_alive() for t in self._threads):
                if self._close_inner:
                    self._inner.close()
                return


class BlocksReader(io.RawIOBase):
    """A readable stream of a ``BlockSource``'s blocks (copied out as they are read)."""

    def __init__(self, source: BlockSource) -> None:
        super().__init__()
        self._source = source
        self._cur = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer) -> int:
        if not self._cur:
            block = self._source.next_block()
            if block is None:
                return 0
            self._cur = block
        view = memoryview(buffer)
        n = min(view.nbytes, len(self._cur))
        view[:n] = self._cur[:n]
        self._cur = self._cur[n:]
        return n


def decompressing_blocks(
    raw: BinaryIO,
    compression: Compression,
    on_block: Callable[[memoryview], object] | None = None,
    *,
    threaded: bool,
    depth: int = INFLATE_DEPTH,
) -> BlockSource:
    """``raw``'s uncompressed bytes as a ``BlockSource``, each block shown to ``on_block``
    before it is handed over (errors it raises reach the consumer in the block's place);
    ``threaded``: decompressed, and shown, on worker threads (not worth it for a small blob,
    nor for a stream that is not compressed), ``depth`` blocks in flight per thread."""
    if not threaded:
        if compression is Compression.GZIP:
            return StreamBlocks(_GzipReader(raw), on_block)
        if compression is Compression.ZSTD:
            return StreamBlocks(_ZstdReader(raw), on_block)
        return StreamBlocks(raw, on_block)
    if compression is Compression.NONE:  # read (and hashed) on one thread, shown on another
        return ThreadedBlocks(raw, on_block, depth=depth, name="ocikit-read", close_inner=False)
    # ``raw`` is read (and hashed, when it is a HashingReader) on a thread of its own, ahead
    # of the decompressor: the thread that decompresses does nothing else
    read = ThreadedBlocks(raw, size=READ_BLOCK, depth=depth, name="ocikit-read", close_inner=False)
    reader = binary(BlocksReader(read))
    inner = _GzipReader(reader) if compression is Compression.GZIP else _ZstdReader(reader)
    return ThreadedBlocks(inner, on_block, depth=depth, upstream=read)


def decompressing_reader(
    raw: BinaryIO, compression: Compression, *, threaded: bool = True
) -> BinaryIO:
    """A readable stream of ``raw``'s uncompressed bytes; reads are bounded whatever the ratio.
    ``threaded``: gzip is inflated on a worker thread (not worth it for a small blob)."""
    if compression is Compression.GZIP:
        if not threaded:
            return binary(_GzipReader(raw))
        return binary(_ThreadedReader(_GzipReader(raw)))
    if compression is Compression.ZSTD:
        return binary(_ZstdReader(raw))
    return raw
