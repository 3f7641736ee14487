"""Write what ``docker save`` writes since Docker 25 (no engine here writes it: Debian's is 20.10).

Written from the documented format (``/work/shared/FORMATS.md``, "engines >= 25"):

- ``blobs/sha256/<hex>`` for every blob: each layer uncompressed and named by its diff_id,
  stored once however often it is used; the config named by the image ID (sha256 of its
  bytes); one OCI image manifest per image (layers ``application/vnd.oci.image.layer.v1.tar``);
  optionally other JSON blobs nothing points at (the engine leaves some).
- ``index.json`` pointing at the manifests, one entry per tag with the annotations
  ``io.containerd.image.name`` (``docker.io/<repo>:<tag>``) and
  ``org.opencontainers.image.ref.name`` (``<tag>``); an untagged image gets one entry without.
- ``oci-layout``; ``manifest.json``: ``[{"Config": "blobs/sha256/<imageid>", "RepoTags": [...],
  "Layers": ["blobs/sha256/<diffid>", ...]}]`` plus ``LayerSources`` when asked;
  ``repositories`` when some image has tags.
- Stream order as the engine's (a tar of a sorted directory): ``blobs/``, ``blobs/sha256/``,
  every blob, then ``index.json``, ``manifest.json``, ``oci-layout``, ``repositories``.

The content comes from real ``docker save`` archives (legacy form): ``extract_legacy`` pulls
out each image's config bytes and layer tars, ``write_docker25`` writes the new form.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MTIME = 0  # the engine writes the temp directory's files with their own times; any will do


@dataclass(frozen=True)
class ImageSpec:
    """One image to write: its exact config bytes, its uncompressed layer tars bottom first."""

    config: bytes
    layers: Sequence[Path]
    repo_tags: Sequence[str] = ()

    @property
    def image_id(self) -> str:
        return "sha256:" + hashlib.sha256(self.config).hexdigest()


@dataclass
class Written:
    """What ``write_docker25`` wrote, for tests to compare against."""

    path: Path
    image_ids: list[str] = field(default_factory=list)
    manifest_digests: list[str] = field(default_factory=list)
    layer_blobs: set[str] = field(default_factory=set)  # "sha256:<diffid>" stored


def _sha256_file(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return "sha256:" + h.hexdigest(), size


def _familiar_to_full(tag: str) -> tuple[str, str, str]:
    """``ocikit-test/rich:1`` -> (repo as written, full name for containerd, tag)."""
    repo, _, t = tag.rpartition(":")
    if not repo or "/" in t:  # no tag given
        repo, t = tag, "latest"
    first = repo.split("/", 1)[0]
    if "/" not in repo:
        full = f"docker.io/library/{repo}"
    elif "." in first or ":" in first or first == "localhost":
        full = repo
    else:
        full = f"docker.io/{repo}"
    return repo, f"{full}:{t}", t


def write_docker25(
    out: Path,
    images: Sequence[ImageSpec],
    *,
    layer_sources: bool = False,
    extra_blobs: Sequence[bytes] = (),
) -> Written:
    """Write ``images`` at ``out`` as Docker >= 25's ``docker save`` does."""
    written = Written(out)
    json_blobs: dict[str, bytes] = {}  # hex -> bytes (configs, manifests, extra JSON)
    layer_files: dict[str, Path] = {}  # hex -> file
    manifest_json: list[dict] = []
    index: list[dict] = []
    repositories: dict[str, dict[str, str]] = {}
    for image in images:
        config_hex = hashlib.sha256(image.config).hexdigest()
        json_blobs[config_hex] = image.config
        descs = []
        for layer in image.layers:
            digest, size = _sha256_file(layer)
            layer_files.setdefault(digest.split(":")[1], layer)
            descs.append({"mediaType": OCI_LAYER, "digest": digest, "size": size})
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": OCI_CONFIG,
                    "digest": f"sha256:{config_hex}",
                    "size": len(image.config),
                },
                "layers": descs,
            },
            separators=(",", ":"),
        ).encode()
        manifest_hex = hashlib.sha256(manifest).hexdigest()
        json_blobs[manifest_hex] = manifest
        entry: dict = {
            "Config": f"blobs/sha256/{config_hex}",
            "RepoTags": list(image.repo_tags) or None,
            "Layers": [f"blobs/sha256/{d['digest'].split(':')[1]}" for d in descs],
        }
        if layer_sources:
            entry["LayerSources"] = {d["digest"]: d for d in descs}
        manifest_json.append(entry)
        target: dict[str, object] = {
            "mediaType": OCI_MANIFEST,
            "digest": f"sha256:{manifest_hex}",
            "size": len(manifest),
        }
        for tag in image.repo_tags:
            repo, full, t = _familiar_to_full(tag)
            index.append(
                {
                    **target,
                    "annotations": {
                        "io.containerd.image.name": full,
                        "org.opencontainers.image.ref.name": t,
                    },
                }
            )
            repositories.setdefault(repo, {})[t] = config_hex
        if not image.repo_tags:
            index.append(dict(target))
        written.image_ids.append(f"sha256:{config_hex}")
        written.manifest_digests.append(f"sha256:{manifest_hex}")
    for extra in extra_blobs:
        json_blobs[hashlib.sha256(extra).hexdigest()] = extra
    written.layer_blobs = {f"sha256:{h}" for h in layer_files}

    top: dict[str, bytes] = {
        "index.json": json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index},
            separators=(",", ":"),
        ).encode(),
        "manifest.json": json.dumps(manifest_json, separators=(",", ":")).encode(),
        "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
    }
    if repositories:
        top["repositories"] = json.dumps(repositories, separators=(",", ":")).encode()

    def info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.size, ti.mtime = kind, size, MTIME
        ti.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
        return ti

    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info("blobs", tarfile.DIRTYPE))
        tar.addfile(info("blobs/sha256", tarfile.DIRTYPE))
        for hex_ in sorted({*json_blobs, *layer_files}):
            name = f"blobs/sha256/{hex_}"
            if hex_ in layer_files:
                path = layer_files[hex_]
                with path.open("rb") as f:
                    tar.addfile(info(name, size=path.stat().st_size), f)
            else:
                data = json_blobs[hex_]
                tar.addfile(info(name, size=len(data)), io.BytesIO(data))
        for name in sorted(top):
            tar.addfile(info(name, size=len(top[name])), io.BytesIO(top[name]))
    return written


def _read_member(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo:
    """A member by name, following symlinks between members (legacy archives have them)."""
    for _ in range(16):
        member = tar.getmember(name)
        if not member.issym():
            return member
        name = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
    raise ValueError(f"symlink loop at {name}")


def extract_legacy(archive: Path, dest: Path) -> list[ImageSpec]:
    """Each image of a legacy ``docker save`` archive: config bytes and layer tars (written
    under ``dest``, one file per distinct layer member), in ``manifest.json`` order."""
    dest.mkdir(parents=True, exist_ok=True)
    images = []
    with tarfile.open(archive) as tar:
        manifest_file = tar.extractfile(_read_member(tar, "manifest.json"))
        assert manifest_file is not None
        for entry in json.loads(manifest_file.read()):
            config_file = tar.extractfile(_read_member(tar, entry["Config"]))
            assert config_file is not None
            layers = []
            for name in entry["Layers"]:
                member = _read_member(tar, name)
                path = dest / (member.name.replace("/", "_"))
                if not path.exists():
                    src = tar.extractfile(member)
                    assert src is not None
                    with path.open("wb") as f:
                        while chunk := src.read(1 << 20):
                            f.write(chunk)
                layers.append(path)
            images.append(ImageSpec(config_file.read(), layers, entry.get("RepoTags") or ()))
    return images


def convert(
    legacy: Path, out: Path, *, layer_sources: bool = False, extra_blobs: Sequence[bytes] = ()
) -> Written:
    """Rewrite the legacy archive ``legacy`` in Docker >= 25's form at ``out``."""
    images = extract_legacy(legacy, out.with_name(out.name + ".layers"))
    return write_docker25(out, images, layer_sources=layer_sources, extra_blobs=extra_blobs)
