"""A usrmerged base (``bin -> usr/bin``) made with real tools, and the layer that mapping a
virtualenv's ``bin/`` onto ``usr/bin/`` produces: ``docker load`` is the judge of the broken
image, ``check`` must say why, and ``copy --repair`` must give an image docker loads and runs
with ``/bin`` still pointing into ``usr/bin``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.cli import ocikit, ok
from support.dockerd import BUSYBOX, DockerEngine, EngineError
from support.layouts import (
    Entry,
    append_layers,
    clean,
    directory,
    file,
    image_layers,
    layer_tars,
    read_entries,
    symlink,
    tar_bytes,
)
from support.verify import check_layers_match_diff_ids, read_docker_archive, read_layout

pytestmark = pytest.mark.docker

BASE_TAG = "ocikit-test/usrmerge:1"
APPLETS = ("sh", "ls", "cat", "test")
PIP = "#!/bin/sh\necho pip\n"
RUN_CHECK = "test -e /usr/bin/pip && test -x /bin/busybox && ls /bin/sh"


def venv_entries() -> list[Entry]:
    """What copying a venv's ``bin/`` to ``usr/bin/`` in two passes leaves in a layer."""
    return [
        directory("usr/"),
        directory("usr/bin/"),
        directory("usr/bin/"),
        symlink("usr/bin/python3", "busybox"),
        symlink("usr/bin/python3", "busybox"),
    ]


@dataclass(frozen=True)
class Variant:
    id: str
    entries: list[Entry]
    rules: set[str]  # error rules check must report on the appended layer
    duplicates: bool  # docker load refuses it


VARIANTS = [
    Variant(
        "duplicates",
        [*venv_entries(), file("usr/bin/pip", PIP, 0o755)],
        {"duplicate-path"},
        True,
    ),
    Variant(
        "duplicates-and-bin-dir",
        [*venv_entries(), directory("bin/"), file("bin/pip", PIP, 0o755)],
        {"duplicate-path", "replaces-symlinked-dir"},
        True,
    ),
    Variant(  # bin/pip resolves to usr/bin/pip, which the layer also has: one must remain
        "duplicates-and-bin-dir-colliding",
        [
            *venv_entries(),
            file("usr/bin/pip", "#!/bin/sh\necho old\n", 0o755),
            directory("bin/"),
            file("bin/pip", PIP, 0o755),
        ],
        {"duplicate-path", "replaces-symlinked-dir"},
        True,
    ),
    Variant(  # docker loads it, and the container has no /bin/sh any more
        "bin-dir-only",
        [directory("usr/"), directory("usr/bin/"), directory("bin/"), file("bin/pip", PIP, 0o755)],
        {"replaces-symlinked-dir"},
        False,
    ),
]


def make_rootfs(root: Path) -> None:
    for d in ("usr/bin", "usr/sbin", "usr/lib", "etc", "tmp", "root"):
        (root / d).mkdir(parents=True)
    shutil.copy2(BUSYBOX, root / "usr/bin/busybox")
    for applet in APPLETS:
        os.symlink("busybox", root / "usr/bin" / applet)
    for link in ("bin", "sbin", "lib"):
        os.symlink(f"usr/{link}", root / link)


@pytest.fixture(scope="module")
def usrmerge_base(
    docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str]:
    """(layout, ref) of the base: a real rootfs, ``tar``, ``docker import``, ``docker save``,
    ``ocikit copy docker-archive: oci:``."""
    work = tmp_path_factory.mktemp("usrmerge")
    make_rootfs(work / "rootfs")
    tar = subprocess.run(
        ["tar", "-C", str(work / "rootfs"), "--numeric-owner", "-cf", "-", "."],
        capture_output=True,
        check=True,
    ).stdout
    docker_engine.docker("import", "--change", 'CMD ["/bin/sh"]', "-", BASE_TAG, input=tar)
    out = docker_engine.docker("run", "--rm", "--network", "none", BASE_TAG, "ls", "/bin/sh")
    assert out.stdout.strip() == b"/bin/sh"
    saved = docker_engine.save(work / "base.tar", BASE_TAG)
    layout = work / "layout"
    ok("copy", "-q", f"docker-archive:{saved}", f"oci:{layout}:base")
    [layer] = layer_tars(layout, "base")
    names = {clean(m.name): m for m in read_entries(layer)}
    assert names["bin"].issym() and names["bin"].linkname == "usr/bin", names.get("bin")
    assert names["usr/bin/busybox"].isreg()
    return layout, "base"


def check_json(ref: str, *args: str) -> tuple[int, dict]:
    proc = ocikit("check", "--json", *args, ref)
    assert proc.returncode in (0, 1), proc.stderr.decode()
    return proc.returncode, json.loads(proc.stdout)


def load(engine: DockerEngine, archive: Path) -> subprocess.CompletedProcess[bytes]:
    return engine.docker("load", "-i", str(archive), check=False)


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.id for v in VARIANTS])
def test_usrmerge_venv_layer(
    docker_engine: DockerEngine,
    usrmerge_base: tuple[Path, str],
    tmp_path: Path,
    variant: Variant,
) -> None:
    base_layout, base_ref = usrmerge_base
    layout = tmp_path / "layout"
    append_layers(base_layout, layout, [tar_bytes(variant.entries)], src_ref=base_ref, ref="v")
    src = f"oci:{layout}:v"
    n_base = len(image_layers(base_layout, base_ref))
    tag, fixed_tag = f"ocikit-test/usrmerge-{variant.id}:1", f"ocikit-test/repaired-{variant.id}:1"
    docker_engine.remove_image(tag, fixed_tag)

    # docker load is the judge of the image as it is
    broken = tmp_path / "broken.tar"
    ok("copy", "-q", src, f"docker-archive:{broken}:{tag}")
    loaded = load(docker_engine, broken)
    if variant.duplicates:
        assert loaded.returncode != 0, "docker load accepted duplicate paths"
        assert b"duplicates of file paths not supported" in loaded.stderr, loaded.stderr
    else:
        assert loaded.returncode == 0, loaded.stderr.decode()
        ran = docker_engine.docker(
            "run", "--rm", "--network", "none", tag, "/bin/sh", "-c", "true", check=False
        )
        assert ran.returncode != 0, "/bin/sh survived a directory over bin -> usr/bin?"
        docker_engine.remove_image(tag)

    # check says why
    code, report = check_json(src)
    assert code == 1
    rules = {f["rule"] for f in report["findings"] if f["severity"] == "error"}
    assert rules == variant.rules, report["findings"]
    assert {f["layer"] for f in report["findings"]} == {n_base}, "only the appended layer"
    if variant.duplicates:
        dup = next(f for f in report["findings"] if f["rule"] == "duplicate-path")
        assert {clean(p) for p in dup["paths"]} <= {
            "usr",
            "usr/bin",
            "usr/bin/python3",
            "usr/bin/pip",
        }, dup

    # copy --repair to a docker-archive: docker loads it and /bin still is usr/bin
    fixed = tmp_path / "repaired.tar"
    ok("copy", "-q", "--repair", src, f"docker-archive:{fixed}:{fixed_tag}")
    [written] = read_docker_archive(fixed)
    code, fixed_report = check_json(f"docker-archive:{fixed}", "--strict")
    assert code == 0, fixed_report["findings"]
    loaded = load(docker_engine, fixed)
    assert loaded.returncode == 0, loaded.stderr.decode()
    script, expected = f"{RUN_CHECK} && test -L /bin && /usr/bin/pip", ["/bin/sh", "pip"]
    if any(e.name == "usr/bin/python3" for e in variant.entries):
        script, expected = f"{script} && readlink /usr/bin/python3", [*expected, "busybox"]
    run = ["run", "--rm", "--network", "none", fixed_tag, "/bin/sh", "-c", script]
    out = docker_engine.docker(*run).stdout
    assert out.decode().split() == expected, out

    # the same repair to an OCI layout: the base layers are untouched, byte for byte
    rep = tmp_path / "repaired"
    ok("copy", "-q", "--repair", src, f"oci:{rep}:v")
    before, after = image_layers(layout, "v"), image_layers(rep, "v")
    assert after[:n_base] == before[:n_base], "a base layer was rewritten"
    assert after[n_base]["digest"] != before[n_base]["digest"]
    check_layers_match_diff_ids(read_layout(rep, "v"))
    code, oci_report = check_json(f"oci:{rep}:v", "--strict")
    assert code == 0, oci_report["findings"]
    # the docker-archive got the same layers, uncompressed
    diff_ids = read_layout(rep, "v").config["rootfs"]["diff_ids"]
    assert json.loads(written.config_bytes)["rootfs"]["diff_ids"] == diff_ids

    # what the repaired layer holds: each path once, nothing under bin/
    [layer] = layer_tars(rep, "v")[n_base:]
    names = [clean(m.name) for m in read_entries(layer)]
    assert len(names) == len(set(names)), names
    assert not [n for n in names if n == "bin" or n.startswith("bin/")], names
    assert "usr/bin/pip" in names
    docker_engine.remove_image(fixed_tag)


def test_engine_has_the_base(docker_engine: DockerEngine, usrmerge_base: tuple[Path, str]) -> None:
    """The base runs as it is: the applets resolve through bin -> usr/bin."""
    try:
        out = docker_engine.docker(
            "run",
            "--rm",
            "--network",
            "none",
            BASE_TAG,
            "/bin/sh",
            "-c",
            "test -L /bin && ls /bin/",
        ).stdout.decode()
    except EngineError as err:  # pragma: no cover - a message worth reading
        pytest.fail(str(err))
    assert set(out.split()) >= {"busybox", *APPLETS}
