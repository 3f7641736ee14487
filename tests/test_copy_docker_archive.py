"""Real ``docker build`` + ``docker save`` (legacy form) to ``oci:`` and ``oci-archive:`` and
back, read from a file, from stdin and from a real pipe; judged by skopeo, umoci,
oci-image-tool, by hand, and by ``docker load`` (the original image ID)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from support.archives import (
    OTHER_CMD_OUTPUT,
    OTHER_TAG,
    RICH_CMD_OUTPUT,
    RICH_TAG,
    Archive,
    describe,
    links_first,
)
from support.cli import OCIKIT, assert_one_line_error, ocikit, ocikit_from_pipe, ok
from support.dockerd import DOCKER, DockerEngine
from support.verify import (
    LAYER_GZIP,
    MEDIA_TYPE,
    check_layers_match_diff_ids,
    check_oci_archive,
    check_oci_layout,
    docker_load_same_id,
    oci_image_tool_validate,
    read_docker_archive,
    read_layout,
    sh,
    skopeo_inspect,
    umoci_unpack,
)
from support.verify import check_rootfs as check_unpacked

pytestmark = pytest.mark.docker

REF = "t"


PICKS = [
    ("rich", ""),  # the only image
    ("rich", f":{RICH_TAG}"),
    ("two", f":{RICH_TAG}"),
    ("two", f":{OTHER_TAG}"),
    ("two", "@0"),
    ("two", "@1"),
]


def picked(archive: Path, select: str) -> tuple[str, str]:
    """(tag, image ID) that ``select`` names in the archive (read from the archive itself)."""
    tags, ids = describe(archive)
    if select.startswith("@"):
        i = int(select[1:])
    elif select:
        i = tags.index(select[1:])
    else:
        assert len(ids) == 1
        i = 0
    return tags[i], ids[i]


def copy_picked(
    engine: DockerEngine, mode: str, archive: Archive, select: str, dest: str, work: Path
) -> tuple[str, str]:
    """Copy the picked image to ``dest``, the archive read from a file, from stdin (a file),
    or from a real pipe (``docker save TAGS... | tee streamed.tar | ocikit copy ...``, then
    ``cat streamed.tar | ocikit copy ...``).
    Returns the (tag, image ID) copied."""
    if mode == "file":
        ok("copy", "-q", f"docker-archive:{archive.path}{select}", dest)
        return picked(archive.path, select)
    if mode == "stdin":
        with archive.path.open("rb") as f:
            ok("copy", "-q", f"docker-archive:-{select}", dest, stdin=f)
        return picked(archive.path, select)
    # docker save orders several images as it likes (20.10: not always as asked), so the
    # stream is teed, the later copies read the same bytes again (cat | ocikit), and @N is
    # judged against what was streamed
    streamed = work / "streamed.tar"
    producer = ["cat", str(streamed)] if streamed.exists() else [DOCKER, "save", *archive.tags]
    proc = ocikit_from_pipe(
        producer,
        "copy",
        "-q",
        f"docker-archive:-{select}",
        dest,
        producer_env=engine.env,
        tee=None if streamed.exists() else streamed,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return picked(streamed, select)


@pytest.mark.parametrize("mode", ["file", "stdin", "pipe"])
@pytest.mark.parametrize(("which", "select"), PICKS, ids=[f"{a}{s or '-only'}" for a, s in PICKS])
def test_docker_save_to_oci_and_back(
    docker_engine: DockerEngine,
    legacy_archive_rich: Archive,
    legacy_archive_two: Archive,
    image_in_engine: Callable[[Archive], None],
    tmp_path: Path,
    which: str,
    select: str,
    mode: str,
) -> None:
    archive = legacy_archive_rich if which == "rich" else legacy_archive_two
    if mode == "pipe":
        image_in_engine(archive)
    layout, oci_tar = tmp_path / "layout", tmp_path / "image.oci.tar"

    # to oci: and oci-archive:
    copied = [
        copy_picked(docker_engine, mode, archive, select, dest, tmp_path)
        for dest in (f"oci:{layout}:{REF}", f"oci-archive:{oci_tar}:{REF}")
    ]
    assert copied[0] == copied[1]
    tag, image_id = copied[0]
    assert image_id == archive.id_of(tag)
    image = check_oci_layout(layout, REF, tag=tag, image_id=image_id, work=tmp_path)
    assert image.layer_media_types == {LAYER_GZIP}  # the default from an uncompressed source
    from_archive = check_oci_archive(oci_tar, REF, tag=tag, image_id=image_id, work=tmp_path)
    assert from_archive.manifest_bytes == image.manifest_bytes

    # and back to docker-archive:, which docker loads with the original image ID
    for i, src in enumerate((f"oci:{layout}:{REF}", f"oci-archive:{oci_tar}:{REF}")):
        back = tmp_path / f"back{i}.tar"
        ok("copy", "-q", src, f"docker-archive:{back}:{tag}")
        [written] = read_docker_archive(back)
        assert written.repo_tags == [tag]
        assert written.config_bytes == image.config_bytes
        docker_load_same_id(docker_engine, back, tag, image_id)
    out = docker_engine.docker("run", "--rm", "--network", "none", tag).stdout
    assert out == (RICH_CMD_OUTPUT if tag == RICH_TAG else OTHER_CMD_OUTPUT)


@pytest.mark.parametrize("mode", ["file", "pipe"])
def test_symlinked_layer_before_its_target(
    docker_engine: DockerEngine, legacy_archive_rich: Archive, tmp_path: Path, mode: str
) -> None:
    """The repeated layer's symlink comes first in the stream, its target later."""
    rich = legacy_archive_rich
    archive = links_first(rich.path, tmp_path / "links-first.tar")
    layout = tmp_path / "l"
    if mode == "file":
        ok("copy", "-q", f"docker-archive:{archive}", f"oci:{layout}:{REF}")
    else:
        proc = ocikit_from_pipe(
            ["cat", str(archive)], "copy", "-q", "docker-archive:-", f"oci:{layout}:{REF}"
        )
        assert proc.returncode == 0, proc.stderr.decode()
    check_oci_layout(layout, REF, tag=RICH_TAG, image_id=rich.image_id, work=tmp_path)
    back = tmp_path / "back.tar"
    ok("copy", "-q", f"oci:{layout}:{REF}", f"docker-archive:{back}:{RICH_TAG}")
    docker_load_same_id(docker_engine, back, RICH_TAG, rich.image_id)


@pytest.mark.parametrize("mode", ["file", "pipe"])
def test_several_images_need_a_choice(
    docker_engine: DockerEngine,
    legacy_archive_two: Archive,
    image_in_engine: Callable[[Archive], None],
    tmp_path: Path,
    mode: str,
) -> None:
    """No NAME:TAG and no @N: exit 2, one line listing the choices, nothing written."""
    dest = f"oci:{tmp_path}/l:{REF}"
    if mode == "file":
        proc = ocikit("copy", f"docker-archive:{legacy_archive_two.path}", dest)
    else:
        image_in_engine(legacy_archive_two)
        proc = ocikit_from_pipe(
            [DOCKER, "save", *legacy_archive_two.tags],
            "copy",
            "docker-archive:-",
            dest,
            producer_env=docker_engine.env,
        )
    line = assert_one_line_error(proc)
    for i, tag in enumerate(legacy_archive_two.tags):
        assert f"@{i}" in line and tag in line, line
    assert not (tmp_path / "l" / "index.json").exists()


def test_pick_errors(legacy_archive_two: Archive, tmp_path: Path) -> None:
    for select, word in (("@2", "@2"), (":ocikit-test/nope:1", "ocikit-test/nope:1")):
        proc = ocikit(
            "copy", f"docker-archive:{legacy_archive_two.path}{select}", f"oci:{tmp_path}/l"
        )
        assert_one_line_error(proc, contains=word)
    assert not (tmp_path / "l" / "index.json").exists()


def test_pipe_gives_the_same_image_as_the_file(
    docker_engine: DockerEngine,
    legacy_archive_rich: Archive,
    image_in_engine: Callable[[Archive], None],
    tmp_path: Path,
) -> None:
    image_in_engine(legacy_archive_rich)
    ok("copy", "-q", f"docker-archive:{legacy_archive_rich.path}", f"oci:{tmp_path}/f:{REF}")
    proc = ocikit_from_pipe(
        [DOCKER, "save", RICH_TAG],
        "copy",
        "-q",
        "docker-archive:-",
        f"oci:{tmp_path}/p:{REF}",
        producer_env=docker_engine.env,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    from_file = read_layout(tmp_path / "f", REF)
    from_pipe = read_layout(tmp_path / "p", REF)
    assert from_pipe.manifest_bytes == from_file.manifest_bytes


@pytest.mark.parametrize("dest", ["oci", "oci-archive"])
@pytest.mark.parametrize("fmt", ["zstd", "none", "gzip"])
def test_compression(
    docker_engine: DockerEngine, legacy_archive_rich: Archive, tmp_path: Path, fmt: str, dest: str
) -> None:
    rich = legacy_archive_rich
    if dest == "oci":
        layout = tmp_path / "l"
        target = f"oci:{layout}:{REF}"
    else:
        archive = tmp_path / "a.oci.tar"
        target = f"oci-archive:{archive}:{REF}"
    ok("copy", "-q", "--dest-compress-format", fmt, f"docker-archive:{rich.path}", target)
    info = skopeo_inspect(target)
    assert info["Env"] and "FOO=bar" in info["Env"]
    if dest == "oci-archive":
        layout = tmp_path / "extracted"
        layout.mkdir()
        sh("tar", "-C", layout, "-xf", archive)
    image = read_layout(layout, REF)
    assert image.layer_media_types == {MEDIA_TYPE[fmt]}
    assert image.manifest["config"]["digest"] == rich.image_id
    check_layers_match_diff_ids(image)  # gzip, zstd (the zstd tool) or plain tar
    assert info["Digest"] == image.manifest_digest
    if fmt != "zstd":  # umoci 0.4.7 and oci-image-tool predate +zstd (image-spec 1.1)
        oci_image_tool_validate(layout, REF)
        check_unpacked(RICH_TAG, umoci_unpack(layout, REF, tmp_path / "bundle"))
    back = tmp_path / "back.tar"
    ok("copy", "-q", target, f"docker-archive:{back}:{RICH_TAG}")
    docker_load_same_id(docker_engine, back, RICH_TAG, rich.image_id)


def test_docker_archive_to_docker_archive(
    docker_engine: DockerEngine, legacy_archive_two: Archive, tmp_path: Path
) -> None:
    """The config's bytes survive any route: the same image ID."""
    out = tmp_path / "other.tar"
    ok(
        "copy",
        "-q",
        f"docker-archive:{legacy_archive_two.path}:{OTHER_TAG}",
        f"docker-archive:{out}",
    )
    [image] = read_docker_archive(out)
    assert image.repo_tags == [OTHER_TAG]  # the source's name when none is given
    docker_load_same_id(docker_engine, out, OTHER_TAG, legacy_archive_two.id_of(OTHER_TAG))


def test_docker_archive_to_stdout_into_docker_load(
    docker_engine: DockerEngine, legacy_archive_rich: Archive, tmp_path: Path
) -> None:
    """``ocikit copy oci:... docker-archive:-:TAG | docker load``"""
    ok("copy", "-q", f"docker-archive:{legacy_archive_rich.path}", f"oci:{tmp_path}/l:{REF}")
    docker_engine.remove_image(RICH_TAG, legacy_archive_rich.image_id)
    copy = subprocess.Popen(
        [*OCIKIT, "copy", "-q", f"oci:{tmp_path}/l:{REF}", f"docker-archive:-:{RICH_TAG}"],
        stdout=subprocess.PIPE,
    )
    load = subprocess.run(
        [DOCKER, "load"], stdin=copy.stdout, env=docker_engine.env, capture_output=True
    )
    assert copy.stdout is not None
    copy.stdout.close()
    assert copy.wait() == 0 and load.returncode == 0, load.stderr
    assert docker_engine.image_id(RICH_TAG) == legacy_archive_rich.image_id


def test_additional_tags(
    docker_engine: DockerEngine, legacy_archive_rich: Archive, tmp_path: Path
) -> None:
    out = tmp_path / "tags.tar"
    ok(
        "copy",
        "-q",
        "--additional-tag",
        "extra/one:1",
        "--additional-tag",
        "extra/two",
        f"docker-archive:{legacy_archive_rich.path}",
        f"docker-archive:{out}:main/img:9",
    )
    [image] = read_docker_archive(out)
    assert sorted(image.repo_tags) == ["extra/one:1", "extra/two:latest", "main/img:9"]
    docker_engine.remove_image("main/img:9", "extra/one:1", "extra/two:latest")
    docker_engine.load(out)
    for tag in ("main/img:9", "extra/one:1", "extra/two:latest"):
        assert docker_engine.image_id(tag) == legacy_archive_rich.image_id
    layout = tmp_path / "l"
    ok(
        "copy",
        "-q",
        "--additional-tag",
        "second",
        f"docker-archive:{legacy_archive_rich.path}",
        f"oci:{layout}:first",
    )
    assert (
        read_layout(layout, "first").manifest_bytes == read_layout(layout, "second").manifest_bytes
    )


def test_json_result(legacy_archive_rich: Archive, tmp_path: Path) -> None:
    proc = ok(
        "copy",
        "-q",
        "--json",
        f"docker-archive:{legacy_archive_rich.path}",
        f"oci:{tmp_path}/l:{REF}",
    )
    result = json.loads(proc.stdout)
    image = read_layout(tmp_path / "l", REF)
    assert result["digest"] == image.manifest_digest
    assert result["config_digest"] == legacy_archive_rich.image_id
