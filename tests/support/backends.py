"""The two paths of each native module (``ocikit.native``): ``native`` (the C module) and
``python`` (the pure-Python path it falls back to). The suites of the code each module
speeds up run on both: ``TAR`` (``ocikit._tarcore``, the tar header parser of
``layer.tarstream``; the ``tar_backend`` fixture of conftest.py) and ``FILE``
(``ocikit._filecore``, the per-file work of builds; ``file_backend``). Hypothesis tests,
where a fixture would stay the same for every example, run each example on both through
``use``."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager

from ocikit import native

BACKENDS = ("native", "python")


class Backends:
    """One native module's two paths, switched in this process by setting ``_native`` in
    the modules that use it (``users``, imported when first switched: conftest stays
    light)."""

    BACKENDS = BACKENDS

    def __init__(self, module: str, users: tuple[str, ...]) -> None:
        self.name = f"ocikit.{module}"
        self.users = users
        self.module = native.built(module)  # where it was built, whatever OCIKIT_NATIVE says

    def missing(self, name: str) -> str | None:
        """Why ``name`` cannot run here (the native module was not built), or None."""
        if name == "native" and self.module is None:
            return f"{self.name} is not built: the Python path only"
        return None

    @contextmanager
    def use(self, name: str) -> Iterator[None]:
        """The code in this process takes the ``name`` path (``native`` must be built)."""
        if name not in BACKENDS:
            raise ValueError(name)
        if name == "native" and self.module is None:
            raise RuntimeError(self.missing(name))
        users = [importlib.import_module(user) for user in self.users]
        saved = [m._native for m in users]
        for m in users:
            m._native = self.module if name == "native" else None
        try:
            yield
        finally:
            for m, value in zip(users, saved, strict=True):
                m._native = value

    def available(self) -> tuple[str, ...]:
        """The paths this install can run: both, or ``python`` alone."""
        return tuple(name for name in BACKENDS if self.missing(name) is None)


TAR = Backends("_tarcore", ("ocikit.layer.tarstream",))
FILE = Backends("_filecore", ("ocikit.build.imports", "ocikit.layer.tarwriter"))
