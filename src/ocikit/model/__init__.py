"""Pure data: digests, descriptors, manifests, indexes, configs, media types.

The names below load on first use (``from ocikit.model import Digest`` imports
``model.digest``): a module that needs only ``model.jsondoc`` or ``model.mediatypes`` (the
command line's start) loads neither hashlib nor the manifest model."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .descriptor import Descriptor, Platform
    from .digest import Digest
    from .manifest import ImageConfig, Index, Manifest, canonical_json, parse_manifest_or_index
    from .mediatypes import Compression

#: where each name lives
_LAZY = {
    "Compression": "mediatypes",
    "Descriptor": "descriptor",
    "Digest": "digest",
    "ImageConfig": "manifest",
    "Index": "manifest",
    "Manifest": "manifest",
    "Platform": "descriptor",
    "canonical_json": "manifest",
    "parse_manifest_or_index": "manifest",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "Compression",
    "Descriptor",
    "Digest",
    "ImageConfig",
    "Index",
    "Manifest",
    "Platform",
    "canonical_json",
    "parse_manifest_or_index",
]
