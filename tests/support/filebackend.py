"""The two paths of the per-file work of builds: ``native`` (the C module
``ocikit._filecore``: files read and hashed a directory at a time, tar headers) and
``python`` (the pure-Python path it falls back to). The build suites run on both (the
``file_backend`` fixture of conftest.py; hypothesis tests, where a fixture would stay the
same for every example, run each example on both through ``use``)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager

from ocikit import native

BACKENDS = ("native", "python")
_NATIVE = native.load("_filecore")
#: the modules that hold ``_native`` (imported when first used: conftest stays light)
USERS = ("ocikit.build.imports", "ocikit.layer.tarwriter")


def missing(name: str) -> str | None:
    """Why ``name`` cannot run here (the native module was not built), or None."""
    if name == "native" and _NATIVE is None:
        return "ocikit._filecore is not built (or OCIKIT_NATIVE=0): the Python path only"
    return None


@contextmanager
def use(name: str) -> Iterator[None]:
    """Builds in this process take the ``name`` path (``native`` must be built)."""
    if name not in BACKENDS:
        raise ValueError(name)
    if name == "native" and _NATIVE is None:
        raise RuntimeError(missing(name))
    users = [importlib.import_module(name) for name in USERS]
    saved = [m._native for m in users]
    for m in users:
        m._native = _NATIVE if name == "native" else None
    try:
        yield
    finally:
        for m, value in zip(users, saved, strict=True):
            m._native = value


def available() -> tuple[str, ...]:
    """The backends this install can run: both, or ``python`` alone."""
    return tuple(name for name in BACKENDS if missing(name) is None)
