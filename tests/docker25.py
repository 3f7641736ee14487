"""Write what ``docker save`` writes since Docker 25, from a legacy ``docker save``.

No engine here writes this form (Debian's is 20.10), so it is written from the documented
format: an OCI layout (``blobs/sha256/<hex>`` for every blob, layers uncompressed and named by
their diff_id, stored once; ``index.json``; ``oci-layout``) plus the legacy ``manifest.json``
pointing into ``blobs/`` (optionally with ``LayerSources``) and ``repositories``. The tar lists
a sorted directory, as the engine does: every blob comes before ``manifest.json``.
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
import tarfile
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(tar: tarfile.TarFile, name: str) -> bytes:
    """A member's bytes, following symlinks between members (as legacy archives have)."""
    for _ in range(10):
        info = tar.getmember(name)
        if info.issym():
            name = posixpath.normpath(posixpath.join(posixpath.dirname(name), info.linkname))
            continue
        f = tar.extractfile(info)
        assert f is not None
        return f.read()
    raise ValueError(f"symlink loop at {name}")


def convert(legacy: Path, out: Path, *, layer_sources: bool = True) -> Path:
    """Rewrite the legacy archive ``legacy`` in Docker >= 25's form at ``out``."""
    blobs: dict[str, bytes] = {}
    manifest_json = []
    index = []
    repositories: dict[str, dict[str, str]] = {}
    with tarfile.open(legacy) as tar:
        for entry in json.loads(_read(tar, "manifest.json")):
            config = _read(tar, entry["Config"])
            config_hex = _sha(config)
            blobs[config_hex] = config
            layers = [_read(tar, name) for name in entry["Layers"]]
            layer_descs = []
            for layer in layers:
                blobs[_sha(layer)] = layer
                layer_descs.append(
                    {"mediaType": OCI_LAYER, "digest": f"sha256:{_sha(layer)}", "size": len(layer)}
                )
            manifest = json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {
                        "mediaType": OCI_CONFIG,
                        "digest": f"sha256:{config_hex}",
                        "size": len(config),
                    },
                    "layers": layer_descs,
                }
            ).encode()
            blobs[_sha(manifest)] = manifest
            item: dict = {
                "Config": f"blobs/sha256/{config_hex}",
                "RepoTags": entry.get("RepoTags"),
                "Layers": [f"blobs/sha256/{_sha(layer)}" for layer in layers],
            }
            if layer_sources:
                item["LayerSources"] = {d["digest"]: d for d in layer_descs}
            manifest_json.append(item)
            desc = {
                "mediaType": OCI_MANIFEST,
                "digest": f"sha256:{_sha(manifest)}",
                "size": len(manifest),
            }
            for tag in entry.get("RepoTags") or [None]:
                annotations = {}
                if tag:
                    repo, _, t = tag.rpartition(":")
                    full = repo if "/" in repo else f"library/{repo}"
                    annotations = {
                        "io.containerd.image.name": f"docker.io/{full}:{t}",
                        "org.opencontainers.image.ref.name": t,
                    }
                    repositories.setdefault(repo, {})[t] = config_hex
                index.append({**desc, **({"annotations": annotations} if annotations else {})})
    files = {f"blobs/sha256/{h}": data for h, data in blobs.items()}
    files["index.json"] = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": index,
        }
    ).encode()
    files["manifest.json"] = json.dumps(manifest_json).encode()
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    if repositories:
        files["repositories"] = json.dumps(repositories).encode()
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(files[name]))
    return out
