"""The test images (Dockerfiles), reading ``docker save`` archives, and making broken ones.

Nothing here starts an engine: the fixtures in ``conftest.py`` build with ``support.dockerd``
and hand the archives to these functions.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import random
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hello.docker.tar"  # shipped
SAMPLE_TAG = "hello:latest"

BASE_TAG = "ocikit-test/base:1"
RICH_TAG = "ocikit-test/rich:1"
OTHER_TAG = "ocikit-test/other:2"

LONG_DIR = "long/" + "d" * 60 + "/" + "e" * 60
LONG_FILE = f"{LONG_DIR}/file-with-a-rather-long-name.txt"  # 158 bytes: over ustar's 100
NON_ASCII = "café/naïve-文件.txt"
RICH_CMD_OUTPUT = b"new\n"

# One layer per feature, so each can be checked in the saved archive:
#   whiteout (.wh.gone.txt), opaque directory (d/.wh..wh..opq), hardlinks (a link made in the
#   layer, and one to a file of a lower layer: overlay2 copies that file up, so docker writes
#   it again in the new layer with the link), a path and a symlink target over 100 bytes,
#   non-ASCII names, and one layer twice (two identical COPY: docker saves the second
#   <id>/layer.tar as a symlink to the first).
RICH_DOCKERFILE = f"""\
FROM {BASE_TAG}
RUN mkdir -p /d /keep && echo old > /d/old && echo gone > /gone.txt \\
    && echo target > /hl-target && echo kept > /keep/k
RUN rm /gone.txt
RUN rm -rf /d && mkdir /d && echo new > /d/n
RUN ln /hl-target /hl-link && echo inlayer > /x && ln /x /x-link
COPY long/ /long/
RUN ln -s /{LONG_FILE} /long-symlink
COPY café/ /café/
COPY same.txt /same.txt
COPY same.txt /same.txt
ENV FOO=bar PATH=/bin
LABEL org.example.test=rich
WORKDIR /srv
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /d/n"]
"""
RICH_FILES: dict[str, bytes | str] = {
    LONG_FILE: "long\n",
    NON_ASCII: "accents\n",
    "same.txt": "the same layer twice\n",
}
RICH_ENV = "FOO=bar"
RICH_LABELS = {"org.example.test": "rich"}
RICH_ENTRYPOINT = ["/bin/sh", "-c"]
RICH_CMD = ["cat /d/n"]
RICH_WORKDIR = "/srv"

OTHER_DOCKERFILE = f"""\
FROM {BASE_TAG}
COPY o.txt /o.txt
CMD ["cat", "/o.txt"]
"""
OTHER_FILES: dict[str, bytes | str] = {"o.txt": "other image\n"}
OTHER_CMD_OUTPUT = b"other image\n"


@dataclass(frozen=True)
class Archive:
    """A ``docker save`` archive: its images' first tags and IDs, in ``manifest.json`` order."""

    path: Path
    tags: list[str]
    image_ids: list[str]

    @property
    def tag(self) -> str:
        return self.tags[0]

    @property
    def image_id(self) -> str:
        return self.image_ids[0]

    def id_of(self, tag: str) -> str:
        return self.image_ids[self.tags.index(tag)]


# ---------------------------------------------------------------------------- reading


def member_bytes(tar: tarfile.TarFile, name: str) -> bytes:
    """A member's bytes, following symlinks between members (as legacy archives have)."""
    seen = set()
    while True:
        info = tar.getmember(name)
        if not info.issym():
            f = tar.extractfile(info)
            assert f is not None, name
            return f.read()
        if name in seen:
            raise ValueError(f"symlink loop at {name}")
        seen.add(name)
        name = posixpath.normpath(posixpath.join(posixpath.dirname(name), info.linkname))


def read_manifest_json(archive: Path) -> list[dict]:
    with tarfile.open(archive) as tar:
        return json.loads(member_bytes(tar, "manifest.json"))


def describe(archive: Path) -> tuple[list[str], list[str]]:
    """(first tag, image ID) of each image, in ``manifest.json`` order, from the archive alone."""
    tags, ids = [], []
    with tarfile.open(archive) as tar:
        for entry in json.loads(member_bytes(tar, "manifest.json")):
            tags.append((entry.get("RepoTags") or [""])[0])
            config = member_bytes(tar, entry["Config"])
            ids.append("sha256:" + hashlib.sha256(config).hexdigest())
    return tags, ids


def layer_members(archive: Path, image: int = 0) -> list[list[tarfile.TarInfo]]:
    """The entries of each layer of an image of a legacy or Docker >= 25 archive."""
    out = []
    with tarfile.open(archive) as tar:
        entry = json.loads(member_bytes(tar, "manifest.json"))[image]
        for name in entry["Layers"]:
            with tarfile.open(fileobj=io.BytesIO(member_bytes(tar, name))) as layer:
                out.append(layer.getmembers())
    return out


def check_rich_archive(archive: Path) -> None:
    """Assert that docker really wrote what the rich image is meant to test."""
    with tarfile.open(archive) as tar:
        linked = [m for m in tar.getmembers() if m.name.endswith("/layer.tar") and m.issym()]
    assert linked, "docker did not save the repeated layer as a symlinked layer.tar"
    assert linked[0].linkname.startswith("../"), linked[0].linkname
    entries = [m for layer in layer_members(archive) for m in layer]
    names = {m.name.rstrip("/") for m in entries}
    assert ".wh.gone.txt" in names, "no whiteout"
    assert "d/.wh..wh..opq" in names, "no opaque whiteout"
    links = {m.name: m.linkname for m in entries if m.islnk()}
    assert {"hl-link", "hl-target"} & set(links), f"no hardlink to hl-target: {links}"
    assert links.get("x-link") == "x" or links.get("x") == "x-link", links
    assert LONG_FILE in names
    assert any(m.issym() and len(m.linkname) > 100 for m in entries), "no long symlink target"
    assert NON_ASCII in names


# ---------------------------------------------------------------------------- breaking


Edit = Callable[[tarfile.TarInfo, bytes | None], Iterable[tuple[tarfile.TarInfo, bytes | None]]]


def rewrite_tar(src: Path, dst: Path, edit: Edit) -> Path:
    """Copy a tar member by member; ``edit`` returns the (info, data) pairs to write instead."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        for info in tin.getmembers():
            f = tin.extractfile(info) if info.isreg() else None
            for new_info, data in edit(info, f.read() if f else None):
                if data is not None:
                    new_info.size = len(data)
                tout.addfile(new_info, io.BytesIO(data) if data is not None else None)
    return dst


def links_first(src: Path, dst: Path) -> Path:
    """The same archive with every symlinked ``layer.tar`` moved to the front of the stream,
    before its target (``docker save`` writes them in sorted order, so which comes first is
    chance): a one-pass reader meets the link before the layer."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        members = tin.getmembers()
        links = [m for m in members if m.issym() and m.name.endswith("/layer.tar")]
        assert links, "no symlinked layer.tar to move"
        for info in links + [m for m in members if m not in links]:
            tout.addfile(info, tin.extractfile(info) if info.isreg() else None)
    return dst


def symlink_info(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    info.mode = 0o777
    return info


def flip_file_byte(layer: bytes) -> bytes:
    """Change one byte in the data of the layer's largest file: still a valid tar, other bytes."""
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        biggest = max((m for m in tar.getmembers() if m.isreg()), key=lambda m: m.size)
    assert biggest.size > 0
    at = biggest.offset_data + biggest.size // 2
    return layer[:at] + bytes([layer[at] ^ 0x5A]) + layer[at + 1 :]


@dataclass(frozen=True)
class BadInput:
    """A broken source archive and a word the one-line error must contain."""

    path: Path
    expect: str


def make_bad_archives(legacy: Path, docker25: Path, out: Path) -> dict[str, BadInput]:
    """Broken archives made from a real legacy ``docker save`` and its Docker >= 25 form."""
    out.mkdir(parents=True, exist_ok=True)
    bad: dict[str, BadInput] = {}
    manifest = read_manifest_json(legacy)[0]
    layers = manifest["Layers"]
    with tarfile.open(legacy) as tar:
        real_layers = [m for m in (tar.getmember(n) for n in layers) if m.isreg()]
    first, second = real_layers[0].name, real_layers[1].name
    biggest = max(real_layers, key=lambda m: m.size)

    path = out / "not-a-tar"
    path.write_bytes(random.Random(7).randbytes(8192))
    bad["not-a-tar"] = BadInput(path, "not a tar")

    path = out / "empty"
    path.write_bytes(b"")
    bad["empty"] = BadInput(path, "empty")

    path = out / "truncated.tar"
    with legacy.open("rb") as f:
        path.write_bytes(f.read(biggest.offset_data + biggest.size // 2))
    bad["truncated"] = BadInput(path, "truncated")

    def drop(name: str) -> Edit:
        return lambda info, data: [] if info.name == name else [(info, data)]

    bad["missing-layer"] = BadInput(
        rewrite_tar(legacy, out / "missing-layer.tar", drop(second)), "missing"
    )
    bad["missing-config"] = BadInput(
        rewrite_tar(legacy, out / "missing-config.tar", drop(manifest["Config"])), "missing"
    )

    def corrupt(name: str) -> Edit:
        def edit(info: tarfile.TarInfo, data: bytes | None):
            return [(info, flip_file_byte(data) if info.name == name and data else data)]

        return edit

    bad["diff-id-mismatch"] = BadInput(
        rewrite_tar(legacy, out / "diff-id-mismatch.tar", corrupt(biggest.name)), "does not match"
    )

    def replace(name: str, target: str) -> Edit:
        def edit(info: tarfile.TarInfo, data: bytes | None):
            return [(symlink_info(name, target), None) if info.name == name else (info, data)]

        return edit

    bad["symlink-outside"] = BadInput(
        rewrite_tar(legacy, out / "symlink-outside.tar", replace(first, "../../etc/passwd")),
        "outside the archive",
    )

    def loop(info: tarfile.TarInfo, data: bytes | None):
        if info.name == first:
            return [(symlink_info(first, f"../{second}"), None)]
        if info.name == second:
            return [(symlink_info(second, f"../{first}"), None)]
        return [(info, data)]

    bad["symlink-loop"] = BadInput(rewrite_tar(legacy, out / "symlink-loop.tar", loop), "loop")

    def bad_manifest(info: tarfile.TarInfo, data: bytes | None):
        if info.name == "manifest.json":
            data = b'[{"Config": 42, "Layers": []}]'
        return [(info, data)]

    bad["bad-manifest-json"] = BadInput(
        rewrite_tar(legacy, out / "bad-manifest-json.tar", bad_manifest), "Config"
    )

    # Docker >= 25: blobs are named by their digest
    entry25 = read_manifest_json(docker25)[0]
    blob = max(entry25["Layers"], key=lambda n: _member_size(docker25, n))
    bad["docker25-digest-mismatch"] = BadInput(
        rewrite_tar(docker25, out / "d25-digest-mismatch.tar", corrupt(blob)), "does not match"
    )

    def corrupt_config(info: tarfile.TarInfo, data: bytes | None):
        if info.name == entry25["Config"] and data:
            assert b"FOO=bar" in data
            data = data.replace(b"FOO=bar", b"FOO=baz")  # same size, still JSON, other bytes
        return [(info, data)]

    bad["docker25-config-mismatch"] = BadInput(
        rewrite_tar(docker25, out / "d25-config-mismatch.tar", corrupt_config), "does not match"
    )
    bad["docker25-missing-blob"] = BadInput(
        rewrite_tar(docker25, out / "d25-missing-blob.tar", drop(entry25["Layers"][1])), "missing"
    )
    return bad


def _member_size(archive: Path, name: str) -> int:
    with tarfile.open(archive) as tar:
        return tar.getmember(name).size


def tree(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under ``root``: relative path -> (size, inode, mtime_ns); directories end
    in ``/`` with zeros. Empty if ``root`` does not exist."""
    out: dict[str, tuple[int, int, int]] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if name in dirnames:  # a directory's times change with what passes through it
                out[f"{p.relative_to(root)}/"] = (0, 0, 0)
            else:
                st = p.lstat()
                out[str(p.relative_to(root))] = (st.st_size, st.st_ino, st.st_mtime_ns)
    return out
