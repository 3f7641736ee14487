"""``gc``: reclaim what interrupted or killed runs left behind.

Every temporary file and directory ocikit makes is locked by its maker while it lives (see
``transports.fsutil``), so what can be locked without waiting belongs to no live process
and goes. The next run that writes the same place reclaims the same things on its own;
``gc`` is for places no run will write again soon, and for ``$TMPDIR``.

- ``$TMPDIR``: staging of oci-archive, docker-archive, registry pushes and ``build
  --no-cache`` (``ocikit-tmp-*``).
- An OCI layout (``oci:DIR``): the private directories of dead writers and the blobs
  they put in place that ``index.json`` does not reach and no live writer relies on; with
  ``unreferenced``, every blob ``index.json`` does not reach (as ``umoci gc`` does).
- Any other directory (an ``export-layers`` OUTDIR, where archives are written): dead
  ``.ocikit-tmp-*`` staging and temporary files. ``oci-archive:FILE`` and
  ``docker-archive:FILE``: the temporary files of that archive.

Older versions of ocikit did not lock their temporary files; ``gc`` removes those too
(``ocikit-oci-archive-*``, ``.ocikit-export-*``...), so run it while no older ocikit runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from ..errors import NotFoundError, UsageError
from ..transports.fsutil import HIDDEN_TMP_PREFIX, TMP_PREFIX, reclaim, temp_root
from ..transports.oci_layout import collect_layout
from ..transports.reference import parse_reference

#: what versions that did not lock their temporary files named them
_LEGACY_TMP = (
    "ocikit-oci-archive-",
    "ocikit-docker-archive-",
    "ocikit-push-",
    "ocikit-build-cache-",
)
_LEGACY_OUTDIR = (".ocikit-export-",)


@dataclass
class GcResult:
    removed: list[str] = field(default_factory=list)  # files and directories (a blob: its path)
    bytes: int = 0

    def add(self, entries: list[tuple[str, int]]) -> None:
        for path, size in entries:
            self.removed.append(path)
            self.bytes += size

    def to_json(self) -> dict[str, Any]:
        return {"removed": self.removed, "bytes": self.bytes}


def gc(paths: list[str] | tuple[str, ...] = (), *, unreferenced: bool = False) -> GcResult:
    """Reclaim what dead ocikit processes left in ``$TMPDIR`` and in each of ``paths``: an
    OCI layout (``oci:DIR`` or its directory), an ``oci-archive:``/``docker-archive:``
    file, or a directory ocikit writes into. ``unreferenced``: also remove every blob of a
    layout that index.json does not reach (no live writer claims)."""
    result = GcResult()
    tmp = temp_root()
    result.add(reclaim(tmp, (TMP_PREFIX, *_LEGACY_TMP)))
    for text in paths:
        _one(text, unreferenced, result)
    return result


def _one(text: str, unreferenced: bool, result: GcResult) -> None:
    transport, sep, _ = text.partition(":")
    if sep and transport in ("oci", "oci-archive", "docker-archive"):
        ref = parse_reference(text)
        if ref.is_stdio:
            raise UsageError(f"{text}: gc takes a directory or a file, not a stream")
        if transport == "oci":
            _layout(ref.path, unreferenced, result)
            return
        directory = os.path.dirname(os.path.abspath(ref.path))
        base = os.path.basename(ref.path)
        if not os.path.isdir(directory):
            raise NotFoundError(f"{text}: no such directory {directory}")
        result.add(reclaim(directory, (f"{HIDDEN_TMP_PREFIX}{base}-", f".{base}.tmp-")))
        return
    if not os.path.isdir(text):
        raise NotFoundError(f"{text}: no such directory")
    if os.path.isfile(os.path.join(text, "oci-layout")):
        _layout(text, unreferenced, result)
    else:
        result.add(reclaim(text, (HIDDEN_TMP_PREFIX, *_LEGACY_OUTDIR)))


def _layout(path: str, unreferenced: bool, result: GcResult) -> None:
    if not os.path.isdir(path):
        raise NotFoundError(f"{path}: no such OCI layout directory")
    if not os.path.isfile(os.path.join(path, "oci-layout")):
        raise UsageError(f"{path}: not an OCI layout (no oci-layout file)")
    result.add(collect_layout(path, unreferenced))


__all__ = ["GcResult", "gc"]
