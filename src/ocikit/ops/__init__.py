"""Whole operations over images."""

from typing import Any

from .check import CheckReport, check
from .copy import CopyOptions, CopyOptionsError, CopyResult, copy
from .export import ExportResult, export_layers
from .gc import GcResult, gc
from .inspect import inspect
from .progress import NullProgress, ProgressReporter
from .unpack import UnpackResult, unpack


def repair(src: str, dst: str, *, drop_unsafe: bool = False, **kwargs: Any) -> CopyResult:
    """``copy(src, dst, repair=True)``: rewrite only the layers that need it (help/check.md)."""
    return copy(src, dst, repair=True, drop_unsafe=drop_unsafe, **kwargs)


__all__ = [
    "CheckReport",
    "CopyOptions",
    "CopyOptionsError",
    "CopyResult",
    "ExportResult",
    "GcResult",
    "NullProgress",
    "ProgressReporter",
    "UnpackResult",
    "check",
    "copy",
    "export_layers",
    "gc",
    "inspect",
    "repair",
    "unpack",
]
