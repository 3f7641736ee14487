"""Session fixtures: one private Docker engine, and real `docker save` archives built by it."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from docker25 import convert  # tests/ is on sys.path (pytest's rootdir-relative import)
from engine import DockerEngine, EngineError, can_run

LONG_DIR = "long/" + "d" * 60 + "/" + "e" * 60  # a path well over 100 bytes
NON_ASCII = "café/naïve-文件.txt"

RICH_DOCKERFILE = f"""\
FROM ocikit-test/base:1
RUN mkdir -p /d /keep && echo old > /d/old && echo gone > /gone.txt && echo target > /hl-target
RUN rm /gone.txt && rm -rf /d && mkdir /d && echo new > /d/new
RUN ln /hl-target /hl-link && echo inlayer > /x && ln /x /x-link
COPY long/ /long/
RUN ln -s /{LONG_DIR}/file-with-a-rather-long-name.txt /long-symlink
COPY café/ /café/
COPY same.txt /same.txt
COPY same.txt /same.txt
ENV FOO=bar
LABEL org.example.test=rich
WORKDIR /srv
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /d/new"]
"""
RICH_FILES = {
    f"{LONG_DIR}/file-with-a-rather-long-name.txt": "long\n",
    NON_ASCII: "accents\n",
    "same.txt": "the same layer twice\n",
}


@dataclass(frozen=True)
class Archive:
    path: Path
    tags: list[str]
    image_ids: list[str]

    @property
    def image_id(self) -> str:
        return self.image_ids[0]


@pytest.fixture(scope="session")
def engine() -> Iterator[DockerEngine]:
    why = can_run()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the docker engine must run in CI: {why}")
        pytest.skip(why)
    try:
        e = DockerEngine().start()
    except EngineError as err:
        if os.environ.get("CI"):
            raise
        pytest.skip(str(err))
    try:
        yield e
    finally:
        e.stop()


@pytest.fixture(scope="session")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("archives")


@pytest.fixture(scope="session")
def base(engine: DockerEngine) -> str:
    return engine.import_busybox_base("ocikit-test/base:1")


@pytest.fixture(scope="session")
def rich(engine: DockerEngine, base: str, work: Path) -> Archive:
    """Whiteouts, an opaque directory, hardlinks, long and non-ASCII names, a repeated layer."""
    image_id = engine.build("ocikit-test/rich:1", RICH_DOCKERFILE, RICH_FILES)
    path = engine.save(work / "rich.tar", "ocikit-test/rich:1")
    with tarfile.open(path) as tar:
        linked = [m for m in tar.getmembers() if m.name.endswith("/layer.tar") and m.issym()]
    assert linked, "docker did not save the repeated layer as a symlink"
    return Archive(path, ["ocikit-test/rich:1"], [image_id])


@pytest.fixture(scope="session")
def two(engine: DockerEngine, rich: Archive, work: Path) -> Archive:
    """Two images sharing their base layer, in one archive."""
    other = engine.build(
        "ocikit-test/other:2", "FROM ocikit-test/base:1\nCOPY o.txt /o.txt\n", {"o.txt": "o\n"}
    )
    path = engine.save(work / "two.tar", "ocikit-test/rich:1", "ocikit-test/other:2")
    return Archive(path, ["ocikit-test/rich:1", "ocikit-test/other:2"], [rich.image_id, other])


@pytest.fixture(scope="session")
def docker25(rich: Archive, work: Path) -> Archive:
    """The rich image in Docker >= 25's form, with LayerSources."""
    return Archive(convert(rich.path, work / "rich-25.tar"), rich.tags, rich.image_ids)


@pytest.fixture(scope="session")
def docker25_plain(two: Archive, work: Path) -> Archive:
    """Two images in Docker >= 25's form, without LayerSources."""
    path = convert(two.path, work / "two-25.tar", layer_sources=False)
    return Archive(path, two.tags, two.image_ids)


def ocikit(*args: str, stdin=None, input: bytes | None = None) -> subprocess.CompletedProcess:
    """Run the command line as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "ocikit", *args],
        stdin=stdin,
        input=input,
        capture_output=True,
        timeout=600,
    )
