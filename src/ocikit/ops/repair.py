"""``copy --repair``: rewrite only the layers consumers would reject or get wrong.

Pass 1 reads every layer once with the analyzer in repair mode, which plans per entry what
the repaired layer holds (``Edit``: keep, drop, rename) against the filesystem the
*repaired* lower layers leave. Pass 2 is an ordinary copy in which the layers with a plan are
rewritten entry by entry: kept entries keep their exact header and data bytes, renamed ones
get a new PAX header, dropped ones vanish. Untouched layers keep their bytes and digests.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

from ..errors import Option, UnsafeInputError
from ..layer.analyze import Action, Edit, Finding, LayerAnalyzer, Tree
from ..layer.compress import decompressing_reader
from ..layer.streams import CHUNK
from ..layer.tarstream import BLOCK, TarEntry, TarStream
from ..layer.transcode import LayerEncoder, TranscodeResult
from ..model import Compression, ImageConfig, canonical_json, mutate
from ..transports import Image, Layer
from .check import analyze_layer
from .progress import ProgressReporter


@dataclass
class RepairPlan:
    edits: dict[int, dict[int, Edit]] = field(default_factory=dict)  # layer -> entry -> edit
    findings: list[Finding] = field(default_factory=list)  # what was found (and is fixed)

    def summary(self) -> list[dict[str, Any]]:
        out = []
        for layer, edits in sorted(self.edits.items()):
            counts: dict[str, int] = {}
            for e in edits.values():
                key = f"{e.action.value}:{e.reason}"
                counts[key] = counts.get(key, 0) + 1
            out.append({"layer": layer, "entries": dict(sorted(counts.items()))})
        return out


def plan_repair(image: Image, *, drop_unsafe: bool, progress: ProgressReporter) -> RepairPlan:
    """Pass 1: every layer read once (and verified); raises UnsafeInputError on an entry
    that cannot be repaired safely, unless ``drop_unsafe``."""
    image.require_tar_layers("--repair")
    plan = RepairPlan()
    tree = Tree()
    progress.begin(sum(layer.descriptor.size for layer in image.layers), "checking")
    for i, layer in enumerate(image.layers):
        progress.step(f"checking layer {i + 1}/{len(image.layers)}")
        analyzer = LayerAnalyzer(
            tree, i, layer.descriptor.digest, repair=True, drop_unsafe=drop_unsafe
        )
        analyze_layer(image, i, analyzer, None, progress.advance, strict=True)
        if analyzer.unsafe:
            f = analyzer.unsafe[0]
            more = f" (and {len(analyzer.unsafe) - 1} more)" if len(analyzer.unsafe) > 1 else ""
            raise UnsafeInputError(
                f"cannot repair layer {i} safely: {f.rule}: {f.message}{more}; ",
                Option("drop_unsafe"),
                " drops such entries",
            )
        edits = {k: e for k, e in analyzer.edits.items() if e.action is not Action.KEEP}
        if edits:
            plan.edits[i] = edits
        plan.findings.extend(analyzer.findings)
    return plan


def rewrite_layer(
    image: Image,
    layer: Layer,
    edits: dict[int, Edit],
    out: BinaryIO,
    target: Compression,
    level: int | None,
    progress: ProgressReporter,
) -> TranscodeResult:
    """Pass 2 for one layer: its entries with ``edits`` applied, compressed into ``out``."""
    encoder = LayerEncoder(out, target, level=level)
    try:
        with image.open_blob(layer.descriptor, progress=progress.advance) as raw:
            plain = decompressing_reader(raw, layer.compression)  # type: ignore[arg-type]
            try:
                stream = TarStream(
                    io.BufferedReader(cast(io.RawIOBase, plain), CHUNK),
                    what=f"layer {layer.descriptor.digest}",
                    keep_raw=True,
                )
                _rewrite(stream, edits, encoder)
            finally:
                if plain is not raw:
                    plain.close()
            raw.drain()  # verifies the blob's digest and size
    except BaseException:
        encoder.abort()
        raise
    return encoder.finish()


def _rewrite(stream: TarStream, edits: dict[int, Edit], encoder: LayerEncoder) -> None:
    """Entries kept are copied byte for byte (headers, data, padding as stored); renamed ones
    get a new header and their data (a sparse file's holes written out)."""
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    for i, entry in enumerate(stream):
        edit = edits.get(i)
        if edit is not None and edit.action is Action.DROP:
            continue
        if edit is None or edit.action is Action.KEEP:
            encoder.write(bytes(stream.raw_header))
            stream.copy_raw(encoder.write)
            continue
        size = entry.size if entry.isreg() else 0
        encoder.write(_header(entry, edit, size))
        remaining = size
        while remaining:
            n = stream.readinto(view[: min(len(view), remaining)])
            encoder.write(view[:n])
            remaining -= n
        if pad := -size % BLOCK:
            encoder.write(bytes(pad))
    encoder.write(bytes(2 * BLOCK))


_PAX_REPLACED = {"path", "linkpath", "size"}


def _header(entry: TarEntry, edit: Edit, size: int) -> bytes:
    info = tarfile.TarInfo(edit.name)
    info.type = entry.type
    info.size = size
    info.mode = entry.mode
    info.uid, info.gid = entry.uid, entry.gid
    info.uname, info.gname = entry.uname, entry.gname
    info.mtime = entry.mtime  # a PAX mtime with a fraction is kept as its record below
    info.linkname = edit.linkname if edit.linkname is not None else entry.linkname
    info.devmajor, info.devminor = entry.devmajor, entry.devminor
    info.pax_headers = {
        k: v
        for k, v in (entry.pax or {}).items()
        if k not in _PAX_REPLACED and not k.startswith("GNU.sparse.")
    }
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def repaired_config(config: ImageConfig, diff_ids: dict[int, str]) -> ImageConfig:
    """The config with the rewritten layers' diff_ids; every other byte of meaning kept
    (its keys in their order; a lone surrogate, an escape like \\ud800 in the source, goes
    back as that escape: ``canonical_json``)."""
    data = json.loads(config.raw)  # bounded and validated when the config was parsed
    ids = list(data["rootfs"]["diff_ids"])
    for i, d in diff_ids.items():
        ids[i] = d
    return mutate.to_config(canonical_json(mutate.with_diff_ids(data, ids)), "repaired config")
