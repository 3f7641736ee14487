"""Session fixtures: one private Docker engine, real ``docker save`` archives built by it, their
Docker >= 25 forms, and broken archives made from them.

Tests that need the engine are marked ``docker``. Where dockerd cannot run (not root, not
installed) they are skipped, except in CI (``CI`` set): there a skip is a failure.

Under pytest-xdist (``make test``: ``-n auto``) every fixture is private to its worker: a
session fixture is set up once in each worker that needs it (the engine, on its own socket,
data root and exec root, and the archives it made; the Go oracle, in its own directory);
a registry listens on a free port of its own, per module; ``tmp_path`` is per worker. Two
workers never share a port, a path or a name. ``unit`` marks the in-process tests of
``FAST`` (``make test-fast``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from support import gotar
from support.archives import (
    BASE_TAG,
    OTHER_DOCKERFILE,
    OTHER_FILES,
    OTHER_TAG,
    RICH_DOCKERFILE,
    RICH_FILES,
    RICH_TAG,
    SAMPLE,
    Archive,
    BadInput,
    check_rich_archive,
    describe,
    make_bad_archives,
    read_manifest_json,
)
from support.backends import FILE, TAR, Backends
from support.docker25 import convert
from support.dockerd import DockerEngine, EngineError, can_run
from support.inprocess import ok
from support.registry import Registry
from support.registry import can_run as registry_can_run

EXTRA_BLOB = b'{"note":"a blob nothing points at; engines >= 25 leave some"}'


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


# Test files (or single tests: ``file::name``) that run in this process, without a daemon,
# a registry or a real tool beyond a few command runs: ``make test-fast`` (``-m unit``), the
# inner loop, well under a minute. A test of them that needs a session fixture below is not.
FAST = (
    "test_archive_links.py",
    "test_blob_writer.py",
    "test_build_integrity.py",
    "test_build_store.py",
    "test_check_corpus.py::test_analyzer_alone",
    "test_check_corpus.py::test_check_broken_image",
    "test_check_corpus.py::test_check_reports_rule",
    "test_cli_errors.py",
    "test_copy_options.py",
    "test_credentials.py",
    "test_filecore.py",
    "test_image_names.py",
    "test_inprocess.py",
    "test_model.py",
    "test_native.py",
    "test_mutate.py",
    "test_network_errors.py",
    "test_recipe_errors.py",
    "test_registry_client.py",
    "test_remove_tree.py",
    "test_tarcore.py",
    "test_tarstream.py",
    "test_tarwriter.py",
    "test_transport_types.py",
    "test_validate.py",
    "test_words.py",
)
# fixtures that start a daemon or build a tool: not for the inner loop
NOT_UNIT = {"docker_engine", "oracle", "registry"}


def _is_fast(item: pytest.Item) -> bool:
    name = item.path.name
    test = f"{name}::{getattr(item, 'originalname', item.name)}"
    fixtures = set(getattr(item, "fixturenames", ()))
    return (name in FAST or test in FAST) and not NOT_UNIT & fixtures


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the engine is a ``docker`` test, marked or not; the fast in-process
    ones are ``unit``."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "docker_engine" in fixtures and not item.get_closest_marker("docker"):
            item.add_marker(pytest.mark.docker)
        if _is_fast(item):
            item.add_marker(pytest.mark.unit)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """In CI a test must never skip: a skip is reported as a failure."""
    outcome = yield
    report = outcome.get_result()
    if in_ci() and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (not allowed): {report.longrepr}"


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``$XDG_CACHE_HOME`` is the session's own (the build's default cache, the record of
    verified layers): a test never reads what the user's cache holds, nor leaves anything
    there; the commands the tests run inherit it."""
    path = tmp_path_factory.mktemp("xdg-cache")
    before = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(path)
    yield path
    if before is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = before


# ---------------------------------------------------------------------------- the engine


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[DockerEngine]:
    """One dockerd for the whole session, stopped and removed at the end."""
    why = can_run()
    if why:
        if in_ci():
            pytest.fail(f"the docker engine must run in CI: {why}", pytrace=False)
        pytest.skip(f"no docker engine: {why}")
    engine = DockerEngine()
    try:
        engine.start()
    except EngineError as err:
        if in_ci():
            pytest.fail(f"the docker engine must run in CI: {err}", pytrace=False)
        pytest.skip(f"no docker engine: {err}")
    try:
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="session")
def archives_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("archives")


@pytest.fixture(scope="session")
def busybox_base(docker_engine: DockerEngine) -> str:
    """``ocikit-test/base:1``: busybox-static by ``docker import``. Returns its image ID."""
    return docker_engine.import_busybox_base(BASE_TAG)


# ---------------------------------------------------------------------------- real docker save


@pytest.fixture(scope="session")
def legacy_archive_rich(
    docker_engine: DockerEngine, busybox_base: str, archives_dir: Path
) -> Archive:
    """``docker save ocikit-test/rich:1``: whiteout, opaque directory, hardlinks, long names,
    non-ASCII names, a repeated layer (symlinked layer.tar), ENV/LABEL/CMD/ENTRYPOINT/WORKDIR."""
    image_id = docker_engine.build(RICH_TAG, RICH_DOCKERFILE, RICH_FILES)
    path = docker_engine.save(archives_dir / "rich.tar", RICH_TAG)
    check_rich_archive(path)
    tags, ids = describe(path)
    assert (tags, ids) == ([RICH_TAG], [image_id])
    return Archive(path, tags, ids)


@pytest.fixture(scope="session")
def legacy_archive_two(
    docker_engine: DockerEngine, legacy_archive_rich: Archive, archives_dir: Path
) -> Archive:
    """``docker save rich other -o two.tar``: two images sharing the base layer."""
    other_id = docker_engine.build(OTHER_TAG, OTHER_DOCKERFILE, OTHER_FILES)
    path = docker_engine.save(archives_dir / "two.tar", RICH_TAG, OTHER_TAG)
    tags, ids = describe(path)
    assert sorted(tags) == sorted([RICH_TAG, OTHER_TAG])
    assert dict(zip(tags, ids, strict=True)) == {
        RICH_TAG: legacy_archive_rich.image_id,
        OTHER_TAG: other_id,
    }
    layers = [entry["Layers"] for entry in read_manifest_json(path)]
    assert len({layers[0][0], layers[1][0]}) == 1, "the two images should share the base layer"
    return Archive(path, tags, ids)


@pytest.fixture
def image_in_engine(docker_engine: DockerEngine) -> Callable[[Archive], None]:
    """Load an archive's images back if a test before removed them (tests ``docker rmi``)."""

    def ensure(archive: Archive) -> None:
        if not all(docker_engine.has_image(tag) for tag in archive.tags):
            docker_engine.load(archive.path)

    return ensure


# ---------------------------------------------------------------------------- Docker >= 25


@pytest.fixture(scope="session")
def docker25_archives(
    legacy_archive_rich: Archive, legacy_archive_two: Archive, archives_dir: Path
) -> dict[str, Archive]:
    """The legacy archives rewritten in Docker >= 25's form by ``support.docker25``:
    ``rich`` and ``two`` without LayerSources, ``rich+sources`` and ``two+sources`` with
    LayerSources and an extra JSON blob nothing points at."""
    out = {}
    for name, legacy in (("rich", legacy_archive_rich), ("two", legacy_archive_two)):
        for sources in (False, True):
            key = f"{name}+sources" if sources else name
            written = convert(
                legacy.path,
                archives_dir / f"{key}.docker25.tar",
                layer_sources=sources,
                extra_blobs=[EXTRA_BLOB] if sources else [],
            )
            tags, ids = describe(written.path)
            assert (tags, ids) == (legacy.tags, legacy.image_ids)
            assert written.image_ids == legacy.image_ids
            layers = [name for e in read_manifest_json(written.path) for name in e["Layers"]]
            assert len(written.layer_blobs) < len(layers), "a repeated layer is stored once"
            out[key] = Archive(written.path, tags, ids)
    return out


# ---------------------------------------------------------------------------- tar readers


def _backend(backends: Backends, name: str) -> Iterator[str]:
    """The test runs on the ``name`` path of ``backends`` (in process, and ``OCIKIT_NATIVE``
    set to match for the commands it starts). ``native`` is skipped where the module was
    not built, except in CI (test_native.py requires it wherever it can be built)."""
    why = backends.missing(name)
    if why:
        if in_ci():
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    with pytest.MonkeyPatch.context() as m:
        m.setenv("OCIKIT_NATIVE", "1" if name == "native" else "0")
        with backends.use(name):
            yield name


@pytest.fixture(params=TAR.BACKENDS)
def tar_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The tar header parser of the test's reads: the C module (``native``) or the
    pure-Python path (``python``)."""
    yield from _backend(TAR, request.param)


# ---------------------------------------------------------------------------- builds


@pytest.fixture(params=FILE.BACKENDS)
def file_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The per-file work of the test's builds: the C module (``native``: files read and
    hashed a directory at a time, tar headers) or the pure-Python path (``python``)."""
    yield from _backend(FILE, request.param)


# ---------------------------------------------------------------------------- bad input


@pytest.fixture(scope="session")
def bad_archives(
    legacy_archive_rich: Archive, docker25_archives: dict[str, Archive], archives_dir: Path
) -> dict[str, BadInput]:
    """Broken archives by name (see ``support.archives.make_bad_archives``)."""
    return make_bad_archives(
        legacy_archive_rich.path, docker25_archives["rich+sources"].path, archives_dir / "bad"
    )


# ---------------------------------------------------------------------------- no engine needed


@pytest.fixture(scope="session")
def oracle() -> Iterator[gotar.GoTar]:
    """Go's archive/tar (the reader of docker, containerd and umoci), built once."""
    why = gotar.can_run()
    if why:
        if in_ci():
            pytest.fail(f"the Go oracle must run in CI: {why}", pytrace=False)
        pytest.skip(why)
    go, directory = gotar.start_oracle()
    try:
        yield go
    finally:
        go.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def sample_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An OCI layout holding the shipped sample (``examples/hello.docker.tar``) as ``hello``."""
    layout = tmp_path_factory.mktemp("sample") / "layout"
    ok("copy", "-q", f"docker-archive:{SAMPLE}", f"oci:{layout}:hello")
    return layout


@pytest.fixture
def existing_layout(sample_layout: Path, tmp_path: Path) -> Path:
    """A fresh copy of ``sample_layout`` for a test to (try to) change."""
    layout = tmp_path / "existing"
    shutil.copytree(sample_layout, layout)
    return layout


@pytest.fixture(scope="module")
def registry() -> Iterator[Registry]:
    """A real ``docker-registry`` on 127.0.0.1 (no auth), one per test module."""
    why = registry_can_run()
    if why:
        pytest.skip(why)
    with Registry() as reg:
        yield reg
