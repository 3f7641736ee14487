"""Docker >= 25's ``docker save`` form (written by ``support.docker25`` from real engine output):
with and without LayerSources, a repeated layer stored once, two images in one archive; read
from a file and from a pipe, to ``oci:`` and back into ``docker load`` with the original ID."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from support.archives import OTHER_TAG, RICH_TAG, Archive, read_manifest_json
from support.cli import assert_one_line_error, ocikit, ocikit_from_pipe, ok
from support.dockerd import DockerEngine
from support.verify import (
    check_layers_match_diff_ids,
    check_oci_layout,
    docker_load_same_id,
    extract_oci_archive,
    oci_image_tool_validate,
    read_docker_archive,
    read_layout,
)

pytestmark = pytest.mark.docker

REF = "t"
CASES = [
    ("rich", ""),
    ("rich+sources", ""),
    ("two", "@0"),
    ("two", "@1"),
    ("two", f":{RICH_TAG}"),
    ("two", f":{OTHER_TAG}"),
    ("two+sources", "@1"),
    ("two+sources", f":{RICH_TAG}"),
    ("two+sources", f":docker.io/{OTHER_TAG}"),  # the same name, spelt in full
]


def picked(archive: Archive, select: str) -> tuple[str, str]:
    if select.startswith("@"):
        i = int(select[1:])
    elif select:
        i = archive.tags.index(select[1:].removeprefix("docker.io/"))
    else:
        i = 0
    return archive.tags[i], archive.image_ids[i]


def layer_names(archive: Path, image: int) -> list[str]:
    """``sha256:<diffid>`` of each layer, from the archive's ``manifest.json``."""
    entry = read_manifest_json(archive)[image]
    return ["sha256:" + name.rsplit("/", 1)[1] for name in entry["Layers"]]


@pytest.mark.parametrize("mode", ["file", "pipe"])
@pytest.mark.parametrize(("key", "select"), CASES, ids=[f"{k}{s or '-only'}" for k, s in CASES])
def test_docker25_to_oci_and_back(
    docker_engine: DockerEngine,
    docker25_archives: dict[str, Archive],
    tmp_path: Path,
    key: str,
    select: str,
    mode: str,
) -> None:
    archive = docker25_archives[key]
    tag, image_id = picked(archive, select)
    layout = tmp_path / "layout"
    dest = f"oci:{layout}:{REF}"
    if mode == "file":
        ok("copy", "-q", f"docker-archive:{archive.path}{select}", dest)
    else:  # cat ARCHIVE | ocikit copy docker-archive:-SELECT DEST
        proc = ocikit_from_pipe(
            ["cat", str(archive.path)], "copy", "-q", f"docker-archive:-{select}", dest
        )
        assert proc.returncode == 0, proc.stderr.decode()
    image = check_oci_layout(layout, REF, tag=tag, image_id=image_id, work=tmp_path)
    diff_ids = check_layers_match_diff_ids(image)
    assert diff_ids == layer_names(archive.path, archive.tags.index(tag))

    back = tmp_path / "back.tar"
    ok("copy", "-q", dest, f"docker-archive:{back}:{tag}")
    [written] = read_docker_archive(back)
    assert written.config_bytes == image.config_bytes
    docker_load_same_id(docker_engine, back, tag, image_id)


@pytest.mark.parametrize("key", ["rich", "two+sources"])
def test_docker25_to_legacy_docker_archive(
    docker_engine: DockerEngine, docker25_archives: dict[str, Archive], tmp_path: Path, key: str
) -> None:
    """Straight to the legacy form (what engines before 25 load), from a pipe."""
    archive = docker25_archives[key]
    out = tmp_path / "legacy.tar"
    with archive.path.open("rb") as f:
        ok("copy", "-q", f"docker-archive:-:{RICH_TAG}", f"docker-archive:{out}", stdin=f)
    with tarfile.open(out) as tar:
        names = tar.getnames()
    assert "manifest.json" in names and not any(n.startswith("blobs/") for n in names), names
    [image] = read_docker_archive(out)
    assert image.repo_tags == [RICH_TAG]
    docker_load_same_id(docker_engine, out, RICH_TAG, archive.id_of(RICH_TAG))


def test_docker25_and_legacy_give_the_same_oci_image(
    legacy_archive_rich: Archive, docker25_archives: dict[str, Archive], tmp_path: Path
) -> None:
    """The same image in either form of ``docker save``: the same OCI manifest."""
    layout = tmp_path / "l"
    ok("copy", "-q", f"docker-archive:{legacy_archive_rich.path}", f"oci:{layout}:legacy")
    for key in ("rich", "rich+sources"):
        ok("copy", "-q", f"docker-archive:{docker25_archives[key].path}", f"oci:{layout}:{key}")
    manifests = {
        read_layout(layout, ref).manifest_bytes for ref in ("legacy", "rich", "rich+sources")
    }
    assert len(manifests) == 1


@pytest.mark.parametrize("mode", ["file", "pipe"])
def test_docker25_several_images_need_a_choice(
    docker25_archives: dict[str, Archive], tmp_path: Path, mode: str
) -> None:
    archive = docker25_archives["two"]
    dest = f"oci:{tmp_path}/l:{REF}"
    if mode == "file":
        proc = ocikit("copy", f"docker-archive:{archive.path}", dest)
    else:
        proc = ocikit("copy", "docker-archive:-", dest, input=archive.path.read_bytes())
    line = assert_one_line_error(proc)
    for i, tag in enumerate(archive.tags):
        assert f"@{i}" in line and tag in line, line
    index = tmp_path / "l" / "index.json"
    assert not index.exists() or json.loads(index.read_bytes())["manifests"] == []


def test_the_writer_itself(
    docker_engine: DockerEngine, docker25_archives: dict[str, Archive], tmp_path: Path
) -> None:
    """What ``support.docker25`` writes is an OCI layout (oci-image-tool) and a docker-archive
    (the 20.10 engine loads it, reading ``manifest.json``), with the original IDs."""
    for key in ("two", "two+sources"):
        archive = docker25_archives[key]
        layout = extract_oci_archive(archive.path, tmp_path / key)
        oci_image_tool_validate(layout)
        for tag in archive.tags:
            oci_image_tool_validate(layout, tag.rsplit(":", 1)[1])
        docker_engine.remove_image(*archive.tags, *archive.image_ids)
        docker_engine.load(archive.path)
        for tag, image_id in zip(archive.tags, archive.image_ids, strict=True):
            assert docker_engine.image_id(tag) == image_id
