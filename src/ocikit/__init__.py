"""ocikit: a daemonless OCI image toolkit.

The public API, in a few names:

    ocikit.copy(src, dst, ...)       move an image between any two references
    ocikit.inspect(ref)              what an image is, as JSON-ready data
    ocikit.check(ref)                what consumers reject or break on (a CheckReport)
    ocikit.repair(src, dst)          copy, rewriting only the layers that need it
    ocikit.unpack(ref, directory)    the root filesystem, extracted safely
    ocikit.export_layers(src, dir)   build-farm artifacts: <layer_id>.tar.gz, digests.json, ...
    ocikit.gc(paths)                 reclaim what killed or interrupted runs left behind
    ocikit.build(recipe, options)    images from a recipe (``ocikit.load_recipe(path)``)
    ocikit.open_image(ref)           read an image: manifest, config, verified blob streams
    ocikit.parse_reference(text)     ``oci:dir:tag``, ``docker-archive:file.tar:name:tag``, ...

Errors all derive from ``ocikit.OcikitError`` (see ``ocikit.errors``); each carries the exit
code the command line returns.
"""

from .build import BuildOptions, BuildResult, build, load_recipe
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
from .ops import (
    CheckReport,
    CopyResult,
    ExportResult,
    GcResult,
    UnpackResult,
    check,
    copy,
    export_layers,
    gc,
    inspect,
    repair,
    unpack,
)
from .transports import Image, Reference, open_image, parse_reference

__version__ = "0.1.0"

__all__ = [
    "AmbiguousImageError",
    "BuildOptions",
    "BuildResult",
    "CheckReport",
    "Compression",
    "CopyResult",
    "Descriptor",
    "DestinationError",
    "Digest",
    "ExportResult",
    "GcResult",
    "Image",
    "ImageConfig",
    "Index",
    "InputError",
    "Manifest",
    "NotFoundError",
    "OcikitError",
    "Platform",
    "Reference",
    "UnpackResult",
    "UnsafeInputError",
    "UsageError",
    "VerificationError",
    "__version__",
    "build",
    "check",
    "copy",
    "export_layers",
    "gc",
    "inspect",
    "load_recipe",
    "open_image",
    "parse_reference",
    "repair",
    "unpack",
]
