"""Move one layer from a source to a destination in a single pass.

The source bytes are verified against their descriptor (digest, size), the uncompressed
content against the config's diff_id, and the output is hashed as it is written: every byte
is read once and nothing is held in memory beyond a few buffers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import BinaryIO

from ..errors import VerificationError
from ..model import Compression, Descriptor, Digest
from .compress import compressing_writer, decompressing_reader
from .streams import CHUNK, HashingReader, HashingWriter, Progress


@dataclass(frozen=True)
class TranscodeResult:
    digest: Digest  # of the bytes written
    size: int
    diff_id: Digest  # of the uncompressed content
    uncompressed_size: int


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
) -> TranscodeResult:
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
    writer = None if passthrough else HashingWriter(out)
    encoder = None if writer is None else compressing_writer(writer, target, level, threads)
    plain = decompressing_reader(reader, source)  # type: ignore[arg-type]
    diff_hash = (
        None
        if source is Compression.NONE
        else hashlib.new((expected_diff_id or descriptor.digest).algorithm)
    )
    usize = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        while n := plain.readinto(view):  # type: ignore[attr-defined]
            usize += n
            chunk = view[:n]
            if diff_hash is not None:
                diff_hash.update(chunk)
            if encoder is not None:
                encoder.write(chunk)
        if encoder is not None:
            encoder.close()
        reader.drain()  # trailing bytes after the compressed stream still count
    finally:
        if plain is not reader:
            plain.close()
    diff_id = (
        reader.digest if diff_hash is None else Digest(f"{diff_hash.name}:{diff_hash.hexdigest()}")
    )
    if expected_diff_id is not None and diff_id != expected_diff_id:
        raise VerificationError(
            f"{what}: uncompressed content is {diff_id}, but the config's diff_id is "
            f"{expected_diff_id}"
        )
    if writer is None:
        return TranscodeResult(reader.digest, reader.size, diff_id, usize)
    return TranscodeResult(writer.digest, writer.size, diff_id, usize)
