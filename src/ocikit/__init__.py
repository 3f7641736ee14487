"""ocikit: a daemonless OCI image toolkit.

The public API, in a few names:

    ocikit.copy(src, dst, ...)       move an image between any two references (keyword
                                     arguments, or an ocikit.CopyOptions)
    ocikit.inspect(ref)              what an image is, as JSON-ready data
    ocikit.check(ref)                what consumers reject or break on (a CheckReport)
    ocikit.repair(src, dst)          copy, rewriting only the layers that need it
    ocikit.unpack(ref, directory)    the root filesystem, extracted safely
    ocikit.export_layers(src, dir)   build-farm artifacts: <layer_id>.tar.gz, digests.json, ...
    ocikit.validate_image(ref)       every broken structural invariant (digests, diff_ids,
                                     media types, an index's platforms), as a list
    ocikit.gc(paths)                 reclaim what killed or interrupted runs left behind
    ocikit.build(recipe, options)    images from a recipe (``ocikit.load_recipe(path)``)
    ocikit.open_image(ref)           read an image: manifest, config, verified blob streams
    ocikit.parse_reference(text)     ``oci:dir:tag``, ``docker-archive:file.tar:name:tag``, ...
    ocikit.RegistryOptions(...)      how to reach registries (credentials, TLS, auth file,
                                     jobs): copy's src_registry/dest_registry, build's
                                     BuildOptions.registry, inspect's and check's registry

Errors all derive from ``ocikit.OcikitError`` (see ``ocikit.errors``); each carries the exit
code the command line returns.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from .lazy import lazy_names

if TYPE_CHECKING:  # the names below load on first use: a command imports what it uses
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
    from .ops.check import CheckReport, check
    from .ops.copy import CopyOptions, CopyOptionsError, CopyResult, copy
    from .ops.export import ExportResult, export_layers
    from .ops.gc import GcResult, gc
    from .ops.inspect import inspect
    from .ops.unpack import UnpackResult, unpack
    from .ops.validate import ValidationError, validate_image
    from .transports import (
        Credentials,
        Image,
        Reference,
        RegistryOptions,
        open_image,
        parse_reference,
    )

#: where each public name lives
_LAZY = {
    **dict.fromkeys(("BuildOptions", "BuildResult", "build", "load_recipe"), "build"),
    **dict.fromkeys(
        (
            "AmbiguousImageError",
            "DestinationError",
            "InputError",
            "NotFoundError",
            "OcikitError",
            "UnsafeInputError",
            "UsageError",
            "VerificationError",
        ),
        "errors",
    ),
    **dict.fromkeys(
        ("Compression", "Descriptor", "Digest", "ImageConfig", "Index", "Manifest", "Platform"),
        "model",
    ),
    **dict.fromkeys(("CheckReport", "check"), "ops.check"),
    **dict.fromkeys(("CopyOptions", "CopyOptionsError", "CopyResult", "copy"), "ops.copy"),
    **dict.fromkeys(("ExportResult", "export_layers"), "ops.export"),
    **dict.fromkeys(("GcResult", "gc"), "ops.gc"),
    "inspect": "ops.inspect",
    **dict.fromkeys(("UnpackResult", "unpack"), "ops.unpack"),
    **dict.fromkeys(("ValidationError", "validate_image"), "ops.validate"),
    **dict.fromkeys(
        (
            "Credentials",
            "Image",
            "Reference",
            "RegistryOptions",
            "open_image",
            "parse_reference",
        ),
        "transports",
    ),
}
_SUBPACKAGES = frozenset(
    ("build", "cli", "errors", "layer", "model", "ops", "tempfiles", "transports")
)


def repair(src: str, dst: str, *, drop_unsafe: bool = False, **kwargs: Any) -> CopyResult:
    """``copy(src, dst, repair=True)``: rewrite only the layers that need it (help/check.md)."""
    from .ops.copy import copy  # on first use, as every operation

    return copy(src, dst, repair=True, drop_unsafe=drop_unsafe, **kwargs)


_public, _names = lazy_names(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    """A public name (or a subpackage), imported when first asked for."""
    if name in _SUBPACKAGES and name not in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    return _public(name)


def __dir__() -> list[str]:
    return sorted({*_names(), *_SUBPACKAGES})


class _Package(types.ModuleType):
    """``ocikit.build`` is the function, also once the subpackage ``ocikit.build`` is loaded
    (the import system would set the name to the subpackage; ``ocikit.build.engine`` and the
    like are imported by their full names, from ``sys.modules``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


__version__ = "0.1.0"

__all__ = [
    "AmbiguousImageError",
    "BuildOptions",
    "BuildResult",
    "CheckReport",
    "Compression",
    "CopyOptions",
    "CopyOptionsError",
    "CopyResult",
    "Credentials",
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
    "RegistryOptions",
    "UnpackResult",
    "UnsafeInputError",
    "UsageError",
    "ValidationError",
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
    "validate_image",
]
