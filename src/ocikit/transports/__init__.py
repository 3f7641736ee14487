"""Where images live. A reference string opens an ImageSource or an ImageDestination.

Each transport is a type registered by name (``kinds.py``): it parses its own reference and
opens its own source, index and destination. Parsing a reference loads no transport's
implementation (the registry client pulls in httpx): the names below that live in one load on
first use."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..lazy import lazy_names
from ..model import Platform
from .base import BlobWriter, ImageDestination, ImageSource, IndexSource
from .kinds import TRANSPORTS, Reference, Transport, TransportProperties, parse_reference

if TYPE_CHECKING:  # loaded on first use
    from .archive import Tee, TeeSink
    from .image import Image, Layer
    from .registry_options import Credentials, RegistryOptions

_LAZY = {
    "Credentials": "registry_options",
    "Image": "image",
    "Layer": "image",
    "RegistryOptions": "registry_options",
    "Tee": "archive",
    "TeeSink": "archive",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


def as_reference(ref: str | Reference) -> Reference:
    return ref if isinstance(ref, Reference) else parse_reference(ref)


def open_source(
    ref: str | Reference,
    platform: Platform | None = None,
    tee: Tee | None = None,
    registry: RegistryOptions | None = None,
) -> ImageSource:
    """``tee`` sees the members of an archive read from a pipe as they stream by;
    ``registry``: credentials and TLS for ``docker://``."""
    ref = as_reference(ref)
    return ref.kind.open_source(ref, platform, tee, registry)


def open_index(ref: str | Reference, registry: RegistryOptions | None = None) -> IndexSource:
    """What the reference names before a platform is picked (``index`` None: one image);
    a docker-archive or an engine holds no index."""
    ref = as_reference(ref)
    return ref.kind.open_index(ref, registry)


def open_image(
    ref: str | Reference,
    platform: str | Platform | None = None,
    tee: Tee | None = None,
    *,
    lenient: bool = False,
    registry: RegistryOptions | None = None,
) -> Image:
    """Open one image for reading (a context manager); every blob it streams is verified
    (``lenient``: see ``Image``)."""
    from .image import Image

    if isinstance(platform, str):
        platform = Platform.parse(platform)
    source = open_source(ref, platform, tee, registry)
    try:
        return Image(source, lenient=lenient)
    except BaseException:
        source.close()
        raise


def open_destination(
    ref: str | Reference,
    additional_tags: Sequence[str] = (),
    registry: RegistryOptions | None = None,
    *,
    verify_existing: bool = False,
) -> ImageDestination:
    """``verify_existing``: re-hash every blob found at the destination before relying on it
    (an OCI layout; a damaged one is replaced)."""
    ref = as_reference(ref)
    if ref.selects:
        raise UsageError(
            f"{ref}: @N and @DIGEST select a stored image to read; a destination is named "
            f"PATH or PATH:NAME"
        )
    return ref.kind.open_destination(ref, additional_tags, registry, verify_existing)


__all__ = [
    "TRANSPORTS",
    "BlobWriter",
    "Credentials",
    "Image",
    "ImageDestination",
    "ImageSource",
    "IndexSource",
    "Layer",
    "Reference",
    "RegistryOptions",
    "Tee",
    "TeeSink",
    "Transport",
    "TransportProperties",
    "as_reference",
    "open_destination",
    "open_image",
    "open_index",
    "open_source",
    "parse_reference",
]
