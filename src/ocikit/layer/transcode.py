"""Move one layer from a source to a destination in a single pass.

The source bytes are verified against their descriptor (digest, size), the uncompressed
content against the config's diff_id, and the output is hashed as it is written: every byte
is read once and nothing is held in memory beyond a few buffers.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Protocol

from ..errors import InputError, VerificationError
from ..model import Compression, Descriptor, Digest
from .compress import abort_writer, compressing_writer, decompressing_reader
from .streams import CHUNK, HashingReader, HashingWriter, Progress, binary, readinto
from .tarstream import TarEntry, TarStream

if TYPE_CHECKING:
    from typing_extensions import Buffer  # collections.abc.Buffer from Python 3.12


@dataclass(frozen=True)
class TranscodeResult:
    digest: Digest  # of the bytes written
    size: int
    diff_id: Digest  # of the uncompressed content
    uncompressed_size: int


class LayerEncoder:
    """Push a layer's uncompressed bytes in; ``finish`` gives its diff_id and output digest."""

    def __init__(
        self,
        out: BinaryIO,
        target: Compression,
        *,
        level: int | None = None,
        threads: int | None = None,
        hash_input: bool = True,
    ) -> None:
        self._writer = HashingWriter(out)
        # the diff_id: hashed by the compressor as it takes the bytes (gzip's: on its output
        # thread, the GIL released, beside the caller)
        self._diff = hashlib.sha256() if hash_input else None
        self._encoder = compressing_writer(
            binary(self._writer), target, level, threads, input_hasher=self._diff
        )
        self.uncompressed_size = 0

    def write(self, chunk: bytes | memoryview) -> None:
        self._encoder.write(chunk)
        self.uncompressed_size += len(chunk)

    def finish(self, diff_id: Digest | None = None) -> TranscodeResult:
        """Flush; ``diff_id`` is required if the input was not hashed here."""
        self._encoder.close()
        if self._diff is not None:
            diff_id = Digest(f"sha256:{self._diff.hexdigest()}")
        assert diff_id is not None
        return TranscodeResult(
            self._writer.digest, self._writer.size, diff_id, self.uncompressed_size
        )

    def abort(self) -> None:
        """Already failing: stop at once, the output is discarded (never waits, never raises)."""
        abort_writer(self._encoder)


class EntryWatcher(Protocol):
    """Shown a layer's tar entries while ``transcode`` moves its bytes (``watch``)."""

    def entry(self, entry: TarEntry) -> None: ...

    def unreadable(self, error: InputError) -> None:
        """The content is not a tar archive this reader accepts (the copy goes on)."""


class _Tap(io.RawIOBase):
    """Reads ``raw`` and hands every byte read to ``sink``: the tar reader reading through it
    sees the stream the copy moves, read once. ``failed``: an error of ``raw`` or ``sink``."""

    def __init__(self, raw: BinaryIO, sink: Callable[[memoryview], None]) -> None:
        super().__init__()
        self._raw = raw
        self._sink = sink
        self.failed = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Buffer) -> int:
        try:
            n = readinto(self._raw, buffer)
            if n:
                self._sink(memoryview(buffer)[:n])
        except BaseException:
            self.failed = True
            raise
        return n


def _walk(
    plain: BinaryIO, sink: Callable[[memoryview], None], watch: EntryWatcher, what: str
) -> None:
    """Read ``plain`` through the tar reader, each byte to ``sink`` once, entries to
    ``watch``, until the archive ends (or is found malformed); the caller reads the rest."""
    tap = _Tap(plain, sink)
    stream = TarStream(io.BufferedReader(tap, CHUNK), what=what)
    try:
        for entry in stream:
            watch.entry(entry)
    except InputError as e:
        if tap.failed:
            raise
        watch.unreadable(e)


def check_diff_id(what: str, actual: Digest, expected: Digest | None) -> None:
    if expected is not None and actual != expected:
        raise VerificationError(
            f"{what}: uncompressed content is {actual}, but the config's diff_id is {expected}"
        )


def transcode(
    raw: BinaryIO,
    descriptor: Descriptor,
    source: Compression,
    out: BinaryIO,
    target: Compression,
    *,
    expected_diff_id: Digest | None,
    level: int | None = None,
    threads: int | None = None,
    progress: Progress | None = None,
    watch: EntryWatcher | None = None,
) -> TranscodeResult:
    """Copy one layer (verified, converted); ``watch`` is shown its tar entries on the way
    (the stream is still read once)."""
    what = f"layer {descriptor.digest}"
    passthrough = source is target
    reader = HashingReader(
        raw,
        what=what,
        expected_digest=descriptor.digest,
        expected_size=descriptor.size,
        sink=out if passthrough else None,
        progress=progress,
    )
    # the uncompressed bytes are hashed by the reader itself when the source is uncompressed
    encoder = None
    if not passthrough:
        encoder = LayerEncoder(
            out, target, level=level, threads=threads, hash_input=source is not Compression.NONE
        )
    hashed = binary(reader)
    plain = decompressing_reader(hashed, source)
    diff_hash = hashlib.sha256() if passthrough and source is not Compression.NONE else None
    usize = 0

    def consume(chunk: memoryview) -> None:
        nonlocal usize
        usize += len(chunk)
        if diff_hash is not None:
            diff_hash.update(chunk)
        if encoder is not None:
            encoder.write(chunk)

    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        if watch is not None:
            _walk(plain, consume, watch, what)
        while n := readinto(plain, view):
            consume(view[:n])
        reader.drain()  # trailing bytes after the compressed stream still count
    except InputError as e:
        if encoder is not None:
            encoder.abort()
        if what in str(e):
            raise
        raise type(e)(f"{what}: ", *e.parts) from None  # name the layer whose stream is corrupt
    except BaseException:
        if encoder is not None:
            encoder.abort()
        raise
    finally:
        if plain is not hashed:
            plain.close()
    if encoder is not None:
        result = encoder.finish(reader.digest if source is Compression.NONE else None)
    else:
        diff = reader.digest if diff_hash is None else Digest(f"sha256:{diff_hash.hexdigest()}")
        result = TranscodeResult(reader.digest, reader.size, diff, usize)
    check_diff_id(what, result.diff_id, expected_diff_id)
    return result
