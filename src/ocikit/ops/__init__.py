"""Whole operations over images."""

from .check import CheckReport, check
from .copy import CopyResult, copy
from .inspect import inspect
from .progress import NullProgress, ProgressReporter

__all__ = [
    "CheckReport",
    "CopyResult",
    "NullProgress",
    "ProgressReporter",
    "check",
    "copy",
    "inspect",
]
