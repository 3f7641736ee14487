"""Pure data: digests, descriptors, manifests, indexes, configs, media types."""

from .descriptor import Descriptor, Platform
from .digest import Digest
from .manifest import ImageConfig, Index, Manifest, canonical_json, parse_manifest_or_index
from .mediatypes import Compression

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
