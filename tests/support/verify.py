"""Judging ocikit's output with other tools and with code that shares nothing with ocikit.

skopeo, umoci and oci-image-tool judge layouts and archives; ``docker load`` judges
docker-archives; ``read_layout`` and ``read_docker_archive`` read the formats straight from the
files (json + hashlib + gzip + the zstd tool) so a bug in ocikit's reader cannot hide a bug in
its writer.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .archives import (
    LONG_FILE,
    NON_ASCII,
    RICH_TAG,
)
from .dockerd import DockerEngine

REF_NAME = "org.opencontainers.image.ref.name"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = LAYER_TAR + "+gzip"
LAYER_ZSTD = LAYER_TAR + "+zstd"
MEDIA_TYPE = {"gzip": LAYER_GZIP, "zstd": LAYER_ZSTD, "none": LAYER_TAR}


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sh(*args: str | Path, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """A command that must succeed."""
    argv = [str(a) for a in args]
    proc = subprocess.run(argv, input=input, capture_output=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stderr.decode(errors='replace')}"
    return proc


# ---------------------------------------------------------------------------- OCI, read by hand


@dataclass
class LayoutImage:
    root: Path
    manifest_bytes: bytes
    manifest: dict[str, Any]
    config_bytes: bytes
    config: dict[str, Any]

    def blob_path(self, digest: str) -> Path:
        algo, _, hex_ = digest.partition(":")
        return self.root / "blobs" / algo / hex_

    def blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    @property
    def manifest_digest(self) -> str:
        return sha256(self.manifest_bytes)

    @property
    def layer_media_types(self) -> set[str]:
        return {d["mediaType"] for d in self.manifest["layers"]}


def index_entries(layout: Path) -> list[dict[str, Any]]:
    return json.loads((layout / "index.json").read_bytes())["manifests"]


def ref_names(layout: Path) -> list[str]:
    return [d.get("annotations", {}).get(REF_NAME) for d in index_entries(layout)]


def read_layout(layout: Path, ref: str) -> LayoutImage:
    """The image tagged ``ref`` in an OCI layout, every blob checked against its digest."""
    assert json.loads((layout / "oci-layout").read_bytes())["imageLayoutVersion"] == "1.0.0"
    index = json.loads((layout / "index.json").read_bytes())
    assert index["schemaVersion"] == 2
    found = [d for d in index["manifests"] if d.get("annotations", {}).get(REF_NAME) == ref]
    assert len(found) == 1, f"{len(found)} entries named {ref!r} in {layout}/index.json"
    desc = found[0]
    assert desc["mediaType"] == OCI_MANIFEST, desc

    def blob(d: dict[str, Any]) -> bytes:
        algo, _, hex_ = d["digest"].partition(":")
        data = (layout / "blobs" / algo / hex_).read_bytes()
        assert sha256(data) == d["digest"], f"blob {d['digest']} has other bytes"
        assert len(data) == d["size"], f"blob {d['digest']}: size {len(data)} != {d['size']}"
        return data

    manifest_bytes = blob(desc)
    manifest = json.loads(manifest_bytes)
    assert manifest["schemaVersion"] == 2
    assert manifest.get("mediaType", OCI_MANIFEST) == OCI_MANIFEST
    assert manifest["config"]["mediaType"] == OCI_CONFIG
    config_bytes = blob(manifest["config"])
    for layer in manifest["layers"]:
        algo, _, hex_ = layer["digest"].partition(":")
        path = layout / "blobs" / algo / hex_
        assert path.stat().st_size == layer["size"], layer
    return LayoutImage(layout, manifest_bytes, manifest, config_bytes, json.loads(config_bytes))


def decompress(media_type: str, data: bytes) -> bytes:
    if media_type == LAYER_TAR:
        return data
    if media_type == LAYER_GZIP:
        assert data[:2] == b"\x1f\x8b", "not gzip"
        return gzip.decompress(data)
    if media_type == LAYER_ZSTD:
        assert data[:4] == b"\x28\xb5\x2f\xfd", "not zstd"
        return sh("zstd", "-d", "-c", "-q", input=data).stdout
    raise AssertionError(f"unexpected layer media type {media_type}")


def check_layers_match_diff_ids(image: LayoutImage) -> list[str]:
    """Each layer, decompressed, hashes to the config's diff_id in the same place."""
    diff_ids = image.config["rootfs"]["diff_ids"]
    layers = image.manifest["layers"]
    assert len(layers) == len(diff_ids)
    for i, (desc, diff_id) in enumerate(zip(layers, diff_ids, strict=True)):
        data = image.blob(desc["digest"])
        assert sha256(data) == desc["digest"], f"layer {i}: blob does not match its digest"
        assert sha256(decompress(desc["mediaType"], data)) == diff_id, f"layer {i}: diff_id"
    return diff_ids


# ---------------------------------------------------------------------------- docker-archive


@dataclass
class DockerArchiveImage:
    config_bytes: bytes
    repo_tags: list[str]
    layers: list[bytes]


def read_docker_archive(path: Path) -> list[DockerArchiveImage]:
    """A docker-archive ocikit wrote: the legacy form (what every engine loads), layers
    uncompressed tars, no member outside the archive."""
    out = []
    with tarfile.open(path) as tar:
        members = {m.name: m for m in tar.getmembers()}
        for m in members.values():
            assert not m.name.startswith(("/", "../")) and "/../" not in m.name, m.name

        def read(name: str) -> bytes:
            m = members[name]
            if m.issym():
                target = os.path.normpath(os.path.join(os.path.dirname(name), m.linkname))
                assert not target.startswith(".."), m.linkname
                return read(target)
            f = tar.extractfile(m)
            assert f is not None, name
            return f.read()

        for entry in json.loads(read("manifest.json")):
            config = read(entry["Config"])
            layers = [read(name) for name in entry["Layers"]]
            for i, layer in enumerate(layers):
                assert layer[257:262] == b"ustar", f"layer {i} is not an uncompressed tar"
            diff_ids = json.loads(config)["rootfs"]["diff_ids"]
            assert [sha256(x) for x in layers] == diff_ids
            out.append(DockerArchiveImage(config, entry.get("RepoTags") or [], layers))
    return out


def docker_load_same_id(engine: DockerEngine, archive: Path, tag: str, image_id: str) -> None:
    """Remove the image, ``docker load`` the archive, and find it again under ``tag`` with
    the same ID: the config came through byte for byte."""
    engine.remove_image(tag, image_id)
    assert not engine.has_image(image_id), f"{image_id} still in the engine"
    engine.load(archive)
    assert engine.image_id(tag) == image_id


# ---------------------------------------------------------------------------- external judges


def skopeo_inspect(ref: str) -> dict[str, Any]:
    return json.loads(sh("skopeo", "inspect", ref).stdout)


def skopeo_inspect_config(ref: str) -> bytes:
    return sh("skopeo", "inspect", "--raw", "--config", ref).stdout


def oci_image_tool_validate(layout: Path, ref: str | None = None) -> None:
    """``oci-image-tool validate`` of a layout (``--type imageLayout`` is spelled ``image``
    by this oci-image-tool; it says "autodetected image file type is: imageLayout")."""
    args: list[str | Path] = ["oci-image-tool", "validate", "--type", "image"]
    if ref is not None:
        args += ["--ref", f"name={ref}"]
    out = sh(*args, layout)
    assert b"Validation succeeded" in out.stdout + out.stderr, out


def umoci_unpack(layout: Path, ref: str, bundle: Path) -> Path:
    """``umoci unpack`` (as root); returns the rootfs."""
    sh("umoci", "unpack", "--image", f"{layout}:{ref}", bundle)
    return bundle / "rootfs"


def extract_oci_archive(archive: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="data")
    return dest


# ---------------------------------------------------------------------------- the test images


def check_rich_rootfs(root: Path) -> None:
    """What the rich image's Dockerfile made, as a container sees it."""
    assert (root / "bin" / "busybox").is_file()
    assert not (root / "gone.txt").exists(), "whiteout not applied"
    assert sorted(os.listdir(root / "d")) == ["n"], "opaque directory not applied"
    assert (root / "d" / "n").read_text() == "new\n"
    assert (root / "keep" / "k").read_text() == "kept\n"
    assert (root / "hl-link").stat().st_ino == (root / "hl-target").stat().st_ino
    assert (root / "hl-target").read_text() == "target\n"
    assert (root / "x-link").stat().st_ino == (root / "x").stat().st_ino
    assert (root / "x").read_text() == "inlayer\n"
    assert (root / LONG_FILE).read_text() == "long\n"
    assert os.readlink(root / "long-symlink") == f"/{LONG_FILE}"
    assert (root / NON_ASCII).read_text() == "accents\n"
    assert (root / "same.txt").read_text() == "the same layer twice\n"
    assert (root / "srv").is_dir()


def check_other_rootfs(root: Path) -> None:
    assert (root / "bin" / "busybox").is_file()
    assert (root / "o.txt").read_text() == "other image\n"
    assert not (root / "d").exists()


def check_rootfs(tag: str, root: Path) -> None:
    if tag == RICH_TAG:
        check_rich_rootfs(root)
    else:
        check_other_rootfs(root)


def check_oci_layout(
    layout: Path, ref: str, *, tag: str, image_id: str, work: Path, unpack: bool = True
) -> LayoutImage:
    """A layout ocikit wrote, judged by hand, by skopeo, oci-image-tool and umoci."""
    image = read_layout(layout, ref)
    assert image.manifest["config"]["digest"] == image_id, "config bytes changed"
    check_layers_match_diff_ids(image)
    info = skopeo_inspect(f"oci:{layout}:{ref}")
    assert info["Digest"] == image.manifest_digest
    assert len(info["Layers"]) == len(image.manifest["layers"])
    assert skopeo_inspect_config(f"oci:{layout}:{ref}") == image.config_bytes
    oci_image_tool_validate(layout)
    oci_image_tool_validate(layout, ref)
    if unpack:
        bundle = work / f"bundle-{layout.name}-{ref}"
        check_rootfs(tag, umoci_unpack(layout, ref, bundle))
    return image


def check_oci_archive(
    archive: Path, ref: str, *, tag: str, image_id: str, work: Path
) -> LayoutImage:
    """An oci-archive ocikit wrote: skopeo reads it as is; extracted, it is a valid layout."""
    info = skopeo_inspect(f"oci-archive:{archive}:{ref}")
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert "index.json" in names and "oci-layout" in names, names
    layout = extract_oci_archive(archive, work / f"extracted-{archive.name}")
    image = check_oci_layout(layout, ref, tag=tag, image_id=image_id, work=work)
    assert info["Digest"] == image.manifest_digest
    return image
