"""``ocikit inspect`` (JSON, ``--raw``, ``--config``) and the Python API that reads images."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

import ocikit as lib
from support.archives import (
    RICH_CMD,
    RICH_ENTRYPOINT,
    RICH_ENV,
    RICH_LABELS,
    RICH_TAG,
    SAMPLE,
    Archive,
    describe,
)
from support.cli import ok
from support.dockerd import DockerEngine
from support.verify import read_layout, sha256

KEYS = {
    "name",
    "digest",
    "created",
    "os",
    "architecture",
    "layers",
    "env",
    "labels",
    "entrypoint",
    "cmd",
    "config_digest",
}


def check_inspect(ref: str, *, config_digest: str, manifest_digest: str | None = None) -> dict:
    """CLI and API agree; --raw and --config print bytes that hash to what the JSON says."""
    info: dict[str, Any] = json.loads(ok("inspect", ref).stdout)
    assert set(info) >= KEYS, KEYS - set(info)
    assert info == lib.inspect(ref)
    assert info["config_digest"] == config_digest
    if manifest_digest is not None:
        assert info["digest"] == manifest_digest
    assert info["os"] == "linux" and info["architecture"] and info["created"]
    assert info["layers"] and all(
        set(layer) == {"mediaType", "digest", "size"} and layer["digest"].startswith("sha256:")
        for layer in info["layers"]
    )
    raw = ok("inspect", "--raw", ref).stdout
    assert sha256(raw) == info["digest"]
    manifest = json.loads(raw)
    assert [
        {"mediaType": d["mediaType"], "digest": d["digest"], "size": d["size"]}
        for d in manifest["layers"]
    ] == info["layers"]
    config = ok("inspect", "--config", ref).stdout
    assert sha256(config) == info["config_digest"] == manifest["config"]["digest"]
    assert len(config) == manifest["config"]["size"]

    with lib.open_image(ref) as image:
        assert image.manifest_bytes == raw
        assert image.config_bytes == config
        assert len(image.manifest.layers) == len(info["layers"])
        for desc in image.manifest.layers:
            h, size = hashlib.sha256(), 0
            with image.open_blob(desc) as blob:
                while chunk := blob.read(1 << 16):
                    h.update(chunk)
                    size += len(chunk)
            assert f"sha256:{h.hexdigest()}" == desc.digest and size == desc.size
    return info


def test_inspect_sample(tmp_path: Path) -> None:
    """No engine needed: the shipped sample, as docker-archive, oci: and oci-archive:."""
    [image_id] = describe(SAMPLE)[1]
    info = check_inspect(f"docker-archive:{SAMPLE}", config_digest=image_id)
    assert info["name"] == "hello:latest"
    result = json.loads(
        ok("copy", "-q", "--json", f"docker-archive:{SAMPLE}", f"oci:{tmp_path}/l:t").stdout
    )
    assert result["config_digest"] == image_id
    check_inspect(f"oci:{tmp_path}/l:t", config_digest=image_id, manifest_digest=result["digest"])
    ok("copy", "-q", f"oci:{tmp_path}/l:t", f"oci-archive:{tmp_path}/a.tar:t")
    check_inspect(
        f"oci-archive:{tmp_path}/a.tar:t", config_digest=image_id, manifest_digest=result["digest"]
    )


@pytest.mark.docker
def test_inspect_rich(
    docker_engine: DockerEngine, legacy_archive_rich: Archive, tmp_path: Path
) -> None:
    rich = legacy_archive_rich
    want_arch = docker_engine.docker("inspect", "--format", "{{.Architecture}}", RICH_TAG)
    for ref in (f"docker-archive:{rich.path}", f"docker-archive:{rich.path}:{RICH_TAG}"):
        info = check_inspect(ref, config_digest=rich.image_id)
        assert info["name"] == RICH_TAG
        assert RICH_ENV in info["env"]
        assert info["labels"] == RICH_LABELS
        assert info["entrypoint"] == RICH_ENTRYPOINT
        assert info["cmd"] == RICH_CMD
        assert info["architecture"] == want_arch.stdout.decode().strip()
        assert len(info["layers"]) == 11  # the repeated layer is listed twice
    result = lib.copy(f"docker-archive:{rich.path}", f"oci:{tmp_path}/l:t")
    assert result.config_digest == rich.image_id
    assert result.to_dict()["digest"] == result.manifest_digest
    image = read_layout(tmp_path / "l", "t")
    assert result.manifest_digest == image.manifest_digest
    oci = check_inspect(
        f"oci:{tmp_path}/l:t", config_digest=rich.image_id, manifest_digest=image.manifest_digest
    )
    assert oci["layers"] == [
        {"mediaType": d["mediaType"], "digest": d["digest"], "size": d["size"]}
        for d in image.manifest["layers"]
    ]
    for key in ("env", "labels", "entrypoint", "cmd", "created", "os", "architecture"):
        assert oci[key] == info[key], key
    assert json.loads(ok("inspect", "--raw", f"oci:{tmp_path}/l:t").stdout) == image.manifest
    assert ok("inspect", "--raw", f"oci:{tmp_path}/l:t").stdout == image.manifest_bytes
    assert ok("inspect", "--config", f"oci:{tmp_path}/l:t").stdout == image.config_bytes
