"""Where images live. A reference string opens an ImageSource or an ImageDestination."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import UsageError
from ..model import Descriptor, Platform
from .archive import Tee, TeeSink
from .base import BlobWriter, ImageDestination, ImageSource, IndexSource
from .daemon import DaemonDestination, DaemonSource
from .docker_archive import DockerArchiveDestination, DockerArchiveSource
from .image import Image, Layer
from .oci_layout import OciArchiveDestination, OciIndex, OciLayoutDestination, OciLayoutSource
from .reference import TRANSPORTS, Reference, parse_reference
from .registry import RegistryDestination, RegistryIndex, RegistryOptions, RegistrySource
from .registry_client import Credentials


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
    if ref.transport == "docker":
        return RegistrySource(ref, platform, registry)
    if ref.transport == "docker-archive":
        return DockerArchiveSource(ref, tee)
    if ref.transport == "docker-daemon":
        return DaemonSource(ref, tee)
    return OciLayoutSource(ref, platform)


def open_index(ref: str | Reference, registry: RegistryOptions | None = None) -> IndexSource:
    """What the reference names before a platform is picked (``index`` None: one image);
    a docker-archive or an engine holds no index."""
    ref = as_reference(ref)
    if ref.transport == "docker":
        return RegistryIndex(ref, registry)
    if ref.transport in ("oci", "oci-archive"):
        return OciIndex(ref)
    return _NoIndex(ref)


class _NoIndex(IndexSource):
    def __init__(self, ref: Reference) -> None:
        self.ref = ref
        self.index = None

    def open_child(self, descriptor: Descriptor) -> ImageSource:  # pragma: no cover
        raise AssertionError("no index")


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
) -> ImageDestination:
    ref = as_reference(ref)
    if ref.selects:
        raise UsageError(
            f"{ref}: @N and @DIGEST select a stored image to read; a destination is named "
            f"PATH or PATH:NAME"
        )
    if ref.transport == "docker":
        return RegistryDestination(ref, additional_tags, registry)
    if ref.transport == "docker-archive":
        return DockerArchiveDestination(ref, additional_tags)
    if ref.transport == "docker-daemon":
        return DaemonDestination(ref, additional_tags)
    if ref.transport == "oci-archive":
        return OciArchiveDestination(ref, additional_tags)
    return OciLayoutDestination(ref, additional_tags)


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
    "as_reference",
    "open_destination",
    "open_image",
    "open_index",
    "open_source",
    "parse_reference",
]
