"""Layers copied at once start the largest first: the copy does not end on a large layer
moving alone while the other workers have nothing left (the small ones go last)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import ocikit
from ocikit.ops.copy_image import ImageCopier
from support.layouts import file, tar_bytes, write_layout


def test_layers_copied_at_once_start_the_largest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = [1_000, 300_000, 5_000, 900_000, 50_000]
    layers = [
        tar_bytes([file(f"f{i}", bytes(range(256)) * (n // 256))]) for i, n in enumerate(sizes)
    ]
    write_layout(tmp_path / "src", layers, compression="none")
    started: list[int] = []
    lock = threading.Lock()
    original = ImageCopier._one

    def one(self: ImageCopier, i: int, *args: object) -> object:
        with lock:
            started.append(i)
        return original(self, i, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ImageCopier, "_one", one)
    ocikit.copy(f"oci:{tmp_path}/src:t", f"oci:{tmp_path}/out:t", jobs=2)
    assert set(started[:2]) == {3, 1}  # the two largest first, on the two workers
    assert set(started) == set(range(len(sizes)))
