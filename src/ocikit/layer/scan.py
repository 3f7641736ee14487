"""Read one layer blob once: hash it, decompress it, hash that, and walk its tar entries.

The compressed bytes are hashed (blob digest) as they are read, the uncompressed bytes
(diff_id) as they are decompressed, and the tar is parsed from the same stream: one pass,
a few buffers of memory. A layer of any size works on three threads besides the caller's,
each in C most of the time with the GIL released: one reads and hashes the blob, one
inflates it, one hashes the uncompressed blocks; the caller's walks the tar entries out of
those blocks, without copying them (``BlockTarStream``). Both cores are busy from the
first block to the last, whichever part is the heaviest.

A layer that expands beyond ``max_ratio`` times its compressed size (and beyond
``BOMB_FLOOR``) stops being read: a decompression bomb costs nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from ..errors import InputError, VerificationError
from ..model import Compression, Descriptor, Digest
from .bounds import BOMB_FLOOR, DEFAULT_MAX_RATIO
from .compress import INFLATE_DEPTH, decompressing_blocks, detect
from .streams import CHUNK, HashingReader, Progress
from .tarstream import BlockTarStream, TarEntry, TarStream

SMALL_BLOB = 256 << 10  # inflated without a worker thread

EntryHandler = Callable[[int, TarEntry, TarStream], None]


class DecompressionBomb(InputError):
    """A layer expands far beyond its compressed size."""


class Stopped(BaseException):
    """A scan told to stop (its ``stop`` set) stops with this: no error of the layer."""


class _Budget:
    """Shown every uncompressed block in order: hashes (diff_id) and counts them; stops a
    bomb (raising before the block is handed on), and a scan told to ``stop``."""

    def __init__(self, limit: int | None, what: str, stop: threading.Event | None = None) -> None:
        self._limit = limit
        self._what = what
        self._stop = stop
        self.hash = hashlib.sha256()
        self.size = 0

    def __call__(self, view: memoryview) -> None:
        if self._stop is not None and self._stop.is_set():
            raise Stopped
        self.size += len(view)
        if self._limit is not None and self.size > self._limit:
            raise DecompressionBomb(
                f"{self._what} expands beyond {self._limit} bytes; reading stopped"
            )
        self.hash.update(view)  # large blocks: hashlib lets the other threads run meanwhile

    @property
    def digest(self) -> Digest:
        return Digest(f"sha256:{self.hash.hexdigest()}")


@dataclass
class ScanResult:
    digest: Digest  # of the blob as read
    size: int
    compression: Compression  # found in the content
    diff_id: Digest | None  # None when reading stopped early
    uncompressed_size: int
    entries: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (rule, message)


def scan_layer(
    raw: BinaryIO,
    descriptor: Descriptor,
    declared: Compression | None,
    diff_id: Digest | None,
    on_entry: EntryHandler | None,
    *,
    max_ratio: float | None = DEFAULT_MAX_RATIO,
    strict: bool = False,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    depth: int = INFLATE_DEPTH,
) -> ScanResult:
    """Walk the layer in ``raw`` (closed by the caller), calling ``on_entry`` per entry.

    Problems (rule ids of ocikit/help/check.md) are returned; with ``strict`` the first one is
    raised instead (VerificationError, InputError, DecompressionBomb), after the handler saw
    every entry it could. ``stop`` set (by another thread): ``Stopped`` is raised at the
    next block, the threads stopped. ``depth``: blocks in flight per worker thread.
    """
    what = f"layer {descriptor.digest}"
    hashed = HashingReader(raw, what=what, progress=progress)
    buffered = io.BufferedReader(hashed, CHUNK)
    actual = detect(buffered.peek(4)[:4])
    problems: list[tuple[str, str]] = []
    if declared is not None and actual is not declared:
        problems.append(
            (
                "media-type",
                f"{what}: the content is {_name(actual)} but the media type "
                f"{descriptor.media_type} says {_name(declared)}",
            )
        )
    limit = None
    if actual is not Compression.NONE and max_ratio is not None:
        limit = max(BOMB_FLOOR, int(max_ratio * descriptor.size))
    # a small blob is inflated on this thread: a worker costs more than it saves there
    threaded = descriptor.size > SMALL_BLOB
    budget = _Budget(limit, what, stop)
    blocks = decompressing_blocks(buffered, actual, budget, threaded=threaded, depth=depth)
    stream = BlockTarStream(blocks, what=what)
    entries = 0
    complete = False
    try:
        for entry in stream:
            if on_entry is not None:
                on_entry(entries, entry, stream)
            entries += 1
        while blocks.next_block() is not None:
            pass  # what follows the end-of-archive blocks is part of the diff_id
        complete = True
    except DecompressionBomb as e:
        if strict:
            raise
        problems.append(("decompression-bomb", str(e)))
    except InputError as e:
        if strict or isinstance(e, VerificationError):
            raise
        problems.append(("layer-unreadable", f"{what}: {e}"))
    finally:
        blocks.close()  # stops the worker threads, leaves ``buffered`` open
    with contextlib.suppress(InputError):  # the blob digest tells what went wrong
        _drain(buffered)
    result = ScanResult(
        hashed.digest,
        hashed.size,
        actual,
        budget.digest if complete else None,
        budget.size,
        entries,
        problems,
    )
    problems += blob_problems(what, result, descriptor)
    if result.diff_id is not None and diff_id is not None and result.diff_id != diff_id:
        problems.append(
            (
                "diff-id",
                f"{what}: the uncompressed content is {result.diff_id}, the config's "
                f"diff_id is {diff_id}",
            )
        )
    if strict and problems:
        rule, message = problems[0]
        raise VerificationError(message) if rule != "media-type" else InputError(message)
    return result


def blob_problems(what: str, result: ScanResult, descriptor: Descriptor) -> list[tuple[str, str]]:
    """The blob as read against its descriptor: size, then digest."""
    problems = []
    if result.size != descriptor.size:
        problems.append(
            (
                "blob-size",
                f"{what}: the blob is {result.size} bytes, its descriptor says {descriptor.size}",
            )
        )
    if result.digest != descriptor.digest:
        problems.append(("blob-digest", f"{what}: the blob's content digest is {result.digest}"))
    return problems


def _name(c: Compression) -> str:
    return "uncompressed" if c is Compression.NONE else c.value


def _drain(stream: io.BufferedReader[Any]) -> None:
    buf = bytearray(64 << 10)  # what is left is usually a few blocks of padding, or nothing
    while stream.readinto(buf):
        pass
