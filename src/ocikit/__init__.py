"""ocikit: a daemonless OCI image toolkit.

The public API, in a few names:

    ocikit.copy(src, dst, ...)       move an image between any two references
    ocikit.inspect(ref)              what an image is, as JSON-ready data
    ocikit.open_image(ref)           read an image: manifest, config, verified blob streams
    ocikit.parse_reference(text)     ``oci:dir:tag``, ``docker-archive:file.tar:name:tag``, ...

Errors all derive from ``ocikit.OcikitError`` (see ``ocikit.errors``); each carries the exit
code the command line returns.
"""

from .errors import (
    AmbiguousImageError,
    DestinationError,
    InputError,
    NotFoundError,
    OcikitError,
    UnsafeInputError,
    UsageError,
    VerificationError,
)
from .model import Compression, Descriptor, Digest, ImageConfig, Index, Manifest, Platform
from .ops import CopyResult, copy, inspect
from .transports import Image, Reference, open_image, parse_reference

__version__ = "0.1.0"

__all__ = [
    "AmbiguousImageError",
    "Compression",
    "CopyResult",
    "Descriptor",
    "DestinationError",
    "Digest",
    "Image",
    "ImageConfig",
    "Index",
    "InputError",
    "Manifest",
    "NotFoundError",
    "OcikitError",
    "Platform",
    "Reference",
    "UnsafeInputError",
    "UsageError",
    "VerificationError",
    "__version__",
    "copy",
    "inspect",
    "open_image",
    "parse_reference",
]
