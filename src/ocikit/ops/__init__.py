"""Whole operations over images (each name re-exported as ``ocikit.NAME``)."""

from typing import Any

from .check import CheckReport as CheckReport
from .check import check as check
from .copy import CopyOptions as CopyOptions
from .copy import CopyOptionsError as CopyOptionsError
from .copy import CopyResult as CopyResult
from .copy import copy as copy
from .export import ExportResult as ExportResult
from .export import export_layers as export_layers
from .gc import GcResult as GcResult
from .gc import gc as gc
from .inspect import inspect as inspect
from .progress import NullProgress as NullProgress
from .progress import ProgressReporter as ProgressReporter
from .unpack import UnpackResult as UnpackResult
from .unpack import unpack as unpack
from .validate import Problem as Problem
from .validate import ValidationError as ValidationError
from .validate import require_valid as require_valid
from .validate import validate_image as validate_image


def repair(src: str, dst: str, *, drop_unsafe: bool = False, **kwargs: Any) -> CopyResult:
    """``copy(src, dst, repair=True)``: rewrite only the layers that need it (help/check.md)."""
    return copy(src, dst, repair=True, drop_unsafe=drop_unsafe, **kwargs)
