"""Real `docker save` output, every form, to OCI and back: judged by skopeo, umoci,
oci-image-tool and `docker load` (same image ID) of the engine the tests start."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

import ocikit as lib
from ocikit.model import Digest
from ocikit.model import mediatypes as mt

from conftest import LONG_DIR, NON_ASCII, Archive, ocikit

pytestmark = pytest.mark.docker


def sh(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr}"
    return proc


def ok(*args: str) -> subprocess.CompletedProcess:
    proc = ocikit(*args)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc


def check_rootfs(root: Path) -> None:
    """What the rich image's Dockerfile made, as a container would see it."""
    assert not (root / "gone.txt").exists()  # whiteout
    assert sorted(os.listdir(root / "d")) == ["new"]  # opaque directory
    assert (root / "d" / "new").read_text() == "new\n"
    assert (root / "hl-link").stat().st_ino == (root / "hl-target").stat().st_ino
    assert (root / "x-link").stat().st_ino == (root / "x").stat().st_ino
    assert (root / LONG_DIR / "file-with-a-rather-long-name.txt").read_text() == "long\n"
    assert os.readlink(root / "long-symlink").endswith("file-with-a-rather-long-name.txt")
    assert (root / NON_ASCII).read_text() == "accents\n"
    assert (root / "same.txt").read_text() == "the same layer twice\n"


def check_layout(layout: Path, ref: str, tmp: Path) -> None:
    info = json.loads(sh("skopeo", "inspect", f"oci:{layout}:{ref}").stdout)
    assert info["Env"] and "FOO=bar" in info["Env"]
    sh("oci-image-tool", "validate", "--type", "image", "--ref", f"name={ref}", str(layout))
    bundle = tmp / f"bundle-{layout.name}-{ref}"
    sh("umoci", "unpack", "--image", f"{layout}:{ref}", str(bundle))
    check_rootfs(bundle / "rootfs")


def check_archive(archive: Path, ref: str, tmp: Path) -> None:
    sh("skopeo", "inspect", f"oci-archive:{archive}:{ref}")
    extracted = tmp / f"extracted-{ref}"
    extracted.mkdir()
    with tarfile.open(archive) as tar:
        tar.extractall(extracted, filter="data")
    check_layout(extracted, ref, tmp)


def docker_load(engine, archive: Path, tag: str, expected_id: str) -> None:
    engine.docker("rmi", "-f", tag, check=False)
    engine.docker("rmi", "-f", expected_id, check=False)
    assert engine.docker("images", "-q", "--no-trunc").stdout.decode().count(expected_id) == 0
    engine.docker("load", "-i", str(archive))
    assert engine.image_id(tag) == expected_id


def round_trip(engine, source: str, archive: Archive, tmp: Path, stdin=None) -> None:
    """source -> oci: and oci-archive:, each valid, each back to a loadable docker-archive."""
    tag = archive.tags[0]
    layout, oci_tar = tmp / "layout", tmp / "image.oci.tar"
    for dest in (f"oci:{layout}:t", f"oci-archive:{oci_tar}:t"):
        if stdin is not None:
            with open(stdin, "rb") as f:
                proc = ocikit("copy", "-q", source, dest, stdin=f)
        else:
            proc = ocikit("copy", "-q", source, dest)
        assert proc.returncode == 0, proc.stderr
    check_layout(layout, "t", tmp)
    check_archive(oci_tar, "t", tmp)
    for i, src in enumerate((f"oci:{layout}:t", f"oci-archive:{oci_tar}:t")):
        back = tmp / f"back{i}.tar"
        proc = ocikit("copy", "-q", src, f"docker-archive:{back}:{tag}")
        assert proc.returncode == 0, proc.stderr
        docker_load(engine, back, tag, archive.image_id)
    # and a container sees what the Dockerfile made
    out = engine.docker("run", "--rm", "--network", "none", tag).stdout
    assert out == b"new\n"


def test_legacy_from_file(engine, rich: Archive, tmp_path: Path) -> None:
    round_trip(engine, f"docker-archive:{rich.path}", rich, tmp_path)


def test_legacy_from_stdin_file(engine, rich: Archive, tmp_path: Path) -> None:
    round_trip(engine, "docker-archive:-", rich, tmp_path, stdin=rich.path)


def test_legacy_from_a_real_pipe(engine, rich: Archive, tmp_path: Path) -> None:
    """`docker save IMG | ocikit copy docker-archive:- ...`"""
    save = subprocess.Popen(
        ["/usr/bin/docker", "save", rich.tags[0]], env=engine.env, stdout=subprocess.PIPE
    )
    assert save.stdout is not None
    proc = ocikit("copy", "-q", "docker-archive:-", f"oci:{tmp_path}/piped:t", stdin=save.stdout)
    save.stdout.close()
    assert save.wait() == 0 and proc.returncode == 0, proc.stderr
    check_layout(tmp_path / "piped", "t", tmp_path)
    from_file = lib.copy(f"docker-archive:{rich.path}", f"oci:{tmp_path}/file:t")
    assert lib.inspect(f"oci:{tmp_path}/piped:t")["digest"] == from_file.manifest_digest


def test_docker25_from_file(engine, docker25: Archive, tmp_path: Path) -> None:
    round_trip(engine, f"docker-archive:{docker25.path}", docker25, tmp_path)


def test_docker25_from_pipe(engine, docker25: Archive, tmp_path: Path) -> None:
    cat = subprocess.Popen(["cat", str(docker25.path)], stdout=subprocess.PIPE)
    layout = tmp_path / "layout"
    proc = ocikit("copy", "-q", "docker-archive:-", f"oci:{layout}:t", stdin=cat.stdout)
    assert cat.wait() == 0 and proc.returncode == 0, proc.stderr
    check_layout(layout, "t", tmp_path)
    back = tmp_path / "back.tar"
    ok("copy", "-q", f"oci:{layout}:t", f"docker-archive:{back}:{docker25.tags[0]}")
    docker_load(engine, back, docker25.tags[0], docker25.image_id)


@pytest.mark.parametrize("select", ["@1", ":ocikit-test/other:2", ":docker.io/ocikit-test/other:2"])
def test_docker25_without_layer_sources_two_images(
    engine, docker25_plain: Archive, tmp_path: Path, select: str
) -> None:
    ref = f"docker-archive:{docker25_plain.path}{select}"
    for piped in (False, True):
        layout = tmp_path / f"layout{piped}"
        if piped:
            with open(docker25_plain.path, "rb") as f:
                cat = subprocess.Popen(["cat"], stdin=f, stdout=subprocess.PIPE)
                src = "docker-archive:-" + select
                proc = ocikit("copy", "-q", src, f"oci:{layout}:t", stdin=cat.stdout)
                cat.wait()
        else:
            proc = ocikit("copy", "-q", ref, f"oci:{layout}:t")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(sh("skopeo", "inspect", f"oci:{layout}:t").stdout)["Layers"]
    back = tmp_path / "back.tar"
    ok("copy", "-q", f"oci:{layout}:t", f"docker-archive:{back}:ocikit-test/other:2")
    docker_load(engine, back, "ocikit-test/other:2", docker25_plain.image_ids[1])


def test_two_image_archive(engine, two: Archive, tmp_path: Path) -> None:
    proc = ocikit("copy", f"docker-archive:{two.path}", f"oci:{tmp_path}/l")
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and "@0 (ocikit-test/rich:1)" in err and "@1" in err
    for i, tag in enumerate(two.tags):
        for ref in (f"docker-archive:{two.path}@{i}", f"docker-archive:{two.path}:{tag}"):
            proc = ocikit("copy", "-q", ref, f"oci:{tmp_path}/l:{i}")
            assert proc.returncode == 0, proc.stderr
        back = tmp_path / f"back{i}.tar"
        ok("copy", "-q", f"oci:{tmp_path}/l:{i}", f"docker-archive:{back}:{tag}")
        docker_load(engine, back, tag, two.image_ids[i])
    index = json.loads((tmp_path / "l" / "index.json").read_bytes())
    names = sorted(
        d["annotations"]["org.opencontainers.image.ref.name"] for d in index["manifests"]
    )
    assert names == ["0", "1"]


@pytest.mark.parametrize("fmt", ["zstd", "none", "gzip"])
def test_compression_formats(engine, rich: Archive, tmp_path: Path, fmt: str) -> None:
    layout = tmp_path / "l"
    proc = ocikit(
        "copy",
        "-q",
        "--dest-compress-format",
        fmt,
        f"docker-archive:{rich.path}",
        f"oci:{layout}:t",
    )
    assert proc.returncode == 0, proc.stderr
    info = lib.inspect(f"oci:{layout}:t")
    want = {"zstd": mt.OCI_LAYER_ZSTD, "none": mt.OCI_LAYER, "gzip": mt.OCI_LAYER_GZIP}[fmt]
    assert {layer["mediaType"] for layer in info["layers"]} == {want}
    sh("skopeo", "inspect", f"oci:{layout}:t")
    if fmt == "zstd":
        # oci-image-tool and umoci here predate image-spec 1.1's +zstd: skopeo decompresses
        # every layer itself, and each must hash to its diff_id
        plain = tmp_path / "plain"
        sh("skopeo", "copy", "--dest-decompress", f"oci:{layout}:t", f"dir:{plain}")
        for diff_id in info["diff_ids"]:  # skopeo names what it decompressed by its digest
            assert Digest.of((plain / diff_id.split(":")[1]).read_bytes()) == diff_id
    else:
        check_layout(layout, "t", tmp_path)
    back = tmp_path / "back.tar"
    ok("copy", "-q", f"oci:{layout}:t", f"docker-archive:{back}:{rich.tags[0]}")
    docker_load(engine, back, rich.tags[0], rich.image_id)


def test_adding_to_a_layout_rewrites_nothing(rich: Archive, two: Archive, tmp_path: Path) -> None:
    layout = tmp_path / "l"
    lib.copy(f"docker-archive:{rich.path}", f"oci:{layout}:rich")
    lib.copy(f"docker-archive:{two.path}@1", f"oci:{layout}:other")
    blobs = layout / "blobs" / "sha256"
    before = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in blobs.iterdir()}
    lib.copy(f"docker-archive:{rich.path}", f"oci:{layout}:rich-again")
    lib.copy(f"docker-archive:{two.path}@0", f"oci:{layout}:rich-from-two")
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in blobs.iterdir()}
    assert after == before
    index = json.loads((layout / "index.json").read_bytes())
    names = {d["annotations"]["org.opencontainers.image.ref.name"] for d in index["manifests"]}
    assert names == {"rich", "other", "rich-again", "rich-from-two"}
    sh("oci-image-tool", "validate", "--type", "image", str(layout))


def test_additional_tags(engine, rich: Archive, tmp_path: Path) -> None:
    out = tmp_path / "tags.tar"
    proc = ocikit(
        "copy",
        "-q",
        "--additional-tag",
        "extra/one:1",
        "--additional-tag",
        "extra/two",
        f"docker-archive:{rich.path}",
        f"docker-archive:{out}:main/img:9",
    )
    assert proc.returncode == 0, proc.stderr
    engine.docker("load", "-i", str(out))
    for tag in ("main/img:9", "extra/one:1", "extra/two:latest"):
        assert engine.image_id(tag) == rich.image_id


def test_inspect(rich: Archive, tmp_path: Path) -> None:
    ref = f"docker-archive:{rich.path}"
    proc = ocikit("inspect", ref)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["config_digest"] == rich.image_id
    assert info["repo_tags"] == rich.tags and info["name"] == rich.tags[0]
    assert "FOO=bar" in info["env"] and info["labels"] == {"org.example.test": "rich"}
    assert info["entrypoint"] == ["/bin/sh", "-c"] and info["cmd"] == ["cat /d/new"]
    assert info["os"] == "linux" and info["created"]
    assert all(set(layer) == {"mediaType", "digest", "size"} for layer in info["layers"])
    raw = ocikit("inspect", "--raw", ref).stdout
    assert Digest.of(raw) == info["digest"]
    config = ocikit("inspect", "--config", ref).stdout
    assert Digest.of(config) == info["config_digest"]
    copied = json.loads(ocikit("copy", "-q", "--json", ref, f"oci:{tmp_path}/l:t").stdout)
    assert copied["config_digest"] == rich.image_id
    assert json.loads(ocikit("inspect", f"oci:{tmp_path}/l:t").stdout)["digest"] == copied["digest"]
