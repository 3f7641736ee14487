"""The two tar header parsers of ``ocikit.layer.tarstream``: ``native`` (the C module
``ocikit._tarcore``) and ``python`` (the pure-Python path it falls back to). The tar suites
run on both (the ``tar_backend`` fixture of conftest.py; hypothesis tests, where a fixture
would stay the same for every example, read each example with both through ``use``)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

from ocikit.layer import tarstream

BACKENDS = ("native", "python")


def _module() -> ModuleType | None:
    """The C module where it was built (whatever ``OCIKIT_NATIVE`` says: both are tested)."""
    try:
        return importlib.import_module("ocikit._tarcore")
    except ImportError:
        return None


_NATIVE = _module()


def missing(name: str) -> str | None:
    """Why ``name`` cannot run here (the native module was not built), or None."""
    if name == "native" and _NATIVE is None:
        return "ocikit._tarcore is not built: the Python path only"
    return None


@contextmanager
def use(name: str) -> Iterator[None]:
    """Read tars in this process with the ``name`` parser (``native`` must be built)."""
    if name not in BACKENDS:
        raise ValueError(name)
    if name == "native" and _NATIVE is None:
        raise RuntimeError(missing(name))
    saved = tarstream._native
    tarstream._native = _NATIVE if name == "native" else None
    try:
        yield
    finally:
        tarstream._native = saved


def available() -> tuple[str, ...]:
    """The backends this install can run: both, or ``python`` alone."""
    return tuple(name for name in BACKENDS if missing(name) is None)
