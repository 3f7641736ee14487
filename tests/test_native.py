"""The native core is built wherever it can be, and ``OCIKIT_NATIVE=0`` turns it off.

Each native module's own behaviour is tested by the suites of the Python path it replaces,
run on both paths (the ``native`` fixtures of those test files)."""

from __future__ import annotations

import shutil
import sysconfig
from pathlib import Path

import pytest

from ocikit import native

from conftest import in_ci

pytestmark = pytest.mark.unit


def _can_build() -> bool:
    headers = Path(sysconfig.get_paths()["include"], "Python.h")
    return shutil.which("gcc") is not None and headers.is_file()


def test_built_where_it_can_be() -> None:
    """A compiler and Python's headers are there (scripts/install-system-deps.sh installs
    them): the install built every native module, so the suites test them."""
    if not _can_build() and not in_ci():
        pytest.skip("no C compiler or no Python headers: the pure-Python path only")
    assert native.available() == dict.fromkeys(native.NAMES, True)


def test_off_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OCIKIT_NATIVE", "0")
    assert not native.enabled()
    assert all(native.load(name) is None for name in native.NAMES)


def test_unknown_name() -> None:
    with pytest.raises(ValueError):
        native.load("_nothing")
