"""``check``: what consumers reject or break on, found in one streaming pass over each layer."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError, NotFoundError
from ..layer.analyze import ERROR, WARNING, Finding, LayerAnalyzer, Tree, collector_paused
from ..layer.bounds import DEFAULT_MAX_RATIO
from ..layer.compress import INFLATE_DEPTH
from ..layer.scan import ScanResult, Stopped, scan_layer
from ..layer.tarstream import TarEntry, TarStream
from ..model import Compression, Digest
from ..model.jsondoc import counted
from ..transports import Image, Reference, RegistryOptions, as_reference, open_image
from .progress import NullProgress, ProgressReporter


@dataclass
class CheckReport:
    reference: str
    digest: str
    layers: int
    entries: int = 0
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return sum(1 for f in self.findings if f.severity == ERROR)

    @property
    def warnings(self) -> int:
        return sum(1 for f in self.findings if f.severity == WARNING)

    def exit_code(self, strict: bool = False) -> int:
        """0 clean, 1 errors (or, ``strict``, warnings) found."""
        return 1 if self.errors or (strict and self.warnings) else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "layers": self.layers,
            "entries": self.entries,
            "errors": self.errors,
            "warnings": self.warnings,
            "ok": self.errors == 0,
            "findings": [f.to_dict() for f in self.findings],
        }


def check(
    ref: str | Reference,
    *,
    platform: str | None = None,
    max_ratio: float = DEFAULT_MAX_RATIO,
    progress: ProgressReporter | None = None,
    registry: RegistryOptions | None = None,
) -> CheckReport:
    """Check one image (any reference; ``registry``: how to reach a ``docker://`` one);
    each layer is read once. Raises only when the image cannot be read at all (no
    manifest, no config): everything else is a finding."""
    progress = progress or NullProgress()
    ref = as_reference(ref)
    try:
        with open_image(ref, platform, lenient=True, registry=registry) as image:
            return _check_image(image, str(ref), max_ratio, progress)
    finally:
        progress.end()


@dataclass
class LowerLayers:
    """The first ``count`` layers of an image, analyzed already: the tree they leave, their
    findings and entries (an image built on them is checked from there on)."""

    count: int
    tree: Tree
    findings: list[Finding]
    entries: int


def analyze_lower(image: Image, max_ratio: float | None = DEFAULT_MAX_RATIO) -> LowerLayers:
    """Every layer of ``image`` read once (verified: an unreadable layer raises)."""
    tree = Tree()
    findings: list[Finding] = []
    entries = 0
    layers = range(len(image.layers))
    with (
        recording_verified() as verified,
        _read_ahead(image, layers, max_ratio, strict=True) as ahead,
    ):
        for i, layer in enumerate(image.layers):
            analyzer = LayerAnalyzer(tree, i, layer.descriptor.digest)
            findings += analyze_layer(
                image, i, analyzer, max_ratio, strict=True, ahead=ahead, verified=verified
            )
            entries += analyzer.entries
    return LowerLayers(len(image.layers), tree, findings, entries)


def check_image(
    image: Image,
    reference: str,
    max_ratio: float = DEFAULT_MAX_RATIO,
    lower: LowerLayers | None = None,
) -> CheckReport:
    """``check`` of an image already open; ``lower``: its first layers, analyzed already
    (their tree is used up), so only the layers above them are read."""
    return _check_image(image, reference, max_ratio, NullProgress(), lower)


def _check_image(
    image: Image,
    reference: str,
    max_ratio: float,
    progress: ProgressReporter,
    lower: LowerLayers | None = None,
) -> CheckReport:
    report = CheckReport(reference, image.digest, len(image.layers))
    report.findings.extend(
        Finding(
            rule, message, layer, None if layer is None else image.layers[layer].descriptor.digest
        )
        for rule, message, layer in image.problems
    )
    history = [h for h in image.config.history if not h.get("empty_layer")]
    if image.config.history and len(history) != len(image.layers):
        report.findings.append(
            Finding(
                "history-count",
                f"the config's history has {counted(len(history), 'entry', 'entries')} for "
                f"layers but the image has {counted(len(image.layers), 'layer')}",
            )
        )
    tree = Tree() if lower is None else lower.tree
    start = 0 if lower is None else lower.count
    if lower is not None:
        report.findings.extend(lower.findings)
        report.entries += lower.entries
    progress.begin(sum(layer.descriptor.size for layer in image.layers), "checking")
    layers = range(start, len(image.layers))
    with (
        recording_verified() as verified,
        collector_paused(),
        _read_ahead(image, layers, max_ratio, progress.advance) as ahead,
    ):
        for i in layers:
            desc = image.layers[i].descriptor
            progress.step(f"layer {i + 1}/{len(image.layers)} {desc.digest.hex[:12]}")
            analyzer = LayerAnalyzer(tree, i, desc.digest)
            findings = analyze_layer(
                image, i, analyzer, max_ratio, progress.advance, ahead=ahead, verified=verified
            )
            report.entries += analyzer.entries
            report.findings.extend(findings)
    return report


def scan_image_layer(
    image: Image,
    index: int,
    on_entry: Callable[[int, TarEntry, TarStream | None], None] | None,
    *,
    declared: Compression | None,
    max_ratio: float | None,
    strict: bool = False,
    progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
    depth: int = INFLATE_DEPTH,
) -> ScanResult:
    """Layer ``index`` of ``image`` read once, a tar or a squashfs layer: its digests, its
    entries to ``on_entry`` (a squashfs entry comes with no stream), its problems
    (``declared``: the compression its media type says, None to take what it is).
    NotFoundError if the blob is missing; InputError if it cannot be read; ``stop`` set:
    ``Stopped`` (a tar layer's at its next block); ``depth``: its blocks in flight."""
    layer = image.layers[index]
    desc = layer.descriptor
    raw = image.source.open_blob(desc)
    try:
        if layer.compression is Compression.SQUASHFS:
            from ..layer import squashfs  # here: a tar image's check runs no squashfs tool

            return squashfs.scan(
                raw,
                desc,
                layer.diff_id,
                on_entry,
                max_ratio=max_ratio,
                strict=strict,
                progress=progress,
            )
        result = scan_layer(
            raw,
            desc,
            declared,
            layer.diff_id,
            on_entry,
            max_ratio=max_ratio,
            strict=strict,
            progress=progress,
            stop=stop,
            depth=depth,
        )
    finally:
        raw.close()
    return result


def verified_pair(image: Image, index: int, result: ScanResult) -> tuple[Digest, Digest] | None:
    """(blob digest, diff_id) when layer ``index``'s scan read its compressed blob whole and
    found its digest: the blob inflates to that diff_id (a push of it need not re-check)."""
    desc = image.layers[index].descriptor
    whole = result.digest == desc.digest and result.size == desc.size
    compressed = result.compression in (Compression.GZIP, Compression.ZSTD)
    if whole and compressed and result.diff_id is not None:
        return desc.digest, result.diff_id
    return None


@contextlib.contextmanager
def recording_verified() -> Iterator[list[tuple[Digest, Digest]]]:
    """A list for the ``verified_pair`` of each layer an operation reads, added to the user's
    record (``layer.verified``) once when it ends, however it ends: one rewrite of the record
    for an image, not one a layer."""
    pairs: list[tuple[Digest, Digest]] = []
    try:
        yield pairs
    finally:
        if pairs:
            from ..layer import verified  # here: an operation that verified nothing loads none

            verified.remember(pairs)


def analyze_layer(
    image: Image,
    index: int,
    analyzer: LayerAnalyzer,
    max_ratio: float | None,
    progress: Callable[[int], None] | None = None,
    strict: bool = False,
    *,
    ahead: ReadAhead | None = None,
    verified: list[tuple[Digest, Digest]] | None = None,
) -> list[Finding]:
    """Read layer ``index`` once, feeding its entries to ``analyzer``; all its findings.
    ``ahead``: the layer read there (its ``max_ratio``, ``strict`` and progress its own)."""
    desc = image.layers[index].descriptor

    def feed(i: int, entry: TarEntry, _stream: TarStream | None) -> None:
        analyzer.feed(i, entry)

    try:
        if ahead is not None:
            result = ahead.layer(index, analyzer.feed, strict)
        else:
            result = _scan_for_analysis(image, index, feed, max_ratio, strict, progress)
    except NotFoundError as e:
        analyzer.findings.append(Finding("layer-unreadable", str(e), index, desc.digest))
        return analyzer.findings
    except InputError as e:
        if strict:
            raise
        result = None
        analyzer.findings.append(Finding("layer-unreadable", str(e), index, desc.digest))
    analyzer.finish()
    if result is not None:
        pair = verified_pair(image, index, result)
        if pair is not None and verified is not None:
            verified.append(pair)
        elif pair is not None:
            with recording_verified() as pairs:
                pairs.append(pair)
        analyzer.findings.extend(
            Finding(rule, message, index, desc.digest) for rule, message in result.problems
        )
    return analyzer.findings


def _scan_for_analysis(
    image: Image,
    index: int,
    on_entry: Callable[[int, TarEntry, TarStream | None], None],
    max_ratio: float | None,
    strict: bool,
    progress: Callable[[int], None] | None,
    stop: threading.Event | None = None,
    depth: int = INFLATE_DEPTH,
) -> ScanResult:
    """Layer ``index`` scanned for ``LayerAnalyzer`` (headers only, never entry data)."""
    layer = image.layers[index]
    known = any(r == "media-type" and n == index for r, _m, n in image.problems)
    return scan_image_layer(
        image,
        index,
        on_entry,
        declared=None if known else layer.compression,
        max_ratio=max_ratio,
        strict=strict,
        progress=progress,
        stop=stop,
        depth=depth,
    )


#: the layers analyzed read ahead on a thread of their own (False: each read in its turn)
READ_AHEAD = True


def _read_ahead(
    image: Image,
    layers: range,
    max_ratio: float | None,
    progress: Callable[[int], None] | None = None,
    *,
    strict: bool = False,
) -> contextlib.AbstractContextManager[ReadAhead | None]:
    if not READ_AHEAD:
        return contextlib.nullcontext()
    return ReadAhead(image, layers, max_ratio, progress, strict=strict)


#: entries waiting for their analysis, at most, per layer: this many, of about this many
#: bytes (an entry's names, PAX records and sparse map: a hostile layer's cannot pile up)
AHEAD_ENTRIES = 1024
AHEAD_BYTES = 2 << 20
_BATCH = 256  # entries handed over at a time
#: blocks in flight per thread of a scan read ahead: two scans run at once, and the entries
#: waiting between them and the analysis do what deeper queues did (as fast, ~10 MB less)
AHEAD_DEPTH = 2


class _Lane:
    """One layer's scan: its thread, and what it found, waiting in order for the analysis."""

    def __init__(self) -> None:
        self.items: deque[tuple[list[TarEntry] | ScanResult | BaseException, int]] = deque()
        self.count = 0  # entries waiting
        self.size = 0  # their estimated bytes
        self.thread: threading.Thread | None = None
        self.done = False  # the scan has ended


class ReadAhead:
    """The layers of ``layers`` scanned for ``LayerAnalyzer`` (which needs the entries'
    headers, never their data) on threads of their own, one layer ahead of the analysis at
    most: while layer k's entries are analyzed, layer k+1 is already read, hashed, inflated
    and its headers walked, beside what is left of layer k's scan, so both cores stay busy
    across the layers (each layer's inflating is one sequential chain: two of them run at
    once); from a source whose blobs cannot be read at once (a stream), layer k+1's scan
    starts when layer k's ends. A layer's entries wait in order, ``entries`` of about
    ``size`` bytes at most (past that its scan waits); ``layer`` hands them over, then the
    layer's verdict (its ``ScanResult``, or the error its scan raised), as
    ``scan_image_layer`` would have: same entries, same results, same errors, same order.
    Leaving the ``with`` stops the scans (their threads at their next block) and waits for
    them."""

    def __init__(
        self,
        image: Image,
        layers: range,
        max_ratio: float | None,
        progress: Callable[[int], None] | None = None,
        *,
        strict: bool = False,
        entries: int = AHEAD_ENTRIES,
        size: int = AHEAD_BYTES,
    ) -> None:
        self._image = image
        self._layers = layers
        self._max_ratio = max_ratio
        self._progress = progress
        self._strict = strict
        self._max_entries = max(1, entries)
        self._max_size = size
        # handed over in batches: of entries, or of bytes, a fraction of the bound
        self._batch = min(_BATCH, self._max_entries)
        self._batch_size = max(1, size // 4)
        # two scans at once where the source allows it, else each after the one before
        self._concurrent = image.source.properties.concurrent
        self._cond = threading.Condition()
        self._lanes: dict[int, _Lane] = {}
        self._current = layers.start  # the layer being analyzed
        self._stop = threading.Event()  # set: the layers are no longer wanted

    def __enter__(self) -> ReadAhead:
        with self._cond:
            self._start_scans()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._cond:
            self._stop.set()
            lanes = list(self._lanes.values())
            for lane in lanes:
                lane.items.clear()
            self._cond.notify_all()
        # a scan stops at its next block or entry; one blocked on its input (a pipe that
        # says nothing) is a daemon thread, left to the process's end
        deadline = time.monotonic() + 5
        for lane in lanes:
            while lane.thread is not None and lane.thread.is_alive():
                if time.monotonic() > deadline:
                    return
                lane.thread.join(0.05)

    def _start_scans(self) -> None:
        """The layer analyzed and the next one scanning (or scanned); under ``_cond``."""
        for index in (self._current, self._current + 1):
            if index not in self._layers or index in self._lanes or self._stop.is_set():
                continue
            before = self._lanes.get(index - 1)
            if not self._concurrent and before is not None and not before.done:
                return  # started when that one ends
            lane = self._lanes[index] = _Lane()
            lane.thread = threading.Thread(
                target=self._scan, args=(index, lane), name="ocikit-ahead", daemon=True
            )
            lane.thread.start()

    def layer(
        self, index: int, feed: Callable[[int, TarEntry], None], strict: bool = False
    ) -> ScanResult:
        """Layer ``index``'s entries to ``feed``, in order; then its result, or its error."""
        if strict != self._strict:
            raise ValueError("ReadAhead: a layer asked with another strictness")
        if index != self._current and index != self._current + 1:
            raise ValueError(f"ReadAhead: layer {index} asked out of order")
        with self._cond:
            self._lanes.pop(self._current - 1, None)  # done with
            self._current = index
            self._start_scans()
            lane = self._lanes[index]
        n = 0
        while True:
            with self._cond:
                while not lane.items:
                    assert lane.thread is not None
                    if not lane.thread.is_alive():  # cannot be: it always hands a verdict
                        raise RuntimeError("ReadAhead: a scan ended without a verdict")
                    self._cond.wait(0.5)
                item, size = lane.items.popleft()
                if isinstance(item, list):
                    lane.count -= len(item)
                    lane.size -= size
                    self._cond.notify_all()
            if isinstance(item, list):
                for entry in item:
                    feed(n, entry)
                    n += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                return item

    def _put(
        self, lane: _Lane, item: list[TarEntry] | ScanResult | BaseException, size: int
    ) -> None:
        count = len(item) if isinstance(item, list) else 0
        with self._cond:
            while (
                not self._stop.is_set()
                and lane.count
                and (lane.count + count > self._max_entries or lane.size + size > self._max_size)
            ):
                self._cond.wait()
            if self._stop.is_set():
                raise Stopped
            lane.items.append((item, size))
            lane.count += count
            lane.size += size
            self._cond.notify_all()

    def _advance(self, n: int) -> None:
        if self._stop.is_set():
            raise Stopped  # on the thread reading the blob: its scan stops there
        if self._progress is not None:
            self._progress(n)

    def _scan(self, index: int, lane: _Lane) -> None:
        batch: list[TarEntry] = []
        size = 0

        def feed(_n: int, entry: TarEntry, _stream: TarStream | None) -> None:
            nonlocal batch, size
            if self._stop.is_set():
                raise Stopped
            batch.append(entry)
            size += _footprint(entry)
            if len(batch) >= self._batch or size >= self._batch_size:
                self._put(lane, batch, size)
                batch, size = [], 0

        outcome: ScanResult | BaseException
        try:
            outcome = _scan_for_analysis(
                self._image,
                index,
                feed,
                self._max_ratio,
                self._strict,
                self._advance,
                self._stop,
                AHEAD_DEPTH,
            )
        except Stopped:
            return
        except BaseException as e:  # handed to the analysis, raised there in its place
            outcome = e
        finally:
            with self._cond:
                lane.done = True
                self._start_scans()  # the next one, where scans run one after another
        with contextlib.suppress(Stopped):
            if batch:
                self._put(lane, batch, size)
            self._put(lane, outcome, 0)


def _footprint(entry: TarEntry) -> int:
    """About the bytes an entry held in memory costs."""
    n = 512 + len(entry.name) + len(entry.linkname)
    if entry.pax:
        n += sum(64 + len(k) + len(v) for k, v in entry.pax.items())
    if entry.sparse:
        n += 96 * len(entry.sparse)
    return n
