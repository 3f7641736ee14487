"""The check of a layer this build writes, judged on its entries as they are written.

A built image is checked like any other before the cache names it (``ops.check``): every
entry of every layer through ``layer.analyze.LayerAnalyzer``. The base's layers were read
once already (``ops.check.analyze_lower``); the new layer need not be read back either: its
writer (``layer.tarwriter.tar_header``) makes each header from the values given here, and
the analyzer judges an entry by its name, type, link target, owner and device numbers
alone, which ocikit's tar reader gives back exactly as they were written (names and link
targets as UTF-8 with surrogate escapes, in the ustar fields or PAX records; numbers in
octal or PAX decimal).

What is not certain to read back the same is not judged here: a NUL in a name or a link
target (a reader stops there), a negative owner, a device number too large for its field;
nor a layer that a reader would stop as a decompression bomb or take for another
compression. Then ``lower`` gives None and the image is checked by reading all of it."""

from __future__ import annotations

import dataclasses

from ..layer.analyze import LayerAnalyzer
from ..layer.bounds import BOMB_FLOOR, DEFAULT_MAX_RATIO
from ..layer.compress import detect
from ..layer.tarstream import TarEntry
from ..layer.transcode import TranscodeResult
from ..model import Compression
from ..ops.check import LowerLayers

_DEV_MAX = 0o7777777  # a ustar device number field


class LayerJudge:
    """Feed ``entry`` with each entry as its header is written, then give the encoder's
    result (``written``); ``lower`` is then the image's layers judged, for ``check_image``."""

    def __init__(self, lower: LowerLayers) -> None:
        self._lower = lower
        self.analyzer = LayerAnalyzer(lower.tree, lower.count)  # the layer above the base
        self.exact = True
        self.used = False  # entries fed: the base's tree is this layer's now
        self._result: TranscodeResult | None = None
        self._compression = Compression.NONE
        self._head = b""

    def entry(
        self,
        name: str,
        kind: bytes,
        linkname: str,
        uid: int,
        gid: int,
        devmajor: int = 0,
        devminor: int = 0,
    ) -> None:
        """One entry, as its header is written."""
        self.used = True
        if not self.exact:
            return
        if (
            "\0" in name
            or "\0" in linkname
            or uid < 0
            or gid < 0
            or not 0 <= devmajor <= _DEV_MAX
            or not 0 <= devminor <= _DEV_MAX
        ):
            self.exact = False  # judged by reading the layer back
            return
        entry = TarEntry(name, kind, 0, linkname, uid=uid, gid=gid)
        entry.devmajor, entry.devminor = devmajor, devminor
        self.analyzer.feed(self.analyzer.entries, entry)

    def written(self, result: TranscodeResult, compression: Compression, head: bytes) -> None:
        """The layer's blob as the encoder wrote it; ``head``: the first bytes of its tar."""
        self._result, self._compression, self._head = result, compression, head

    def lower(self, layers: int) -> LowerLayers | None:
        """All ``layers`` of the image judged (the base's and this one), or None: the image
        must be checked by reading it (``used``: the base's tree is spent)."""
        result = self._result
        if not self.exact or result is None or layers != self._lower.count + 1:
            return None
        if self._compression is Compression.NONE:
            if detect(self._head) is not Compression.NONE:
                return None  # a reader would take the tar for a compressed stream
        elif result.uncompressed_size > max(BOMB_FLOOR, int(DEFAULT_MAX_RATIO * result.size)):
            return None  # a reader stops there
        self.analyzer.layer_digest = result.digest
        self.analyzer.finish()
        digest = result.digest
        findings = [
            f if f.layer_digest == digest else dataclasses.replace(f, layer_digest=digest)
            for f in self.analyzer.findings
        ]
        return LowerLayers(
            layers,
            self._lower.tree,
            self._lower.findings + findings,
            self._lower.entries + self.analyzer.entries,
        )


__all__ = ["LayerJudge"]
