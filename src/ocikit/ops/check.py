"""``check``: what consumers reject or break on, found in one streaming pass over each layer."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError, NotFoundError
from ..layer.analyze import ERROR, WARNING, Finding, LayerAnalyzer, Tree
from ..layer.bounds import DEFAULT_MAX_RATIO
from ..layer.scan import ScanResult, scan_layer
from ..layer.tarstream import TarEntry, TarStream
from ..model import Compression
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
    for i, layer in enumerate(image.layers):
        analyzer = LayerAnalyzer(tree, i, layer.descriptor.digest)
        findings += analyze_layer(image, i, analyzer, max_ratio, strict=True)
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
    with _collector_paused():
        for i, layer in enumerate(image.layers):
            if i < start:
                continue
            desc = layer.descriptor
            progress.step(f"layer {i + 1}/{len(image.layers)} {desc.digest.hex[:12]}")
            analyzer = LayerAnalyzer(tree, i, desc.digest)
            findings = analyze_layer(image, i, analyzer, max_ratio, progress.advance)
            report.entries += analyzer.entries
            report.findings.extend(findings)
    return report


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while the layers are walked: the walk makes no
    reference cycles (reference counting frees what it drops), and every full collection
    would traverse the whole tree of paths again (a tenth of a second of the walk of
    50,000 entries). On again after, as it was."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def scan_image_layer(
    image: Image,
    index: int,
    on_entry: Callable[[int, TarEntry, TarStream | None], None] | None,
    *,
    declared: Compression | None,
    max_ratio: float | None,
    strict: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ScanResult:
    """Layer ``index`` of ``image`` read once, a tar or a squashfs layer: its digests, its
    entries to ``on_entry`` (a squashfs entry comes with no stream), its problems
    (``declared``: the compression its media type says, None to take what it is).
    NotFoundError if the blob is missing; InputError if it cannot be read."""
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
        )
    finally:
        raw.close()
    whole = result.digest == desc.digest and result.size == desc.size
    compressed = result.compression in (Compression.GZIP, Compression.ZSTD)
    if whole and compressed and result.diff_id is not None:
        from ..layer import verified  # the blob inflates to diff_id: a push need not re-check

        verified.remember([(desc.digest, result.diff_id)])
    return result


def analyze_layer(
    image: Image,
    index: int,
    analyzer: LayerAnalyzer,
    max_ratio: float | None,
    progress: Callable[[int], None] | None = None,
    strict: bool = False,
) -> list[Finding]:
    """Read layer ``index`` once, feeding its entries to ``analyzer``; all its findings."""
    layer = image.layers[index]
    desc = layer.descriptor
    known = any(r == "media-type" and n == index for r, _m, n in image.problems)

    def feed(i: int, entry: TarEntry, _stream: TarStream | None) -> None:
        analyzer.feed(i, entry)

    try:
        result = scan_image_layer(
            image,
            index,
            feed,
            declared=None if known else layer.compression,
            max_ratio=max_ratio,
            strict=strict,
            progress=progress,
        )
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
        analyzer.findings.extend(
            Finding(rule, message, index, desc.digest) for rule, message in result.problems
        )
    return analyzer.findings
