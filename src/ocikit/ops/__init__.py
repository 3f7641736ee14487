"""Whole operations over images."""

from .copy import CopyResult, copy
from .inspect import inspect
from .progress import NullProgress, ProgressReporter

__all__ = ["CopyResult", "NullProgress", "ProgressReporter", "copy", "inspect"]
