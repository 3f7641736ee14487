"""Pure data: digests, descriptors, manifests, indexes, configs, media types.

The names below load on first use (``from ocikit.model import Digest`` imports
``model.digest``): a module that needs only ``model.jsondoc`` or ``model.mediatypes`` (the
command line's start) loads neither hashlib nor the manifest model."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names

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


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


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
