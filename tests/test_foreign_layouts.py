"""Layouts and archives written by skopeo and umoci; multi-platform indexes; stdout output."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ocikit
from ocikit.errors import AmbiguousImageError, NotFoundError
from ocikit.model import Descriptor, Digest, Index, Manifest
from ocikit.model import mediatypes as mt

SAMPLE = Path(__file__).parent.parent / "examples" / "hello.docker.tar"
OCIKIT = [sys.executable, "-m", "ocikit"]
REF_NAME = "org.opencontainers.image.ref.name"


def run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, capture_output=True, **kw)


def diff_ids(ref: str) -> list[str]:
    return ocikit.inspect(ref)["diff_ids"]


def test_reads_skopeo_layout_and_archive(tmp_path: Path) -> None:
    original = ocikit.inspect(f"docker-archive:{SAMPLE}")
    run("skopeo", "copy", f"docker-archive:{SAMPLE}", f"oci:{tmp_path}/sk:t")
    run("skopeo", "copy", f"docker-archive:{SAMPLE}", f"oci-archive:{tmp_path}/sk.tar:t")
    for ref in (f"oci:{tmp_path}/sk:t", f"oci-archive:{tmp_path}/sk.tar:t"):
        assert diff_ids(ref) == original["diff_ids"]
        ocikit.copy(ref, f"docker-archive:{tmp_path}/back.tar:back:1")
        out = run("skopeo", "inspect", f"docker-archive:{tmp_path}/back.tar").stdout
        assert json.loads(out)["Layers"] == original["diff_ids"]


def test_reads_umoci_layout(tmp_path: Path) -> None:
    layout = tmp_path / "um"
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:base")
    run("umoci", "unpack", "--image", f"{layout}:base", str(tmp_path / "b"))
    (tmp_path / "b" / "rootfs" / "hello").write_text("hi\n")
    run("umoci", "repack", "--image", f"{layout}:base", str(tmp_path / "b"))
    run("umoci", "config", "--image", f"{layout}:base", "--config.env", "FOO=bar", "--tag", "v2")
    info = ocikit.inspect(f"oci:{layout}:v2")
    assert info["env"] == ["FOO=bar"] and len(info["layers"]) == 1
    with pytest.raises(AmbiguousImageError, match="base, v2"):
        ocikit.inspect(f"oci:{layout}")
    with pytest.raises(NotFoundError, match="names: base, v2"):
        ocikit.inspect(f"oci:{layout}:nope")
    result = ocikit.copy(f"oci:{layout}:v2", f"oci:{tmp_path}/copy:v2")
    assert result.manifest_digest == info["digest"]  # unchanged layers: same manifest bytes
    run("umoci", "unpack", "--image", f"{tmp_path}/copy:v2", str(tmp_path / "b2"))
    assert (tmp_path / "b2" / "rootfs" / "hello").read_text() == "hi\n"


def _add_blob(layout: Path, data: bytes) -> Digest:
    digest = Digest.of(data)
    (layout / "blobs" / "sha256" / digest.hex).write_bytes(data)
    return digest


def _multi_platform_layout(tmp_path: Path) -> Path:
    """The sample as linux/amd64, and as linux/arm64/v8 (config rewritten), in one index."""
    layout = tmp_path / "multi"
    ocikit.copy(f"docker-archive:{SAMPLE}", f"oci:{layout}:amd64")
    with ocikit.open_image(f"oci:{layout}:amd64") as image:
        amd64 = image.manifest
        config = json.loads(image.config_bytes)
    config.update(architecture="arm64", variant="v8")
    cfg = json.dumps(config).encode()
    cfg_desc = Descriptor(mt.OCI_CONFIG, _add_blob(layout, cfg), len(cfg))
    arm64 = Manifest.build(cfg_desc, amd64.layers)
    _add_blob(layout, arm64.raw)
    index = Index.build(
        [
            Descriptor.from_json(
                {**amd64.descriptor.to_dict(), "platform": {"os": "linux", "architecture": "amd64"}}
            ),
            Descriptor.from_json(
                {
                    **arm64.descriptor.to_dict(),
                    "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
                }
            ),
        ]
    )
    index_digest = _add_blob(layout, index.raw)
    top = Index.build([Descriptor(mt.OCI_INDEX, index_digest, len(index.raw), {REF_NAME: "multi"})])
    (layout / "index.json").write_bytes(top.raw)
    return layout


def test_platform_selection(tmp_path: Path) -> None:
    layout = _multi_platform_layout(tmp_path)
    arm = ocikit.inspect(f"oci:{layout}:multi", platform="linux/arm64")
    assert (arm["architecture"], arm["variant"]) == ("arm64", "v8")
    host = ocikit.inspect(f"oci:{layout}:multi")  # the host's, amd64 here
    assert host["architecture"] == "amd64"
    with pytest.raises(NotFoundError, match=r"linux/s390x.*available: linux/amd64, linux/arm64/v8"):
        ocikit.inspect(f"oci:{layout}:multi", platform="linux/s390x")
    ocikit.copy(f"oci:{layout}:multi", f"oci:{tmp_path}/arm:a", platform="linux/arm64/v8")
    assert ocikit.inspect(f"oci:{tmp_path}/arm:a")["architecture"] == "arm64"
    bad = subprocess.run(
        [*OCIKIT, "inspect", "--platform", "linux", f"oci:{layout}:multi"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive"])
def test_write_to_stdout(tmp_path: Path, transport: str) -> None:
    out = tmp_path / "out.tar"
    with out.open("wb") as f:
        subprocess.run(
            [*OCIKIT, "copy", "-q", f"docker-archive:{SAMPLE}", f"{transport}:-"],
            stdout=f,
            check=True,
        )
    original = ocikit.inspect(f"docker-archive:{SAMPLE}")
    assert diff_ids(f"{transport}:{out}") == original["diff_ids"]
    info = json.loads(run("skopeo", "inspect", f"{transport}:{out}").stdout)
    assert info["Env"] == original["env"]


def test_reproducible_from_file_and_pipe(tmp_path: Path) -> None:
    a = ocikit.copy(f"docker-archive:{SAMPLE}", f"oci-archive:{tmp_path}/a.tar")
    with SAMPLE.open("rb") as stdin:
        subprocess.run(
            [*OCIKIT, "copy", "-q", "docker-archive:-", f"oci-archive:{tmp_path}/b.tar"],
            stdin=subprocess.Popen(["cat"], stdin=stdin, stdout=subprocess.PIPE).stdout,
            check=True,
        )
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    assert a.manifest_digest == ocikit.inspect(f"oci-archive:{tmp_path}/b.tar")["digest"]


@pytest.mark.skipif(shutil.which("zstd") is None, reason="zstd not installed")
def test_zstd_layers_decompress_with_the_zstd_tool(tmp_path: Path) -> None:
    ocikit.copy(f"docker-archive:{SAMPLE}", f"oci:{tmp_path}/z:t", dest_compress_format="zstd")
    info = ocikit.inspect(f"oci:{tmp_path}/z:t")
    for layer, diff_id in zip(info["layers"], info["diff_ids"], strict=True):
        assert layer["mediaType"] == mt.OCI_LAYER_ZSTD
        blob = tmp_path / "z" / "blobs" / "sha256" / layer["digest"].split(":")[1]
        plain = run("zstd", "-dc", str(blob)).stdout
        assert Digest.of(plain) == diff_id
