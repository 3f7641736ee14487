"""Work stays linear: inputs of a few megabytes never take minutes.

Each test gives ocikit the scale a build farm meets (thousands of images in one
``docker save``, hundreds of layers, hundreds of thousands of entries) with a generous bound
on CPU time or memory: not a benchmark, a guard against quadratic paths (a ``docker save``
of 3,000 images took 83 s of CPU to export, its ``manifest.json`` parsed once per image).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

import ocikit
from ocikit.transports.archive import TarArchive
from support.layouts import Blob, directory, file, tar_bytes, write_layout
from support.rawtar import END, header
from support.rss import run_measured
from support.verify import LAYER_GZIP


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def many_images_archive(path: Path, images: int, layers: int = 2) -> Path:
    """A legacy ``docker save`` of ``images`` images sharing ``layers`` layers."""
    with tarfile.open(path, "w") as tar:
        members = []
        for j in range(layers):
            data = tar_bytes([file(f"f{j}", str(j))])
            v1id = hashlib.sha256(data).hexdigest()
            _add(tar, f"{v1id}/layer.tar", data)
            members.append((f"sha256:{v1id}", f"{v1id}/layer.tar"))
        manifest = []
        for i in range(images):
            config = json.dumps(
                {
                    "architecture": "amd64",
                    "os": "linux",
                    "config": {"Env": [f"IMAGE={i}"]},
                    "rootfs": {"type": "layers", "diff_ids": [d for d, _ in members]},
                }
            ).encode()
            name = hashlib.sha256(config).hexdigest() + ".json"
            _add(tar, name, config)
            manifest.append(
                {"Config": name, "RepoTags": [f"img{i}:1"], "Layers": [m for _, m in members]}
            )
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    return path


def test_export_of_thousands_of_images_is_linear(tmp_path: Path) -> None:
    """3,000 images (a 3.7 MB archive): 83 s of CPU before, ~1 s now."""
    archive = many_images_archive(tmp_path / "many.tar", 3000)
    started = time.process_time()
    result = ocikit.export_layers(f"docker-archive:{archive}", tmp_path / "out")
    spent = time.process_time() - started
    assert len(result.images) == 3000
    assert len(json.loads((tmp_path / "out" / "manifest.json").read_bytes())) == 3000
    assert spent < 20, f"{spent:.1f} s of CPU"


def test_compressed_layers_shared_by_many_images_are_hashed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A gzip ``layer.tar`` (docker load accepts one) shared by 400 images is opened three
    times (its first bytes, hashed, recompressed), not once per image: 400 x 8 MB was 3.2 GB
    of hashing."""
    layer = tar_bytes([file("blob", os.urandom(8 << 20))])
    gz = zlib.compressobj(1, zlib.DEFLATED, 31)
    blob = gz.compress(layer) + gz.flush()
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
    with tarfile.open(tmp_path / "gz.tar", "w") as tar:
        _add(tar, "l/layer.tar", blob)
        manifest = []
        for i in range(400):
            config = json.dumps(
                {
                    "os": "linux",
                    "architecture": "amd64",
                    "config": {"Env": [f"I={i}"]},
                    "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                }
            ).encode()
            name = hashlib.sha256(config).hexdigest() + ".json"
            _add(tar, name, config)
            manifest.append({"Config": name, "RepoTags": [f"i{i}:1"], "Layers": ["l/layer.tar"]})
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    opened: list[str] = []
    real_open = TarArchive.open_member

    def spy(self: TarArchive, name: str, *args: Any, **kw: Any) -> Any:
        opened.append(name)
        return real_open(self, name, *args, **kw)

    monkeypatch.setattr(TarArchive, "open_member", spy)
    result = ocikit.export_layers(f"docker-archive:{tmp_path / 'gz.tar'}", tmp_path / "out")
    assert len(result.images) == 400
    assert opened.count("l/layer.tar") <= 3, opened.count("l/layer.tar")


def test_check_of_thousands_of_small_layers(tmp_path: Path) -> None:
    """3,000 layers of a few hundred bytes (a 1 MB manifest): each layer set up its inflating
    thread and 8 MiB of buffers, 4.5 ms of CPU a layer (13.6 s); now ~0.7 ms."""
    layers = [tar_bytes([directory(f"l{i}"), file(f"l{i}/f", str(i))]) for i in range(3000)]
    write_layout(tmp_path / "oci", layers)
    started = time.process_time()
    report = ocikit.check(f"oci:{tmp_path / 'oci'}:t")
    spent = time.process_time() - started
    assert report.layers == 3000 and report.findings == []
    assert spent < 8, f"{spent:.1f} s of CPU"


def test_check_of_300k_entries_in_bounded_memory(tmp_path: Path) -> None:
    """300,000 entries in 1,000 directories (a 150 MB tar, 4 MB of gzip): checked in a
    bounded time, with memory that grows with the paths only (~250 bytes each)."""
    parts = [header(b"d%d/" % d, b"5") for d in range(1000)]
    parts += [header(b"d%d/f%d" % (i % 1000, i)) for i in range(299_000)]
    tar = b"".join(parts) + END
    gz = zlib.compressobj(1, zlib.DEFLATED, 31)
    data = gz.compress(tar) + gz.flush()
    path = tmp_path / "layer.gz"
    path.write_bytes(data)
    diff_id = "sha256:" + hashlib.sha256(tar).hexdigest()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    del tar, parts
    write_layout(tmp_path / "oci", [Blob(path, LAYER_GZIP, diff_id, digest, len(data))])
    started = time.monotonic()
    code, err, peak_mib = run_measured("check", "--json", f"oci:{tmp_path / 'oci'}:t")
    spent = time.monotonic() - started
    assert code == 0, err
    print(f"300k entries: {spent:.1f} s, {peak_mib} MiB")
    assert peak_mib < 200, f"{peak_mib} MiB"
    assert spent < 45, f"{spent:.1f} s"


@pytest.mark.parametrize("images", [2000])
def test_reading_one_image_of_many(tmp_path: Path, images: int) -> None:
    """Picking one image by name or position out of thousands reads manifest.json once."""
    archive = many_images_archive(tmp_path / "many.tar", images, layers=1)
    started = time.process_time()
    info = ocikit.inspect(f"docker-archive:{archive}:img{images - 1}:1")
    copied = ocikit.copy(f"docker-archive:{archive}@{images - 2}", f"oci:{tmp_path / 'oci'}:t")
    spent = time.process_time() - started
    assert info["repo_tags"] == [f"img{images - 1}:1"] and copied.manifest_digest
    assert spent < 10, f"{spent:.1f} s of CPU"


def test_entries_through_long_symlink_targets_cost_linear_time() -> None:
    """Resolving an entry through a symlink costs the target's length: a 1 MiB target under
    2,000 entries took minutes. Linux (and so docker's extraction) refuses a target over 4,095
    bytes, a path over 4,095 and a name over 255: such an entry is ``name-too-long``, and at
    the limit the work stays small."""
    from ocikit.layer.analyze import LayerAnalyzer, Tree
    from ocikit.layer.tarstream import TarEntry

    for target, rule in (("x/" * 500_000, True), ("x/" * 2_047, False)):
        entries = [TarEntry("L", b"2", 0, target)]
        for i in range(2_000):
            entries += [TarEntry(f"L/a{i}", b"0", 0), TarEntry(f"z{i}/", b"5", 0)]
        started = time.process_time()
        analyzer = LayerAnalyzer(Tree(), 0)
        for i, entry in enumerate(entries):
            analyzer.feed(i, entry)
        analyzer.finish()
        assert time.process_time() - started < 5
        assert any(f.rule == "name-too-long" for f in analyzer.findings) is rule
