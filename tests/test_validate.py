"""``validate_image`` on every transport's output: a fixture image (three layers, gzip, zstd
and none; an index of two platforms and an attestation) copied to ``oci:``,
``oci-archive:``, ``docker-archive:`` (a file and ``-``), ``docker://`` (a real registry),
``docker-daemon:`` (the engine, read back), and what ``build``, ``repair`` and
``export-layers`` write, each reopened and validated. Then hand-corrupted layouts, each
invariant broken alone and reported by its rule.

Everything runs in this process except ``docker-archive:-`` (a real stdout) and the two real
servers (the registry, the engine)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import ocikit
from ocikit.errors import VerificationError
from ocikit.ops.validate import Problem, ValidationError, require_valid, validate_image
from ocikit.transports import open_image
from support.archives import SAMPLE
from support.cli import ok
from support.dockerd import DockerEngine
from support.layouts import (
    blob_path,
    compress,
    directory,
    file,
    host_arch,
    put_blob,
    symlink,
    tar_bytes,
    write_layout,
)
from support.registry import Registry
from support.verify import OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, REF_NAME, read_layout, sha256

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
LAYERS = [
    tar_bytes([directory("etc"), file("etc/a", "one")]),
    tar_bytes([file("etc/b", b"two" * 1000), symlink("etc/c", "b")]),
    tar_bytes([file("srv/x", "three")]),
]


def rules(problems: list[Problem]) -> set[str]:
    return {p.rule for p in problems}


def assert_valid(ref: str, **kw: Any) -> None:
    problems = validate_image(ref, **kw)
    assert problems == [], "\n".join(map(str, problems))


# ---------------------------------------------------------------------------- fixtures


def _mixed_layout(path: Path, ref: str = "t", **kw: Any) -> str:
    """Three layers: gzip, zstd, uncompressed (``write_layout`` compresses all alike)."""
    digest = write_layout(path, LAYERS, ref=ref, **kw)
    manifest = json.loads(blob_path(path, digest).read_bytes())
    for i, kind, media_type in ((1, "zstd", "+zstd"), (2, "none", "")):
        blob = put_blob(path, compress(LAYERS[i], kind))
        manifest["layers"][i] = {
            "mediaType": "application/vnd.oci.image.layer.v1.tar" + media_type,
            **blob,
        }
    return _tag(path, manifest, ref, OCI_MANIFEST)


def _tag(layout: Path, doc: dict[str, Any], ref: str, media_type: str) -> str:
    """Store a manifest or index and name it ``ref`` in index.json."""
    desc = put_blob(layout, json.dumps(doc, separators=(",", ":")).encode())
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"] = [
        d for d in index["manifests"] if d.get("annotations", {}).get(REF_NAME) != ref
    ] + [{"mediaType": media_type, **desc, "annotations": {REF_NAME: ref}}]
    (layout / "index.json").write_text(json.dumps(index))
    return str(desc["digest"])


def _entry(layout: Path, ref: str, platform: dict[str, str] | None) -> dict[str, Any]:
    """An index entry for the image ``ref`` of the layout."""
    data = read_layout(layout, ref).manifest_bytes
    desc: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": sha256(data), "size": len(data)}
    if platform is not None:
        desc["platform"] = platform
    return desc


def _index_layout(path: Path, edit: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
    """``multi``: an index of two platforms (host, and arm64 or amd64) and an attestation."""
    other = "arm64" if host_arch() != "arm64" else "amd64"
    _mixed_layout(path, "a")
    write_layout(path, LAYERS[:1], ref="b", config_extra={"architecture": other})
    statement = put_blob(path, b'{"_type":"https://in-toto.io/Statement/v0.1"}')
    empty = put_blob(path, b"{}")
    attestation = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", **empty},
        "layers": [{"mediaType": "application/vnd.in-toto+json", **statement}],
    }
    att = put_blob(path, json.dumps(attestation).encode())
    entries = [
        _entry(path, "a", {"os": "linux", "architecture": host_arch()}),
        _entry(path, "b", {"os": "linux", "architecture": other}),
        {
            "mediaType": OCI_MANIFEST,
            **att,
            "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
        },
    ]
    if edit is not None:
        edit(entries)
    _tag(
        path, {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}, "multi", OCI_INDEX
    )


@pytest.fixture(scope="module")
def fixture_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``t``: the three-layer image; ``multi``: the index (see ``_index_layout``)."""
    path = tmp_path_factory.mktemp("validate") / "layout"
    _mixed_layout(path, "t")
    _index_layout(path)
    return path


# ---------------------------------------------------------------------------- every transport


def test_the_fixtures_are_valid(fixture_layout: Path) -> None:
    assert_valid(f"oci:{fixture_layout}:t")
    assert_valid(f"oci:{fixture_layout}:multi")
    assert_valid(f"docker-archive:{SAMPLE}")
    with open_image(f"oci:{fixture_layout}:t") as image:  # an Image already open
        assert validate_image(image) == []
        require_valid(image)


@pytest.mark.parametrize("compression", [None, "zstd", "none"])
def test_local_transports(fixture_layout: Path, tmp_path: Path, compression: str | None) -> None:
    """Each local destination, reopened (the layers kept, or all recompressed)."""
    src = f"oci:{fixture_layout}:t"
    outputs = [f"oci:{tmp_path}/layout:t", f"oci-archive:{tmp_path}/o.tar:t"]
    if compression is None:
        outputs.append(f"docker-archive:{tmp_path}/d.tar:t:1")
    for dst in outputs:
        ocikit.copy(src, dst, dest_compress_format=compression)
        assert_valid(dst.rsplit(":", 2 if dst.startswith("docker-archive") else 1)[0])


def test_local_index_copies(fixture_layout: Path, tmp_path: Path) -> None:
    """``--all``: the index and every image it lists, into a layout and an archive."""
    for dst in (f"oci:{tmp_path}/all:m", f"oci-archive:{tmp_path}/all.tar:m"):
        ocikit.copy(f"oci:{fixture_layout}:multi", dst, all_platforms=True)
        assert_valid(dst)
    ocikit.copy(f"oci:{fixture_layout}:multi", f"oci:{tmp_path}/one:x")  # the host's image
    assert_valid(f"oci:{tmp_path}/one:x")


def test_docker_archive_on_stdout(fixture_layout: Path, tmp_path: Path) -> None:
    out = ok("copy", "-q", f"oci:{fixture_layout}:t", "docker-archive:-").stdout
    (tmp_path / "stdout.tar").write_bytes(out)
    assert_valid(f"docker-archive:{tmp_path}/stdout.tar")


def test_registry(fixture_layout: Path, registry: Registry, tmp_path: Path) -> None:
    """Pushed (an image, an index), read back from the registry, and pulled again."""
    image = f"docker://{registry.host}/validate/one:1"
    pushed = ocikit.copy(f"oci:{fixture_layout}:t", image)
    assert_valid(image)
    assert_valid(f"docker://{registry.host}/validate/one@{pushed.manifest_digest}")
    index = f"docker://{registry.host}/validate/multi:1"
    ocikit.copy(f"oci:{fixture_layout}:multi", index, all_platforms=True)
    assert_valid(index)
    ocikit.copy(index, f"oci:{tmp_path}/back:m", all_platforms=True)
    assert_valid(f"oci:{tmp_path}/back:m")
    ocikit.copy(f"docker-archive:{SAMPLE}", image)  # a Docker schema 2 manifest
    assert_valid(image)


@pytest.mark.docker
def test_docker_daemon(
    fixture_layout: Path,
    docker_engine: DockerEngine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DOCKER_HOST", docker_engine.env["DOCKER_HOST"])
    ocikit.copy(f"oci:{fixture_layout}:t", "docker-daemon:ocikit-test/validate:1")
    try:
        assert_valid("docker-daemon:ocikit-test/validate:1")
    finally:
        docker_engine.remove_image("ocikit-test/validate:1")


def test_repair_output(tmp_path: Path) -> None:
    """A layer rewritten by ``repair`` (a duplicate path) describes itself."""
    layers = [tar_bytes([file("a", "1"), file("a", "2"), file("b", "3")]), LAYERS[2]]
    write_layout(tmp_path / "dup", layers)
    ocikit.repair(f"oci:{tmp_path}/dup:t", f"oci:{tmp_path}/fixed:t")
    assert_valid(f"oci:{tmp_path}/fixed:t")
    ocikit.repair(f"oci:{tmp_path}/dup:t", f"docker-archive:{tmp_path}/fixed.tar:f:1")
    assert_valid(f"docker-archive:{tmp_path}/fixed.tar")


def test_build_output(tmp_path: Path) -> None:
    """What ``build`` writes (tar and squashfs layers, and its cache: a layout too)."""
    context = tmp_path / "ctx"
    (context / "site").mkdir(parents=True)
    (context / "site" / "index.html").write_text("hello")
    shutil.copy(SAMPLE, context / "base.tar")
    (context / "ocikit.yaml").write_text(
        "images:\n  app:\n    from: docker-archive:base.tar\n"
        "    imports:\n      - src: site\n        dest: /srv/site\n"
    )
    types = ("tar", "squashfs") if shutil.which("mksquashfs") else ("tar",)
    options = ocikit.BuildOptions(
        output=f"oci:{tmp_path}/out", layer_types=types, cache_dir=str(tmp_path / "cache")
    )
    ocikit.build(str(context / "ocikit.yaml"), options)
    names = [
        d["annotations"][REF_NAME]
        for d in json.loads((tmp_path / "out" / "index.json").read_bytes())["manifests"]
    ]
    assert names
    for name in names:
        assert_valid(f"oci:{tmp_path}/out:{name}")


def test_export_layers_artifacts(tmp_path: Path) -> None:
    """``export-layers``' files assembled as an image (its ``.tar.gz`` blobs, digests.json's
    digests, the config): the blobs are what digests.json says and decompress to the
    config's diff_ids."""
    out = tmp_path / "exported"
    ocikit.export_layers(f"docker-archive:{SAMPLE}", out)
    (entry,) = json.loads((out / "manifest.json").read_bytes())
    digests = {}
    for record in json.loads((out / "digests.json").read_bytes()):
        digests.update(record)
    by_layer = {v["layer_id"]: v["digest"] for v in digests.values()}
    layout = tmp_path / "layout"
    (layout / "blobs" / "sha256").mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": []}))
    layers = []
    for name in entry["Layers"]:
        layer_id = name.split("/")[0]
        data = (out / f"{layer_id}.tar.gz").read_bytes()
        desc = put_blob(layout, data)
        assert desc["digest"] == f"sha256:{by_layer[layer_id]}"
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **desc})
    config = put_blob(layout, (out / entry["Config"]).read_bytes())
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, **config},
        "layers": layers,
    }
    _tag(layout, manifest, "x", OCI_MANIFEST)
    assert_valid(f"oci:{layout}:x")


# ---------------------------------------------------------------------------- broken images


def _manifest_of(layout: Path, ref: str = "t") -> dict[str, Any]:
    return json.loads(read_layout(layout, ref).manifest_bytes)


def _broken(tmp_path: Path, how: str) -> Path:
    """The three-layer image with one invariant broken."""
    layout = tmp_path / how
    _mixed_layout(layout)
    manifest = _manifest_of(layout)
    config = json.loads(blob_path(layout, manifest["config"]["digest"]).read_bytes())
    if how == "diff-id":
        config["rootfs"]["diff_ids"][1] = sha256(b"something else")
    elif how == "layer-count":
        config["rootfs"]["diff_ids"].pop()
    elif how == "layer-size":
        manifest["layers"][0]["size"] += 1
    elif how == "layer-digest":
        path = blob_path(layout, manifest["layers"][2]["digest"])
        path.write_bytes(path.read_bytes().replace(b"three", b"thrEe"))  # uncompressed
    elif how == "layer-missing":
        blob_path(layout, manifest["layers"][1]["digest"]).unlink()
    elif how == "docker-layer-in-oci":
        manifest["layers"][0]["mediaType"] = DOCKER_LAYER_GZIP
    elif how == "docker-config-in-oci":
        manifest["config"]["mediaType"] = DOCKER_CONFIG
    elif how == "oci-types-in-docker":
        manifest["mediaType"] = DOCKER_MANIFEST
        manifest["config"]["mediaType"] = DOCKER_CONFIG
    elif how == "compression":  # says gzip, is zstd
        manifest["layers"][1]["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    elif how == "unknown-layer-type":
        manifest["layers"][2]["mediaType"] = "application/x-tar"
    elif how == "config-digest":
        manifest["config"]["size"] -= 1
    elif how == "rootfs-type":
        config["rootfs"]["type"] = "overlay"
        del config["architecture"]
    elif how == "annotations":
        manifest["annotations"] = {"": "nameless"}
    if how in ("diff-id", "layer-count", "rootfs-type"):
        manifest["config"] = {**manifest["config"], **put_blob(layout, json.dumps(config).encode())}
    _tag(layout, manifest, "t", manifest.get("mediaType", OCI_MANIFEST))
    return layout


@pytest.mark.parametrize(
    ("how", "expected", "where"),
    [
        ("diff-id", {"diff-id"}, "layers[1]"),
        ("layer-count", {"diff-id-count"}, "config"),
        ("layer-size", {"blob-size"}, "layers[0]"),
        ("layer-digest", {"blob-digest", "diff-id"}, "layers[2]"),
        ("layer-missing", {"blob-missing"}, "layers[1]"),
        ("docker-layer-in-oci", {"media-type"}, "layers[0]"),
        ("docker-config-in-oci", {"media-type"}, "config"),
        ("oci-types-in-docker", {"media-type"}, "layers[0]"),
        ("compression", {"media-type"}, "layers[1]"),
        ("unknown-layer-type", {"media-type"}, "layers[2]"),
        ("config-digest", {"config-digest"}, "config"),
        ("rootfs-type", {"config"}, "config"),
        ("annotations", {"annotations"}, "manifest"),
    ],
)
def test_broken_layouts_are_reported(
    tmp_path: Path, how: str, expected: set[str], where: str
) -> None:
    layout = _broken(tmp_path, how)
    problems = validate_image(f"oci:{layout}:t")
    assert rules(problems) == expected, "\n".join(map(str, problems))
    assert where in {p.where for p in problems}
    with pytest.raises(ValidationError) as caught:
        require_valid(f"oci:{layout}:t")
    assert isinstance(caught.value, VerificationError) and caught.value.exit_code == 2
    lines = caught.value.lines()
    assert len(lines) == len(problems) + 1 and "\n" not in str(caught.value)


def test_every_problem_is_reported(tmp_path: Path) -> None:
    """Several invariants broken at once: each is found (not only the first)."""
    layout = tmp_path / "many"
    _mixed_layout(layout)
    manifest = _manifest_of(layout)
    manifest["layers"][0]["mediaType"] = DOCKER_LAYER_GZIP
    manifest["layers"][1]["size"] += 5
    blob_path(layout, manifest["layers"][2]["digest"]).unlink()
    _tag(layout, manifest, "t", OCI_MANIFEST)
    problems = validate_image(f"oci:{layout}:t")
    assert [(p.where, p.rule) for p in problems] == [
        ("layers[0]", "media-type"),
        ("layers[1]", "blob-size"),
        ("layers[2]", "blob-missing"),
    ]


def test_a_manifest_known_by_another_digest(fixture_layout: Path, tmp_path: Path) -> None:
    """A manifest whose bytes are not what the layout's entry says (size or digest)."""
    layout = tmp_path / "layout"
    shutil.copytree(fixture_layout, layout)
    index = json.loads((layout / "index.json").read_bytes())
    index["manifests"][0]["size"] += 1
    (layout / "index.json").write_text(json.dumps(index))
    assert rules(validate_image(f"oci:{layout}@0")) == {"manifest-digest"}


def _index_problems(tmp_path: Path, edit: Callable[[list[dict[str, Any]]], None]) -> set[str]:
    layout = tmp_path / "index"
    _index_layout(layout, edit)
    problems = validate_image(f"oci:{layout}:multi")
    assert all(p.where.startswith("manifests[") for p in problems), problems
    return rules(problems)


def _wrong_arch(entries: list[dict[str, Any]]) -> None:
    entries[0]["platform"]["architecture"] = "s390x"


def _no_platform(entries: list[dict[str, Any]]) -> None:
    del entries[1]["platform"]


def _wrong_size(entries: list[dict[str, Any]]) -> None:
    entries[0]["size"] += 1


def _docker_type(entries: list[dict[str, Any]]) -> None:
    entries[1]["mediaType"] = DOCKER_MANIFEST


def _not_a_manifest(entries: list[dict[str, Any]]) -> None:
    entries.append({**entries[0], "mediaType": "application/octet-stream"})


def _artifact_blob(entries: list[dict[str, Any]]) -> None:
    entries[2]["digest"] = entries[0]["digest"]  # the attestation's entry names image a


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_wrong_arch, {"platform"}),
        (_no_platform, {"platform"}),
        (_wrong_size, {"manifest-digest"}),
        (_docker_type, {"media-type"}),
        (_not_a_manifest, {"media-type"}),
        (_artifact_blob, {"manifest-digest"}),
    ],
)
def test_broken_indexes_are_reported(
    tmp_path: Path, edit: Callable[[list[dict[str, Any]]], None], expected: set[str]
) -> None:
    assert _index_problems(tmp_path, edit) == expected


def test_a_broken_child_of_an_index(tmp_path: Path) -> None:
    """Every image of an index is validated, not only the host's."""
    layout = tmp_path / "index"
    _index_layout(layout)
    manifest = _manifest_of(layout, "b")
    config_path = blob_path(layout, manifest["config"]["digest"])
    config = json.loads(config_path.read_bytes())
    config["rootfs"]["diff_ids"][0] = sha256(b"x")
    config_path.write_text(json.dumps(config))  # also breaks the config's digest
    problems = validate_image(f"oci:{layout}:multi")
    assert {(p.where, p.rule) for p in problems} == {
        ("manifests[1]: config", "config-digest"),
        ("manifests[1]: layers[0]", "diff-id"),
    }


def test_problems_are_data(tmp_path: Path) -> None:
    layout = _broken(tmp_path, "diff-id")
    (found,) = [p.to_dict() for p in validate_image(f"oci:{layout}:t")]
    assert found["rule"] == "diff-id" and found["where"] == "layers[1]"
    assert "diff_id" in found["message"]
