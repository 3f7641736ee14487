"""What ``check`` calls clean is what ``docker load`` accepts, for the tar streams where readers
differ; a ``docker save`` crafted to read as two images is one image, docker's, from a file
and from a pipe. The real engine judges; every layer is built byte by byte on a usrmerged
busybox base (``bin -> usr/bin``)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from support.cli import ocikit, ocikit_from_pipe, ok
from support.dockerd import BUSYBOX, DockerEngine
from support.rawtar import END, header, long_name, member, pax

pytestmark = pytest.mark.docker

APPLETS = ("sh", "stat", "cat", "test", "sha256sum", "ls")


def base_layer() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("usr", "usr/bin", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        with open(BUSYBOX, "rb") as f:
            data = f.read()
        info = tarfile.TarInfo("usr/bin/busybox")
        info.size, info.mode = len(data), 0o755
        tar.addfile(info, io.BytesIO(data))
        for name, target in [*((f"usr/bin/{a}", "busybox") for a in APPLETS), ("bin", "usr/bin")]:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return out.getvalue()


def docker_archive(path: Path, layers: list[bytes], tag: str, members: bytes = b"") -> str:
    """A legacy ``docker save`` of one image; ``members`` (raw tar) go after manifest.json.
    Returns the image ID (the config's digest)."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": f"layer {i}"} for i in range(len(layers))],
        }
    ).encode()
    image_id = hashlib.sha256(config).hexdigest()
    manifest = [
        {
            "Config": f"{image_id}.json",
            "RepoTags": [tag],
            "Layers": [f"{d[7:]}/layer.tar" for d in diff_ids],
        }
    ]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        files = [(f"{image_id}.json", config), ("manifest.json", json.dumps(manifest).encode())]
        files += [(f"{d[7:]}/layer.tar", layer) for d, layer in zip(diff_ids, layers, strict=True)]
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        end = tar.offset  # before the end-of-archive blocks
    path.write_bytes(out.getvalue()[:end] + members + END)
    return f"sha256:{image_id}"


@dataclass(frozen=True)
class Layer:
    id: str
    tar: bytes
    loads: bool  # docker load accepts the image
    rules: frozenset[str]  # the error rules check reports (none: check exits 0)
    shell: str | None = None  # run in the container when it loads: prints "ok"


def sparse_tar(tmp: Path) -> bytes:
    """A GNU sparse file (PAX 1.0) as GNU tar writes it: a 1 MiB file, 4 bytes of data."""
    work = tmp / "sparse"
    work.mkdir()
    with open(work / "holes", "wb") as f:
        f.truncate(1 << 20)
        f.seek(600_000)
        f.write(b"data")
    return subprocess.run(
        ["tar", "-C", str(work), "--sparse", "--format=posix", "-cf", "-", "holes"],
        check=True,
        capture_output=True,
    ).stdout


SPARSE_SHA = hashlib.sha256(bytes(600_000) + b"data" + bytes((1 << 20) - 600_004)).hexdigest()

LAYERS = [
    Layer(
        "two-pax-headers",  # Go applies the second only: "other" twice
        member(b"other", b"1")
        + pax([(b"path", b"dup")])
        + pax([(b"mtime", b"1")])
        + member(b"other", b"2")
        + END,
        False,
        frozenset({"duplicate-path"}),
    ),
    Layer(
        "two-global-headers",
        pax([(b"comment", b"a")], b"g", b"pax_global_header")
        + pax([(b"comment", b"b")], b"g", b"pax_global_header")
        + member(b"x", b"x")
        + END,
        False,
        frozenset({"duplicate-path"}),
    ),
    Layer(
        "global-header-renames-nothing",
        pax([(b"path", b"renamed"), (b"uid", b"7")], b"g", b"pax_global_header")
        + member(b"a", b"A")
        + member(b"b", b"B")
        + END,
        True,
        frozenset(),
        "test $(cat /a /b) = AB && test $(stat -c %u /a) = 0 && test ! -e /renamed",
    ),
    Layer(
        "global-header-named-like-a-file",
        pax([(b"path", b"x")], b"g", b"pax_global_header") + member(b"x", b"x") + END,
        False,
        frozenset({"duplicate-path"}),
    ),
    Layer(
        # a GNU long name "bin/" wins over the PAX path after it: a \\0-typed entry named
        # "bin/" is a directory, over bin -> usr/bin (docker empties /bin)
        "long-name-bin-directory",
        long_name(b"bin/") + pax([(b"path", b"other")]) + header(b"zz", b"\0") + END,
        True,
        frozenset({"replaces-symlinked-dir"}),
        "test ! -e /bin/sh && test -d /bin && test ! -L /bin",
    ),
    Layer(
        "uid-beyond-32-bits",  # docker applies 2**32 + 1000 as 1000, and 2**32 as root
        pax([(b"uid", b"4294968296")])
        + member(b"u", b"u")
        + pax([(b"uid", b"4294967296")])
        + member(b"r", b"r")
        + END,
        True,
        frozenset({"owner-out-of-range"}),
        "test $(stat -c %u /u) = 1000 && test $(stat -c %u /r) = 0",
    ),
    Layer(
        "unknown-type",
        header(b"z", b"Z") + END,
        False,
        frozenset({"unsupported-type"}),
    ),
    Layer(
        "mtime-not-a-number",
        pax([(b"mtime", b"1e30")]) + member(b"x", b"x") + END,
        False,
        frozenset({"layer-unreadable"}),
    ),
    Layer(
        "symlink-target-beyond-path-max",  # ENAMETOOLONG in docker's extraction
        pax([(b"linkpath", b"a/" * 2500)]) + member(b"l", b"", b"2") + END,
        False,
        frozenset({"name-too-long"}),
    ),
    Layer(
        "name-beyond-name-max",
        pax([(b"path", b"x" * 256)]) + member(b"f", b"hi") + END,
        False,
        frozenset({"name-too-long"}),
    ),
    Layer(
        "symlink-target-at-path-max",
        pax([(b"linkpath", b"a" * 4095)]) + member(b"l", b"", b"2") + END,
        True,
        frozenset(),
    ),
    Layer(
        "nul-in-path",
        pax([(b"path", b"a\0b")]) + member(b"x", b"x") + END,
        False,
        frozenset({"layer-unreadable"}),
    ),
]


@pytest.fixture(scope="module")
def base() -> bytes:
    return base_layer()


def _check(ref: str) -> tuple[int, set[str]]:
    proc = ocikit("check", "--json", ref)
    assert proc.returncode in (0, 1), proc.stderr.decode()
    report = json.loads(proc.stdout)
    return proc.returncode, {f["rule"] for f in report["findings"] if f["severity"] == "error"}


def _judge(engine: DockerEngine, path: Path, tag: str, layer: Layer) -> None:
    code, rules = _check(f"docker-archive:{path}")
    assert rules == set(layer.rules), rules
    assert code == (1 if layer.rules else 0)
    loaded = engine.docker("load", "-i", str(path), check=False)
    assert (loaded.returncode == 0) is layer.loads, loaded.stderr.decode()
    if layer.loads and layer.shell:
        run = engine.docker(
            "run", "--rm", "--network", "none", tag, "/usr/bin/busybox", "sh", "-c", layer.shell
        )
        assert run.returncode == 0, run.stderr
    if layer.loads:
        engine.remove_image(tag)
    if not layer.loads:
        assert code == 1, "docker refuses an image check calls clean"


@pytest.mark.parametrize("layer", LAYERS, ids=[x.id for x in LAYERS])
def test_check_agrees_with_docker_load(
    docker_engine: DockerEngine, base: bytes, tmp_path: Path, layer: Layer
) -> None:
    tag = f"ocikit-test/tar-{layer.id}:1"
    docker_engine.remove_image(tag)
    path = tmp_path / "image.tar"
    docker_archive(path, [base, layer.tar], tag)
    _judge(docker_engine, path, tag, layer)


def test_a_sparse_file_reads_as_docker_extracts_it(
    docker_engine: DockerEngine, base: bytes, tmp_path: Path
) -> None:
    tag = "ocikit-test/tar-sparse:1"
    docker_engine.remove_image(tag)
    path = tmp_path / "image.tar"
    docker_archive(path, [base, sparse_tar(tmp_path)], tag)
    layer = Layer(
        "sparse", b"", True, frozenset(), f'test "$(sha256sum < /holes)" = "{SPARSE_SHA}  -"'
    )
    _judge(docker_engine, path, tag, layer)
    ok("unpack", f"docker-archive:{path}", str(tmp_path / "root"))
    assert hashlib.sha256((tmp_path / "root" / "holes").read_bytes()).hexdigest() == SPARSE_SHA


def test_a_save_crafted_to_read_as_two_images_is_one(
    docker_engine: DockerEngine, base: bytes, tmp_path: Path
) -> None:
    """After ``manifest.json`` (image A) comes a member with two PAX headers: the first names
    it ``manifest.json`` and the second is what Go applies, so docker loads A while a reader
    that merges the two (ocikit's, and tarfile's for a file, before) reads image B. From the
    file and from a pipe, ocikit reads A, with docker's image ID."""
    tag, other = "ocikit-test/tar-crafted:1", "ocikit-test/tar-crafted-b:1"
    docker_engine.remove_image(tag, other)
    b_layer = member(b"b", b"image B") + END
    b_path = tmp_path / "b.tar"
    b_id = docker_archive(b_path, [base, b_layer], other)
    with tarfile.open(b_path) as b:
        b_files = {m.name: b.extractfile(m).read() for m in b if m.isfile()}  # type: ignore[union-attr]
    crafted = b""
    for name, data in b_files.items():
        if name == "manifest.json":
            crafted += pax([(b"path", b"manifest.json")]) + pax([(b"comment", b"x")])
            crafted += member(b"decoy.json", data)
        else:
            crafted += member(name.encode(), data)
    path = tmp_path / "crafted.tar"
    a_id = docker_archive(path, [base, member(b"a", b"image A") + END], tag, crafted)
    assert a_id != b_id
    loaded = docker_engine.docker("load", "-i", str(path))
    assert tag.encode() in loaded.stdout
    assert docker_engine.image_id(tag) == a_id
    from_file = json.loads(ok("inspect", f"docker-archive:{path}").stdout)
    piped = ocikit_from_pipe(["cat", str(path)], "inspect", "docker-archive:-")
    assert piped.returncode == 0, piped.stderr.decode()
    from_pipe = json.loads(piped.stdout)
    assert from_file["config_digest"] == from_pipe["config_digest"] == a_id
