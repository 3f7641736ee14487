"""The archive writers: a docker-archive is streamed (a layer staged in ``$TMPDIR`` only when
its size is not known before its bytes, and then only that one), and an oci-archive carries
``manifest.json`` too, so that every tool loads it: docker 20.10, podman, containerd's
``ctr import``, skopeo (as oci-archive: and as docker-archive:), umoci."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import ocikit
from ocikit.errors import VerificationError
from ocikit.layer.streams import CHUNK
from ocikit.transports.oci_layout import OciLayoutSource
from support.cli import ocikit as run_ocikit
from support.containerd import Containerd
from support.containerd import can_run as containerd_can_run
from support.dockerd import DockerEngine
from support.layouts import directory, file, tar_bytes, write_layout
from support.verify import (
    read_docker_archive,
    read_layout,
    sh,
    skopeo_inspect,
    umoci_unpack,
)

LAYER_BYTES = 3 << 20  # each layer's file: several write buffers, so progress shows on disk


def _layers(n: int, seed: int = 7) -> list[bytes]:
    rnd = random.Random(seed)
    return [
        tar_bytes([directory(f"d{i}"), file(f"d{i}/data", rnd.randbytes(LAYER_BYTES))])
        for i in range(n)
    ]


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$TMPDIR`` of this test, to see what ocikit stages there."""
    root = tmp_path / "tmpdir"
    root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(root))
    return root


def _bytes_under(root: Path) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)


def _watch_layers(monkeypatch: pytest.MonkeyPatch, tmp: Path, out: Path) -> list[tuple[int, int]]:
    """Before the source opens each layer: (bytes staged in ``tmp``, bytes of the archive
    being written beside ``out``)."""
    seen: list[tuple[int, int]] = []
    original = OciLayoutSource.open_blob

    def open_blob(self: OciLayoutSource, descriptor: Any) -> Any:
        if "layer" in descriptor.media_type:
            partial = sum(
                p.stat().st_size for p in out.parent.iterdir() if p.name.startswith(".ocikit-tmp")
            )
            seen.append((_bytes_under(tmp), partial))
        return original(self, descriptor)

    monkeypatch.setattr(OciLayoutSource, "open_blob", open_blob)
    return seen


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_docker_archive_is_streamed(
    compression: str, tmp_path: Path, private_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the source opens its last layer, the earlier ones are in the archive already and
    nothing is left in ``$TMPDIR``: a layer whose size is known (uncompressed) goes straight
    through; one being decompressed (its size unknown until then) is staged, alone."""
    layers = _layers(3)
    write_layout(tmp_path / "src", layers, compression=compression)  # type: ignore[arg-type]
    out = tmp_path / "out" / "img.tar"
    out.parent.mkdir()
    seen = _watch_layers(monkeypatch, private_tmp, out)
    ocikit.copy(f"oci:{tmp_path}/src:t", f"docker-archive:{out}:ex/img:1")
    assert len(seen) == 3
    for i, (staged, partial) in enumerate(seen):
        assert staged == 0, f"layer {i}: {staged} bytes staged in $TMPDIR before it was opened"
        # less what two write buffers hold (the tar's and the file's)
        assert partial >= sum(len(x) for x in layers[:i]) - 2 * CHUNK, (i, partial)
    [image] = read_docker_archive(out)
    assert image.repo_tags == ["ex/img:1"] and image.layers == layers
    assert _bytes_under(private_tmp) == 0
    assert sorted(p.name for p in out.parent.iterdir()) == ["img.tar"]


def test_same_archive_whatever_the_route(tmp_path: Path, private_tmp: Path) -> None:
    """Streamed or staged, serial or concurrent: the archive's bytes are the same."""
    del private_tmp
    layers = _layers(3)
    write_layout(tmp_path / "plain", layers, compression="none")
    write_layout(tmp_path / "gz", layers, compression="gzip")
    outs = []
    for name, src, jobs in [("a", "plain", 1), ("b", "gz", 1), ("c", "plain", 4), ("d", "gz", 3)]:
        out = tmp_path / f"{name}.tar"
        ocikit.copy(f"oci:{tmp_path}/{src}:t", f"docker-archive:{out}:ex/img:1", jobs=jobs)
        outs.append(out.read_bytes())
    assert all(o == outs[0] for o in outs[1:])


def test_repeated_layer_is_a_symlink(tmp_path: Path, private_tmp: Path) -> None:
    """The same layer twice in one image: written once, the second a symlink to it."""
    a, b = _layers(2)
    write_layout(tmp_path / "src", [a, b, a], compression="none")
    out = tmp_path / "out.tar"
    ocikit.copy(f"oci:{tmp_path}/src:t", f"docker-archive:{out}")
    [image] = read_docker_archive(out)  # follows the symlink, checks the diff_ids
    assert image.layers == [a, b, a]
    with tarfile.open(out) as tar:
        kinds = [m.type for m in tar.getmembers() if m.name.endswith("/layer.tar")]
    assert kinds == [tarfile.REGTYPE, tarfile.REGTYPE, tarfile.SYMTYPE]
    assert _bytes_under(private_tmp) == 0


def test_a_bad_layer_leaves_nothing(tmp_path: Path, private_tmp: Path) -> None:
    """A layer that fails verification after earlier ones were streamed: no archive, no
    partial file beside it, nothing in ``$TMPDIR``."""
    layers = _layers(3)
    write_layout(tmp_path / "src", layers, compression="none")
    layout = read_layout(tmp_path / "src", "t")
    last = layout.manifest["layers"][2]["digest"].split(":")[1]
    blob = tmp_path / "src" / "blobs" / "sha256" / last
    data = bytearray(blob.read_bytes())
    data[LAYER_BYTES // 2] ^= 1
    blob.write_bytes(data)
    out = tmp_path / "out" / "img.tar"
    out.parent.mkdir()
    with pytest.raises(VerificationError):
        ocikit.copy(f"oci:{tmp_path}/src:t", f"docker-archive:{out}")
    assert list(out.parent.iterdir()) == []
    assert _bytes_under(private_tmp) == 0


def _image_ids(engine: DockerEngine) -> list[str]:
    """The engine's images, one ID per name, sorted: ``docker images`` orders images of one
    creation time (reproducible images) differently from one call to the next."""
    return sorted(engine.docker("images", "-a", "-q", "--no-trunc").stdout.decode().split())


def _docker_loads_nothing(engine: DockerEngine, where: Path, stream: bytes) -> None:
    """``docker load`` of ``stream`` fails, and the engine holds no image more."""
    before = _image_ids(engine)
    where.write_bytes(stream)
    load = subprocess.run(
        ["docker", "load", "-i", str(where)], env=engine.env, capture_output=True, timeout=120
    )
    assert load.returncode != 0
    assert _image_ids(engine) == before


def test_a_stream_cut_short_holds_no_image(tmp_path: Path, docker_engine: DockerEngine) -> None:
    """``docker-archive:-`` whose last layer fails: the layers before it went out, one line
    on stderr, exit 2, and ``docker load`` of what went out loads nothing. (docker 20.10
    loads a stream without ``manifest.json`` with its legacy loader, every ``<id>/json`` an
    untagged image: the config and ``manifest.json`` go first, so a stream cut short names
    layers it does not hold and the load fails before it makes anything.)"""
    layers = _layers(3)
    write_layout(tmp_path / "src", layers, compression="none")
    last = read_layout(tmp_path / "src", "t").manifest["layers"][2]["digest"].split(":")[1]
    blob = tmp_path / "src" / "blobs" / "sha256" / last
    data = bytearray(blob.read_bytes())
    data[-2000] ^= 1
    blob.write_bytes(data)
    proc = run_ocikit(
        "copy", "-q", f"oci:{tmp_path}/src:t", "docker-archive:-", env={"TMPDIR": str(tmp_path)}
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stdout) > 2 * LAYER_BYTES
    assert len(proc.stderr.decode().strip().splitlines()) == 1, proc.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("ocikit-tmp")]
    _docker_loads_nothing(docker_engine, tmp_path / "cut.tar", proc.stdout)


FAIL_AT_THE_END = """
import sys
from ocikit.errors import DestinationError
from ocikit.transports import docker_archive

def refuse(self, *args, **kwargs):
    raise DestinationError("the copy failed after its last layer")

docker_archive.DockerArchiveDestination.put_manifest = refuse
from ocikit.cli.main import main
main(sys.argv[1:])
"""


def test_a_stream_cut_between_members_holds_no_image(
    tmp_path: Path, docker_engine: DockerEngine
) -> None:
    """The same when the copy fails once every layer went out whole (the stream ends between
    two members, as a complete tar would): ``docker load`` still loads nothing."""
    # layers of exactly 5 MiB: copied in whole chunks, each member ends on a write's end
    exact = [tar_bytes([file(n, os.urandom((5 << 20) - 1536))]) for n in ("a", "b")]
    assert all(len(layer) == 5 << 20 for layer in exact)
    write_layout(tmp_path / "src", exact, compression="none")
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            FAIL_AT_THE_END,
            "copy",
            "-q",
            f"oci:{tmp_path}/src:t",
            "docker-archive:-",
        ],
        capture_output=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stdout) > 2 * LAYER_BYTES
    _docker_loads_nothing(docker_engine, tmp_path / "cut.tar", proc.stdout)


# ---------------------------------------------------------------------------- both forms


@pytest.fixture(scope="module")
def containerd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Containerd]:
    """A private containerd for ``ctr images import``; it must run in CI."""
    why = containerd_can_run()
    if why:
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"containerd must run in CI: {why}", pytrace=False)
        pytest.skip(why)
    with Containerd(tmp_path_factory.mktemp("containerd")) as daemon:
        yield daemon


def _members(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return tar.getnames()


@pytest.fixture
def both_archive(tmp_path: Path) -> Iterator[tuple[Path, str, list[bytes]]]:
    """An oci-archive ocikit wrote from a gzip layout, named ``ex/both:1``: (path, image ID,
    layer tars)."""
    layers = _layers(2, seed=11)
    write_layout(tmp_path / "src", layers, compression="gzip")
    out = tmp_path / "both.tar"
    result = ocikit.copy(f"oci:{tmp_path}/src:t", f"oci-archive:{out}:ex/both:1")
    yield out, str(result.config_digest), layers


def test_oci_archive_carries_manifest_json(both_archive: tuple[Path, str, list[bytes]]) -> None:
    """An OCI layout and docker's ``manifest.json`` + ``repositories``, as containerd's export
    and Docker >= 25 write them: every blob once, under ``blobs/``."""
    out, image_id, _ = both_archive
    names = _members(out)
    assert {"index.json", "oci-layout", "manifest.json", "repositories"} <= set(names)
    with tarfile.open(out) as tar:
        manifest_json = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        repositories = json.load(tar.extractfile("repositories"))  # type: ignore[arg-type]
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    [entry] = manifest_json
    assert entry["Config"] == f"blobs/sha256/{image_id.split(':')[1]}"
    assert entry["RepoTags"] == ["ex/both:1"]
    assert all(name.startswith("blobs/sha256/") and name in names for name in entry["Layers"])
    assert repositories == {"ex/both": {"1": image_id.split(":")[1]}}
    [desc] = index["manifests"]
    assert desc["annotations"]["org.opencontainers.image.ref.name"] == "ex/both:1"
    # ocikit reads it back both ways
    assert ocikit.copy(f"docker-archive:{out}", f"oci:{out.parent}/back1:t").config_digest == (
        image_id
    )
    back = ocikit.copy(f"oci-archive:{out}:ex/both:1", f"oci:{out.parent}/back2:t")
    assert back.config_digest == image_id


@pytest.mark.docker
def test_docker_loads_an_oci_archive(
    docker_engine: DockerEngine, both_archive: tuple[Path, str, list[bytes]]
) -> None:
    out, image_id, _ = both_archive
    docker_engine.remove_image("ex/both:1")
    docker_engine.load(out)
    assert docker_engine.image_id("ex/both:1") == image_id
    docker_engine.remove_image("ex/both:1")


def test_podman_loads_an_oci_archive(
    tmp_path: Path, both_archive: tuple[Path, str, list[bytes]]
) -> None:
    out, image_id, _ = both_archive
    del tmp_path
    store = Path(tempfile.mkdtemp(prefix="ocikit-podman-", dir="/tmp"))  # runroot: < 50 chars
    podman = [
        "podman",
        "--root",
        str(store / "root"),
        "--runroot",
        str(store / "run"),
        "--storage-driver",
        "vfs",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "none",
    ]
    try:
        # load (it picks the form), then each form by name
        for args in (
            ["load", "-i", str(out)],
            ["pull", f"docker-archive:{out}"],
            ["pull", f"oci-archive:{out}:ex/both:1"],
        ):
            proc = subprocess.run([*podman, *args], capture_output=True)
            assert proc.returncode == 0, f"podman {args}: {proc.stderr.decode()}"
            ids = sh(*podman, "images", "--no-trunc", "--format", "{{.ID}}").stdout.decode()
            assert image_id.split(":")[1] in ids
            sh(*podman, "rmi", "-a", "-f")
    finally:
        shutil.rmtree(store, ignore_errors=True)


def test_skopeo_reads_both_forms(
    tmp_path: Path, both_archive: tuple[Path, str, list[bytes]]
) -> None:
    out, image_id, _ = both_archive
    assert skopeo_inspect(f"oci-archive:{out}:ex/both:1")["Layers"]
    assert len(skopeo_inspect(f"docker-archive:{out}")["Layers"]) == 2
    sh("skopeo", "copy", f"docker-archive:{out}", f"oci:{tmp_path}/sk1:t")
    sh("skopeo", "copy", f"oci-archive:{out}:ex/both:1", f"oci:{tmp_path}/sk2:t")
    config = read_layout(tmp_path / "sk2", "t").manifest["config"]["digest"]
    assert config == image_id


def test_umoci_unpacks_the_layout_inside(
    tmp_path: Path, both_archive: tuple[Path, str, list[bytes]]
) -> None:
    out, _, _ = both_archive
    layout = tmp_path / "extracted"
    layout.mkdir()
    with tarfile.open(out) as tar:
        tar.extractall(layout, filter="data")
    rootfs = umoci_unpack(layout, "ex/both:1", tmp_path / "bundle")
    assert (rootfs / "d0" / "data").stat().st_size == LAYER_BYTES
    assert (rootfs / "d1" / "data").stat().st_size == LAYER_BYTES


def test_ctr_imports_an_oci_archive(
    containerd: Containerd, both_archive: tuple[Path, str, list[bytes]]
) -> None:
    out, image_id, _ = both_archive
    proc = containerd.ctr("images", "import", str(out))
    assert proc.returncode == 0, proc.stderr.decode()
    listed = containerd.ctr("images", "ls").stdout.decode()
    assert "ex/both:1" in listed, listed
    assert containerd.ctr("images", "ls", "-q").returncode == 0
    del image_id


def test_a_load_that_fails_midway_leaves_no_image(
    tmp_path: Path, docker_engine: DockerEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docker-daemon: the archive streamed into the engine's load fails after its last
    layer: the engine is told the stream is broken, and makes nothing of it."""
    from ocikit.transports import docker_archive

    exact = [tar_bytes([file(n, os.urandom((5 << 20) - 1536))]) for n in ("a", "b")]
    write_layout(tmp_path / "src", exact, compression="none")

    def fail(self: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(docker_archive.DockerArchiveDestination, "_write_end", fail)
    monkeypatch.setenv("DOCKER_HOST", docker_engine.env["DOCKER_HOST"])
    before = _image_ids(docker_engine)
    with pytest.raises((OSError, ocikit.OcikitError)):
        ocikit.copy(f"oci:{tmp_path}/src:t", "docker-daemon:ocikit-midway:1")
    assert _image_ids(docker_engine) == before
