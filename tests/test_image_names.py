"""Which image of a layout or an archive a reference selects: names that several entries share
(containerd's ``ctr image export`` and Docker >= 25's ``docker save`` name each entry by its bare
tag, ``org.opencontainers.image.ref.name: "1"``, and the full name in
``io.containerd.image.name``), untagged images, ``@N`` and ``@DIGEST``; and a source given to the
wrong transport, which is told the right one. In-process on hand-written layouts; a few runs of
the command line for the one-line errors."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

import ocikit as lib
from ocikit.errors import AmbiguousImageError, InputError, NotFoundError, OcikitError, UsageError
from ocikit.transports import Reference, parse_reference
from support.archives import SAMPLE
from support.cli import assert_one_line_error, ocikit, ok
from support.layouts import file, tar_bytes, write_layout

CONTAINERD_NAME = "io.containerd.image.name"
REF_NAME = "org.opencontainers.image.ref.name"


def _layout(path: Path, count: int) -> list[dict[str, Any]]:
    """A layout of ``count`` different images; returns index.json's entries (to rewrite)."""
    for i in range(count):
        write_layout(path, [tar_bytes([file(f"f{i}", f"image {i}")])], ref=f"tmp{i}")
    return json.loads((path / "index.json").read_bytes())["manifests"]


def _set_index(path: Path, entries: list[dict[str, Any]]) -> None:
    index = json.loads((path / "index.json").read_bytes())
    index["manifests"] = entries
    (path / "index.json").write_text(json.dumps(index))


def _annotated(entry: dict[str, Any], **annotations: str) -> dict[str, Any]:
    entry = {k: v for k, v in entry.items() if k != "annotations"}
    return {**entry, "annotations": annotations} if annotations else entry


def _tar_layout(layout: Path, out: Path) -> Path:
    with tarfile.open(out, "w") as tar:
        for name in sorted(os.listdir(layout)):
            tar.add(layout / name, name)
    return out


def _ctr_export(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """Two different images as ``ctr image export`` (containerd 1.6) writes ``a:1`` and
    ``example.com/b:1``: both entries named ``1``. The layout, its archive, the digests."""
    layout = tmp_path / "ctr"
    a, b = _layout(layout, 2)
    _set_index(
        layout,
        [
            _annotated(a, **{CONTAINERD_NAME: "docker.io/library/a:1", REF_NAME: "1"}),
            _annotated(b, **{CONTAINERD_NAME: "example.com/b:1", REF_NAME: "1"}),
        ],
    )
    return layout, _tar_layout(layout, tmp_path / "ctr.tar"), [a["digest"], b["digest"]]


def _digest(ref: str) -> str:
    return lib.inspect(ref)["digest"]


# ------------------------------------------------------------------ 1. a name two entries share


@pytest.mark.parametrize("transport", ["oci", "oci-archive"])
def test_a_shared_name_is_ambiguous(tmp_path: Path, transport: str) -> None:
    layout, archive, digests = _ctr_export(tmp_path)
    path = layout if transport == "oci" else archive
    with pytest.raises(AmbiguousImageError) as err:
        lib.inspect(f"{transport}:{path}:1")
    line = str(err.value)
    assert "\n" not in line and "'1'" in line
    for i, (digest, name) in enumerate(zip(digests, ["a:1", "example.com/b:1"], strict=True)):
        assert f"@{i}" in line and digest in line and name in line, line


@pytest.mark.parametrize("transport", ["oci", "oci-archive"])
def test_select_by_position_and_digest(tmp_path: Path, transport: str) -> None:
    layout, archive, digests = _ctr_export(tmp_path)
    path = layout if transport == "oci" else archive
    for i, digest in enumerate(digests):
        for ref in (f"{path}@{i}", f"{path}:@{i}", f"{path}@{digest}", f"{path}:@{digest}"):
            assert _digest(f"{transport}:{ref}") == digest, ref
    with pytest.raises(NotFoundError, match="@2"):
        lib.inspect(f"{transport}:{path}@2")
    missing = "sha256:" + "0" * 64
    with pytest.raises(NotFoundError, match=missing):
        lib.inspect(f"{transport}:{path}@{missing}")


@pytest.mark.parametrize("transport", ["oci", "oci-archive"])
def test_containerd_names_select(tmp_path: Path, transport: str) -> None:
    layout, archive, (a, b) = _ctr_export(tmp_path)
    path = layout if transport == "oci" else archive
    for name, digest in (
        ("docker.io/library/a:1", a),
        ("a:1", a),  # the familiar form docker prints
        ("library/a:1", a),
        ("example.com/b:1", b),
    ):
        assert _digest(f"{transport}:{path}:{name}") == digest, name
    for name in ("b:1", "a", "a:2"):
        with pytest.raises(NotFoundError, match=re.escape("example.com/b:1")):
            lib.inspect(f"{transport}:{path}:{name}")


def test_one_image_under_a_shared_name_is_not_ambiguous(tmp_path: Path) -> None:
    """``ctr image export`` of two tags of one image: the same manifest twice, both ``1``."""
    layout = tmp_path / "l"
    (a,) = _layout(layout, 1)
    _set_index(
        layout,
        [
            _annotated(a, **{CONTAINERD_NAME: "docker.io/library/a:1", REF_NAME: "1"}),
            _annotated(a, **{CONTAINERD_NAME: "docker.io/library/b:1", REF_NAME: "1"}),
        ],
    )
    assert _digest(f"oci:{layout}:1") == a["digest"]
    with pytest.raises(AmbiguousImageError):  # no name: two entries, as skopeo says too
        lib.inspect(f"oci:{layout}")


def test_a_digest_inside_an_index_selects(tmp_path: Path) -> None:
    """A platform's manifest, named only by the multi-platform index that holds it."""
    layout = tmp_path / "l"
    a, b = _layout(layout, 2)
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {**_annotated(a), "platform": {"os": "linux", "architecture": "amd64"}},
            {**_annotated(b), "platform": {"os": "linux", "architecture": "arm64"}},
        ],
    }
    raw = json.dumps(index).encode()
    hex_ = hashlib.sha256(raw).hexdigest()
    (layout / "blobs" / "sha256" / hex_).write_bytes(raw)
    _set_index(
        layout,
        [
            {
                "mediaType": index["mediaType"],
                "digest": f"sha256:{hex_}",
                "size": len(raw),
                "annotations": {REF_NAME: "multi"},
            }
        ],
    )
    assert _digest(f"oci:{layout}@{b['digest']}") == b["digest"]
    assert _digest(f"oci:{layout}@0") in (a["digest"], b["digest"])


def test_a_name_may_hold_an_at_sign(tmp_path: Path) -> None:
    """``foo@1`` is a valid ref name (OCI's grammar allows ``@``): after a ``:`` it is a name."""
    layout = tmp_path / "l"
    a, b = _layout(layout, 2)
    _set_index(layout, [_annotated(a, **{REF_NAME: "foo@1"}), _annotated(b, **{REF_NAME: "x"})])
    assert _digest(f"oci:{layout}:foo@1") == a["digest"]
    assert parse_reference(f"oci:{layout}:foo@1").name == "foo@1"


def test_references_round_trip() -> None:
    digest = "sha256:" + "a" * 64
    for text in (
        "oci:/l@1",
        f"oci:/l@{digest}",
        f"oci-archive:/a.tar@{digest}",
        "oci-archive:-@0",
        "oci:/l:name",
    ):
        ref = parse_reference(text)
        assert parse_reference(str(ref)) == ref, text
    assert parse_reference("oci:/l:@1") == parse_reference("oci:/l@1")
    assert parse_reference(f"oci:/l:@{digest}").digest == digest
    assert parse_reference("oci:./my@dir:t") == Reference("oci", "./my@dir", "t")  # a path
    for bad in ("oci:/l@sha256:abc", "oci:/l:@x", "oci:/l:@-1", "oci:/l@sha512:00"):
        with pytest.raises(UsageError):
            lib.inspect(bad)


@pytest.mark.parametrize("transport", ["oci", "oci-archive"])
def test_selectors_are_not_destinations(tmp_path: Path, transport: str) -> None:
    digest = "sha256:" + "a" * 64
    for select in ("@0", f"@{digest}"):
        dest = f"{transport}:{tmp_path}/out{select}"
        with pytest.raises(UsageError, match="select"):
            lib.copy(f"docker-archive:{SAMPLE}", dest)
    assert os.listdir(tmp_path) == []


def test_docker_archive_shared_tag_is_ambiguous(tmp_path: Path) -> None:
    """Two different images under one tag in ``manifest.json`` (hand-made): not the first."""
    out = tmp_path / "two.tar"
    with tarfile.open(SAMPLE) as src, tarfile.open(out, "w") as dst:
        entries = json.load(src.extractfile("manifest.json"))  # type: ignore[arg-type]
        config = json.load(src.extractfile(entries[0]["Config"]))  # type: ignore[arg-type]
        config["config"]["Labels"] = {"other": "yes"}
        raw = json.dumps(config).encode()
        name = hashlib.sha256(raw).hexdigest() + ".json"
        for member in src.getmembers():
            if member.name not in ("manifest.json", "repositories"):
                dst.addfile(member, src.extractfile(member) if member.isreg() else None)
        info = tarfile.TarInfo(name)
        info.size = len(raw)
        dst.addfile(info, io.BytesIO(raw))
        tags = ["x:1"]
        two = [{**entries[0], "RepoTags": tags}, {**entries[0], "Config": name, "RepoTags": tags}]
        data = json.dumps(two).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        dst.addfile(info, io.BytesIO(data))
    with pytest.raises(AmbiguousImageError, match=r"@0.*@1"):
        lib.inspect(f"docker-archive:{out}:x:1")
    assert lib.inspect(f"docker-archive:{out}@1")["labels"] == {"other": "yes"}


# ------------------------------------------------------------------ 2. untagged images


def test_untagged_image_beside_another(tmp_path: Path) -> None:
    layout = tmp_path / "l"
    a, b = _layout(layout, 2)
    _set_index(layout, [_annotated(a, **{REF_NAME: "t"}), _annotated(b)])
    with pytest.raises(AmbiguousImageError) as err:
        lib.inspect(f"oci:{layout}")
    line = str(err.value)
    assert "\n" not in line
    assert "@0" in line and "t" in line and a["digest"] in line, line
    assert "@1" in line and b["digest"] in line, line
    assert "PATH@N" in line or "@N" in line, line
    assert _digest(f"oci:{layout}@1") == b["digest"]
    assert _digest(f"oci:{layout}@{b['digest']}") == b["digest"]
    assert _digest(f"oci:{layout}:t") == a["digest"]


def test_many_images_are_summarized(tmp_path: Path) -> None:
    layout = tmp_path / "l"
    entries = _layout(layout, 12)
    _set_index(layout, [_annotated(e) for e in entries])
    with pytest.raises(AmbiguousImageError) as err:
        lib.inspect(f"oci:{layout}")
    line = str(err.value)
    assert "\n" not in line and "12 images" in line and "7 more" in line, line
    assert len(line) < 1500


def test_hostile_names_are_quoted(tmp_path: Path) -> None:
    layout = tmp_path / "l"
    a, b = _layout(layout, 2)
    _set_index(
        layout,
        [_annotated(a, **{REF_NAME: "evil\n\x1b[2Jname"}), _annotated(b, **{REF_NAME: "ok"})],
    )
    with pytest.raises(AmbiguousImageError) as err:
        lib.inspect(f"oci:{layout}")
    assert "\n" not in str(err.value) and "\x1b" not in str(err.value)
    assert "'evil\\n\\x1b[2Jname'" in str(err.value)


# ------------------------------------------------------------------ 3. the wrong transport


def _oci_archive(tmp_path: Path) -> Path:
    layout = tmp_path / "layout"
    _layout(layout, 1)
    return _tar_layout(layout, tmp_path / "image.oci.tar")


def test_oci_archive_given_a_docker_save() -> None:
    with pytest.raises(InputError, match=f"docker-archive:{SAMPLE}"):
        lib.inspect(f"oci-archive:{SAMPLE}")


def test_docker_archive_given_an_oci_archive(tmp_path: Path) -> None:
    archive = _oci_archive(tmp_path)
    with pytest.raises(InputError, match=f"oci-archive:{archive}"):
        lib.inspect(f"docker-archive:{archive}")


def test_oci_given_a_file(tmp_path: Path) -> None:
    archive = _oci_archive(tmp_path)
    with pytest.raises(InputError, match=f"oci-archive:{archive}"):
        lib.inspect(f"oci:{archive}")
    with pytest.raises(InputError, match=f"docker-archive:{SAMPLE}"):
        lib.inspect(f"oci:{SAMPLE}")
    junk = tmp_path / "junk"
    junk.write_text("not a tar")
    with pytest.raises(InputError, match="not an OCI layout directory"):
        lib.inspect(f"oci:{junk}")


@pytest.mark.parametrize("transport", ["oci-archive", "docker-archive"])
def test_archive_given_a_layout_directory(tmp_path: Path, transport: str) -> None:
    layout = tmp_path / "layout"
    _layout(layout, 1)
    with pytest.raises(InputError, match=f"oci:{layout}"):
        lib.inspect(f"{transport}:{layout}")


def test_oci_given_an_extracted_docker_save(tmp_path: Path) -> None:
    with tarfile.open(SAMPLE) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    with pytest.raises(InputError, match="docker-archive"):
        lib.inspect(f"oci:{tmp_path / 'x'}")


def test_wrong_transport_on_the_command_line(tmp_path: Path) -> None:
    archive = _oci_archive(tmp_path)
    line = assert_one_line_error(ocikit("inspect", f"docker-archive:{archive}"))
    assert f"oci-archive:{archive}" in line
    line = assert_one_line_error(
        ocikit("copy", "oci-archive:-", f"oci:{tmp_path}/out", input=SAMPLE.read_bytes())
    )
    assert "docker-archive:-" in line, line
    assert not (tmp_path / "out").exists()


def test_docker25_save_is_both(tmp_path: Path) -> None:
    """Docker >= 25's ``docker save`` is an OCI layout too: both transports read it, and its
    entries' containerd names select (its ref names are bare tags)."""
    from support.docker25 import extract_legacy, write_docker25

    specs = extract_legacy(SAMPLE, tmp_path / "x")
    out = tmp_path / "d25.tar"
    write_docker25(out, specs)
    via_docker = lib.inspect(f"docker-archive:{out}")
    via_oci = lib.inspect(f"oci-archive:{out}")
    assert via_docker["diff_ids"] == via_oci["diff_ids"]
    assert _digest(f"oci-archive:{out}:hello:latest") == via_oci["digest"]
    assert _digest(f"oci-archive:{out}:latest") == via_oci["digest"]


def test_errors_are_ocikit_errors_with_one_line(tmp_path: Path) -> None:
    layout, archive, _ = _ctr_export(tmp_path)
    for ref in (f"oci:{layout}:1", f"oci:{layout}", f"oci:{layout}@9", f"oci-archive:{layout}"):
        with pytest.raises(OcikitError) as err:
            lib.inspect(ref)
        assert "\n" not in str(err.value) and err.value.exit_code == 2
    ok("inspect", f"oci-archive:{archive}@1")
