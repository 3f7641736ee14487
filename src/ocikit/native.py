"""The optional native core: C extensions (``src/native/``) for the per-entry work the
profiles put on the critical path, each with the pure-Python path it replaces kept as the
fallback, chosen automatically.

``load(name)`` gives the extension module, or None where it was not built (no compiler at
install time) or ``OCIKIT_NATIVE=0`` is set (the pure-Python path, for comparison and tests).
The same test suites run on both paths.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

NAMES = ("_tarcore", "_filecore")


def enabled() -> bool:
    """False when ``OCIKIT_NATIVE=0``: every module then runs its pure-Python path."""
    return os.environ.get("OCIKIT_NATIVE", "1") != "0"


def built(name: str) -> ModuleType | None:
    """The native module ``ocikit.<name>`` where this install built it, whatever
    ``OCIKIT_NATIVE`` says (None: not built)."""
    _known(name)
    try:
        return importlib.import_module(f"ocikit.{name}")
    except ImportError:
        return None


def load(name: str) -> ModuleType | None:
    """The native module ``ocikit.<name>``, or None (not built, or disabled)."""
    _known(name)
    return built(name) if enabled() else None  # disabled: not even imported


def _known(name: str) -> None:
    if name not in NAMES:
        raise ValueError(f"no native module {name!r}")


def available() -> dict[str, bool]:
    """Which native modules this install has (whatever ``OCIKIT_NATIVE`` says)."""
    return {name: built(name) is not None for name in NAMES}
