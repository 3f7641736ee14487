"""Layers copied several at a time (``--jobs``): the result is the same as one at a time, and
a layer that fails verification stops the others and leaves the destination as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from support.cli import assert_one_line_error, ocikit, ok
from support.layouts import blob_path, file, image_layers, tar_bytes, write_layout
from support.verify import read_layout


def _layers(n: int) -> list[bytes]:
    layers = [tar_bytes([file(f"l{i}.bin", os.urandom((i + 1) << 18))]) for i in range(n)]
    return [*layers, layers[1]]  # a repeated layer too


@pytest.mark.parametrize("compress", ["gzip", "zstd", "none"])
def test_jobs_give_the_same_image(tmp_path: Path, compress: str) -> None:
    src = tmp_path / "src"
    write_layout(src, _layers(6), compression="none")
    results = []
    for jobs in ("1", "4"):
        dst = tmp_path / f"dst-{jobs}"
        ok(
            "copy",
            "-q",
            "--jobs",
            jobs,
            "--dest-compress-format",
            compress,
            f"oci:{src}:t",
            f"oci:{dst}:t",
        )
        results.append(read_layout(dst, "t").manifest_bytes)
        ok("check", f"oci:{dst}:t")
    assert results[0] == results[1]
    archive = tmp_path / "a.tar"
    ok("copy", "-q", "--jobs", "4", f"oci:{src}:t", f"docker-archive:{archive}:a:1")
    ok("copy", "-q", "--jobs", "4", f"docker-archive:{archive}", f"oci:{tmp_path}/back:t")
    ok("check", f"oci:{tmp_path}/back:t")


def test_a_bad_layer_stops_the_others(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_layout(src, _layers(6), compression="none")
    bad = image_layers(src)[3]
    path = blob_path(src, bad["digest"])
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    dst = tmp_path / "dst"
    proc = ocikit("copy", "--jobs", "4", f"oci:{src}:t", f"oci:{dst}:t")
    assert_one_line_error(proc, contains=bad["digest"].split(":")[1][:12])
    assert not dst.exists(), "the layout this copy created is gone again"
    # into an existing layout: it is left as it was, no temporary file behind
    write_layout(dst, [tar_bytes([file("x", "x")])], ref="keep")
    before = sorted(p.name for p in dst.rglob("*"))
    proc = ocikit("copy", "--jobs", "4", f"oci:{src}:t", f"oci:{dst}:t")
    assert proc.returncode == 2
    assert sorted(p.name for p in dst.rglob("*")) == before
