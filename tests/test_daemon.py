"""``docker-daemon:`` against the real engine: its ``save`` stream read in one pass, a
``load`` streamed to it, both judged by the image ID the engine reports; engine errors and an
unreachable engine give one line and exit 2."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from support.archives import RICH_CMD_OUTPUT, RICH_TAG, Archive
from support.cli import assert_one_line_error, ocikit, ok
from support.dockerd import DockerEngine
from support.verify import check_layers_match_diff_ids, read_layout

pytestmark = pytest.mark.docker


def test_round_trip(
    docker_engine: DockerEngine,
    legacy_archive_rich: Archive,
    image_in_engine: Callable[[Archive], None],
    tmp_path: Path,
) -> None:
    image_in_engine(legacy_archive_rich)
    env = {"DOCKER_HOST": docker_engine.env["DOCKER_HOST"]}
    layout = tmp_path / "layout"
    ok("copy", "-q", f"docker-daemon:{RICH_TAG}", f"oci:{layout}:t", env=env)
    image = read_layout(layout, "t")
    assert image.manifest["config"]["digest"] == legacy_archive_rich.image_id
    check_layers_match_diff_ids(image)
    # by image ID too, to a docker-archive
    by_id = tmp_path / "by-id.tar"
    ok(
        "copy",
        "-q",
        f"docker-daemon:{legacy_archive_rich.image_id}",
        f"docker-archive:{by_id}:x:1",
        env=env,
    )
    # and back into the engine under another name: the same image ID, and it runs
    ok("copy", "-q", f"oci:{layout}:t", "docker-daemon:ocikit-test/daemon-rt:1", env=env)
    assert docker_engine.image_id("ocikit-test/daemon-rt:1") == legacy_archive_rich.image_id
    run = docker_engine.docker("run", "--rm", "--network", "none", "ocikit-test/daemon-rt:1")
    assert run.stdout == RICH_CMD_OUTPUT
    docker_engine.docker("rmi", "ocikit-test/daemon-rt:1")


def test_inspect(
    docker_engine: DockerEngine,
    legacy_archive_rich: Archive,
    image_in_engine: Callable[[Archive], None],
) -> None:
    image_in_engine(legacy_archive_rich)
    proc = ok(
        "inspect",
        f"docker-daemon:{RICH_TAG}",
        env={"DOCKER_HOST": docker_engine.env["DOCKER_HOST"]},
    )
    assert json.loads(proc.stdout)["config_digest"] == legacy_archive_rich.image_id


def test_errors(docker_engine: DockerEngine, sample_layout: Path, tmp_path: Path) -> None:
    env = {"DOCKER_HOST": docker_engine.env["DOCKER_HOST"]}
    proc = ocikit("copy", "docker-daemon:ocikit-test/absent:1", f"oci:{tmp_path}/o:t", env=env)
    assert_one_line_error(proc, contains="absent")
    assert not (tmp_path / "o").exists()
    proc = ocikit(
        "copy",
        "docker-daemon:x:1",
        f"oci:{tmp_path}/o:t",
        env={"DOCKER_HOST": "unix:///nonexistent.sock"},
    )
    assert_one_line_error(proc, contains="docker engine")
    proc = ocikit("copy", f"oci:{sample_layout}:hello", "docker-daemon:sha256:" + "a" * 64, env=env)
    assert_one_line_error(proc, contains="NAME:TAG")
    proc = ocikit("copy", f"oci:{sample_layout}:hello", "docker-daemon:Bad Name", env=env)
    assert_one_line_error(proc, contains="NAME")
    proc = ocikit(
        "copy",
        f"oci:{sample_layout}:hello",
        "docker-daemon:ocikit-test/x:1",
        env={"DOCKER_HOST": "ftp://x"},
    )
    assert_one_line_error(proc, contains="DOCKER_HOST")
