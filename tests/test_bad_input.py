"""Bad input: one clear line, exit 2, and the destination left exactly as it was."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Archive, ocikit

SAMPLE = Path(__file__).parent.parent / "examples" / "hello.docker.tar"


def rewrite(src: Path, dst: Path, edit: Callable[[tarfile.TarInfo, bytes | None], list]) -> Path:
    """Copy a tar member by member; ``edit`` returns the (info, data) pairs to write instead."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        for info in tin.getmembers():
            f = tin.extractfile(info) if info.isreg() else None
            for new_info, data in edit(info, f.read() if f else None):
                tout.addfile(new_info, io.BytesIO(data) if data is not None else None)
    return dst


def _first_layer(archive: Path) -> str:
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    return manifest[0]["Layers"][0]


def _symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.fixture(scope="session")
def bad(rich: Archive, docker25: Archive, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    out: dict[str, Path] = {}
    out["not-a-tar"] = d / "not-a-tar"
    out["not-a-tar"].write_bytes(os.urandom(4096))
    out["empty"] = d / "empty"
    out["empty"].write_bytes(b"")
    layer = _first_layer(rich.path)
    with tarfile.open(rich.path) as tar:
        member = tar.getmember(layer)
        cut = member.offset_data + member.size // 2
    out["truncated"] = d / "truncated.tar"
    out["truncated"].write_bytes(rich.path.read_bytes()[:cut])

    def drop_layer(info, data):
        return [] if info.name == layer else [(info, data)]

    out["missing-blob"] = rewrite(rich.path, d / "missing-blob.tar", drop_layer)

    def drop_config(info, data):
        is_config = info.name.endswith(".json") and "/" not in info.name
        return [] if is_config and info.name != "manifest.json" else [(info, data)]

    out["missing-config"] = rewrite(rich.path, d / "missing-config.tar", drop_config)

    def corrupt(info, data):
        if info.name == layer and data:
            data = data[:-1500] + bytes([data[-1500] ^ 0xFF]) + data[-1499:]
        return [(info, data)]

    out["diff-id-mismatch"] = rewrite(rich.path, d / "diff-id-mismatch.tar", corrupt)

    blob = _first_layer(docker25.path)

    def corrupt25(info, data):
        if info.name == blob and data:
            data = data[:600] + bytes([data[600] ^ 0xFF]) + data[601:]
        return [(info, data)]

    out["docker25-digest-mismatch"] = rewrite(docker25.path, d / "d25-mismatch.tar", corrupt25)

    def escape(info, data):
        if info.name == layer:
            return [(_symlink(layer, "../../../etc/passwd"), None)]
        return [(info, data)]

    out["symlink-outside"] = rewrite(rich.path, d / "symlink-outside.tar", escape)
    other = _first_layer(rich.path).split("/")[0]

    def loop(info, data):
        if info.name == layer:
            return [(_symlink(layer, f"../{other}x/layer.tar"), None)]
        return [(info, data)]

    looped = rewrite(rich.path, d / "loop-a.tar", loop)
    with tarfile.open(looped, "a") as tar:  # the second half of the loop
        tar.addfile(_symlink(f"{other}x/layer.tar", f"../{layer}"))
    out["symlink-loop"] = looped

    def bad_manifest(info, data):
        if info.name == "manifest.json":
            data = b'[{"Config": 42}]'
            info.size = len(data)
        return [(info, data)]

    out["bad-manifest"] = rewrite(rich.path, d / "bad-manifest.tar", bad_manifest)
    return out


EXPECTED = {
    "not-a-tar": "not a tar archive",
    "empty": "empty",
    "truncated": "truncated",
    "missing-blob": "missing",
    "missing-config": "missing",
    "diff-id-mismatch": "does not match",
    "docker25-digest-mismatch": "does not match",
    "symlink-outside": "outside the archive",
    "symlink-loop": "loop",
    "bad-manifest": "Config",
}


def snapshot(layout: Path) -> tuple[bytes, list[str]]:
    blobs = sorted(p.name for p in (layout / "blobs" / "sha256").iterdir())
    return (layout / "index.json").read_bytes(), blobs


@pytest.fixture
def existing_layout(tmp_path: Path) -> Path:
    layout = tmp_path / "existing"
    proc = ocikit("copy", "-q", f"docker-archive:{SAMPLE}", f"oci:{layout}:hello")
    assert proc.returncode == 0, proc.stderr
    return layout


@pytest.mark.parametrize("case", sorted(EXPECTED))
@pytest.mark.parametrize("mode", ["file", "pipe"])
def test_bad_archive(bad, case: str, mode: str, existing_layout: Path, tmp_path: Path) -> None:
    before = snapshot(existing_layout)
    targets = [
        f"oci:{existing_layout}:new",
        f"oci:{tmp_path}/fresh:new",
        f"oci-archive:{tmp_path}/out.oci.tar",
        f"docker-archive:{tmp_path}/out.docker.tar:x/y:z",
    ]
    for target in targets:
        if mode == "file":
            proc = ocikit("copy", f"docker-archive:{bad[case]}", target)
        else:
            with open(bad[case], "rb") as f:
                proc = ocikit("copy", "docker-archive:-", target, input=f.read())
        err = proc.stderr.decode()
        assert proc.returncode == 2, (target, err)
        assert err.count("\n") == 1 and err.startswith("ocikit: error: "), err
        assert "Traceback" not in err
        assert EXPECTED[case] in err, err
    assert snapshot(existing_layout) == before
    assert not (tmp_path / "fresh").exists()
    assert sorted(os.listdir(tmp_path)) == ["existing"]  # no archive, no temp file


def test_bad_references_and_usage(tmp_path: Path) -> None:
    for args in (
        ["copy", "nope:x", f"oci:{tmp_path}/l"],
        ["copy", f"docker-archive:{SAMPLE}", "oci:"],
        ["copy", f"docker-archive:{SAMPLE}", "docker-archive:x.tar:NOT/valid:tag:x"],
        ["copy", f"docker-archive:{SAMPLE}", "docker-archive:out.tar@1"],
        ["copy", "--dest-compress-level", "42", f"docker-archive:{SAMPLE}", f"oci:{tmp_path}/l"],
        ["copy", "--dest-compress-format", "lzma", f"docker-archive:{SAMPLE}", f"oci:{tmp_path}/l"],
        ["copy", f"docker-archive:{SAMPLE}"],
        ["copy", f"docker-archive:{tmp_path}/missing.tar", f"oci:{tmp_path}/l"],
        ["copy", f"oci:{tmp_path}", f"oci:{tmp_path}/l"],
        ["inspect", "--raw", "--config", f"docker-archive:{SAMPLE}"],
        ["inspect", f"docker-archive:{SAMPLE}:no/such:image"],
        ["frobnicate"],
    ):
        proc = ocikit(*args)
        err = proc.stderr.decode()
        assert proc.returncode == 2, (args, err)
        assert err.count("\n") == 1 and "Traceback" not in err, (args, err)
    assert not (tmp_path / "l").exists()


def test_not_a_layout_destination(tmp_path: Path) -> None:
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "precious.txt").write_text("mine")
    proc = ocikit("copy", f"docker-archive:{SAMPLE}", f"oci:{tmp_path}/stuff:t")
    assert proc.returncode == 2 and b"not an OCI layout" in proc.stderr
    assert os.listdir(tmp_path / "stuff") == ["precious.txt"]
