"""Compress layers of a piped ``docker save`` while the pipe is read, not after.

A stream's ``manifest.json`` comes after the layers (Docker >= 25 puts every blob first), so
a one-pass reader cannot know which member is a layer until the end. Rather than spool
everything and then compress, each member that starts like a tar is also compressed straight
into a destination blob as it streams by, and not spooled. When the manifest says it is a
layer, that blob is verified (diff_id, size) and committed; otherwise it is discarded.
Non-tar members (configs, manifests) are spooled as usual and never touched.
"""

from __future__ import annotations

import contextlib
from typing import Protocol

from ..errors import VerificationError
from ..layer.transcode import LayerEncoder, TranscodeResult, check_diff_id
from ..model import Compression, Digest
from ..transports import Layer, TeeSink
from ..transports.base import BlobWriter
from .progress import ProgressReporter


class BlobStore(Protocol):
    """Where speculated blobs go: an ImageDestination, or export's staging directory."""

    def new_blob(self) -> BlobWriter: ...


def looks_like_tar(head: bytes) -> bool:
    return len(head) >= 263 and head[257:262] == b"ustar"


class _Speculation:
    # A tar-looking member is either a layer (then this blob is all that is needed of it) or
    # something no image refers to (configs and manifests are JSON): it need not be spooled.
    consumes = True

    def __init__(self, owner: Speculator, writer: BlobWriter) -> None:
        self.failure: str | None = None
        self.digest: str | None = None
        self._owner = owner
        self._writer = writer
        self._encoder: LayerEncoder | None = LayerEncoder(
            writer.file, owner.target, level=owner.level
        )

    def write(self, chunk: memoryview) -> None:
        if self._encoder is None:
            return
        try:
            self._encoder.write(chunk)
        except Exception as e:  # reported when (if) the member turns out to be needed
            self.failure = str(e)
            self._fail()
        self._owner.progress.advance(len(chunk))

    def finish(self) -> None:
        if self._encoder is None:
            return
        try:
            result = self._encoder.finish()
        except Exception as e:
            self.failure = str(e)
            self._fail()
            return
        self._encoder = None
        self.digest = result.diff_id
        self._owner.finished(result, self._writer)

    def _fail(self) -> None:
        if self._encoder is not None:
            self._encoder.abort()
            self._encoder = None
            self._writer.abort()

    def abort(self) -> None:
        self._fail()


class Speculator:
    """A ``Tee`` for ``TarArchive``: layer candidates are compressed into ``dest`` on arrival."""

    def __init__(
        self,
        dest: BlobStore,
        target: Compression,
        level: int | None,
        progress: ProgressReporter,
    ) -> None:
        self.dest = dest
        self.target = target
        self.level = level
        self.progress = progress
        self._results: dict[Digest, tuple[TranscodeResult, BlobWriter]] = {}
        self._open: list[_Speculation] = []

    def __call__(self, name: str, head: bytes) -> TeeSink | None:
        if not looks_like_tar(head):
            return None
        spec = _Speculation(self, self.dest.new_blob())
        self._open.append(spec)
        return spec

    def finished(self, result: TranscodeResult, writer: BlobWriter) -> None:
        previous = self._results.pop(result.diff_id, None)
        if previous is not None:  # the same content twice: keep one
            previous[1].abort()
        self._results[result.diff_id] = (result, writer)

    def take(self, content_digest: Digest) -> tuple[TranscodeResult, BlobWriter] | None:
        """The compressed blob made from uncompressed content with this digest, if any."""
        return self._results.pop(content_digest, None)

    def take_layer(self, layer: Layer) -> tuple[TranscodeResult, BlobWriter] | None:
        """The blob compressed from this (uncompressed) layer while the pipe was read,
        verified like any other (its size and diff_id), then committed. None if there is
        none."""
        if layer.compression is not Compression.NONE:
            return None
        taken = self.take(layer.descriptor.digest)
        if taken is None:
            return None
        result, writer = taken
        with writer:  # aborted unless it passes
            if result.uncompressed_size != layer.descriptor.size:
                raise VerificationError(
                    f"layer {layer.descriptor.digest}: {result.uncompressed_size} bytes, "
                    f"declared {layer.descriptor.size}"
                )
            check_diff_id(f"layer {layer.descriptor.digest}", result.diff_id, layer.diff_id)
            writer.commit(result.digest)
        return taken

    def discard(self) -> None:
        """Abort every blob nobody took (and any left unfinished by an error)."""
        for spec in self._open:  # those still encoding; finished ones are in _results
            with contextlib.suppress(Exception):
                spec.abort()
        for _, writer in self._results.values():
            with contextlib.suppress(Exception):
                writer.abort()
        self._results.clear()
        self._open.clear()
