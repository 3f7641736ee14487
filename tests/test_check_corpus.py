"""``check``, ``copy --repair`` and ``unpack`` against a corpus of hostile and broken images,
each a single-image OCI layout written by hand (``support.layouts``), and one clean image.

Every hostile case aims at something real inside the test's own directory: a sentinel file
next to the unpack target (``work/sentinel``, next to ``work/root``), or a path that must not
come to exist (``tmp_path/x``). The whole of ``tmp_path`` is compared before and after: a
refused unpack changes nothing at all, a successful one only ``work/root``.

The cases are judged in this process (``support.inprocess``: ``main`` with its messages and
exit codes, a fresh ``$TMPDIR`` per run); ``test_as_a_process`` runs the same tests through
the real command for a sample of cases (each exit code and output form), and the clean image,
bad references and stdin pipes always go through it.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

import ocikit
from ocikit.layer.analyze import Finding, LayerAnalyzer, Tree
from ocikit.layer.tarstream import TarStream
from support.cli import assert_one_line_error, ok
from support.cli import ocikit as cli_ocikit
from support.inprocess import ocikit as run_ocikit
from support.layouts import (
    LAYER_GZIP,
    LAYER_ZSTD,
    Entry,
    blob_path,
    blockdev,
    chardev,
    clean,
    compress,
    directory,
    fifo,
    file,
    gzip_bomb,
    hardlink,
    image_layers,
    layer_tars,
    opaque,
    raw,
    read_entries,
    read_entry_data,
    symlink,
    tar_bytes,
    whiteout,
    write_layout,
)
from support.verify import OCI_CONFIG, check_layers_match_diff_ids, read_layout, sha256

SENTINEL = b"sentinel: must never change\n"
PWNED = "pwned\n"

# the table of ocikit/help/check.md
SEVERITY = {
    "config-digest": "error",
    "diff-id-count": "error",
    "history-count": "error",
    "blob-digest": "error",
    "blob-size": "error",
    "diff-id": "error",
    "media-type": "error",
    "layer-unreadable": "error",
    "decompression-bomb": "error",
    "duplicate-path": "error",
    "replaces-symlinked-dir": "error",
    "through-symlink": "warning",
    "parent-not-dir": "error",
    "absolute-path": "error",
    "path-traversal": "error",
    "root-type": "error",
    "hardlink-escape": "error",
    "hardlink-missing": "error",
    "hardlink-to-dir": "error",
    "whiteout-malformed": "error",
    "whiteout-same-layer": "warning",
    "device-node": "warning",
    "unsupported-type": "error",
    "owner-out-of-range": "error",
    "name-too-long": "error",
}
IMAGE_RULES = {"config-digest", "diff-id-count", "history-count"}

USRMERGE = [
    directory("usr"),
    directory("usr/bin"),
    file("usr/bin/sh", "#!sh\n", 0o755),
    symlink("bin", "usr/bin"),
]
BASE = [directory("etc"), file("etc/base", "base\n")]


# ---------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Case:
    """A hostile or broken image made of ``layers(work)`` (entries per layer; ``work`` is the
    directory holding the unpack target and the sentinel, for absolute names aimed at it)."""

    id: str
    layers: Callable[[Path], list[list[Entry]]]
    rule: str
    layer: int | None
    # what copy --repair does: "unsafe" stops (exit 2) unless --drop-unsafe; "fixed" rewrites
    # the layer and the result has no finding left; "kept" leaves the finding (a warning)
    repair: Literal["unsafe", "fixed", "kept"]
    # what unpack does: "refuse" (exit 2, one line, nothing written), "ok" (extracts), "either"
    # (the contract does not say: exit 0 or a clean refusal, never a write outside)
    unpack: Literal["refuse", "ok", "either"]
    paths: list[str] | None = None  # the finding's paths, as written
    resolved: str | None = None
    after_unpack: Callable[[Path], None] | None = None
    after_repair: Callable[[list[bytes]], None] | None = None
    also: tuple[str, ...] = field(default=())  # other rules that may be reported too
    alt: tuple[str, ...] = field(default=())  # rules the contract allows instead of ``rule``
    format: Literal["pax", "gnu"] = "pax"  # how long names are written

    @property
    def severity(self) -> str:
        return SEVERITY[self.rule]


def tree(root: Path) -> dict[str, tuple]:
    """Everything under ``root``: relative path -> (type, mode, uid, gid, size, inode, mtime,
    link target); a directory's size and mtime are left out (they change with what passes
    through it). Empty if ``root`` does not exist."""
    out: dict[str, tuple] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            link = os.readlink(p) if stat.S_ISLNK(st.st_mode) else None
            if stat.S_ISDIR(st.st_mode):
                out[f"{p.relative_to(root)}/"] = ("d", st.st_mode, st.st_uid, st.st_gid)
            else:
                out[str(p.relative_to(root))] = (
                    stat.S_IFMT(st.st_mode),
                    st.st_mode,
                    st.st_uid,
                    st.st_gid,
                    st.st_size,
                    st.st_ino,
                    st.st_mtime_ns,
                    link,
                )
    st = root.lstat()
    out["."] = ("d", st.st_mode, st.st_uid, st.st_gid)
    return out


def _only_names(layer: bytes) -> list[str]:
    return [clean(m.name) for m in read_entries(layer)]


def _unique_names(layer: bytes) -> None:
    names = _only_names(layer)
    assert len(names) == len(set(names)), f"still duplicate paths: {names}"


def _dup_dot_slash(layers: list[bytes]) -> None:
    _unique_names(layers[1])
    assert [clean(n) for n in read_entry_data(layers[1])] == ["a"]
    assert list(read_entry_data(layers[1]).values()) == [b"2\n"], "not the last entry kept"


def _dup_dir_twice(layers: list[bytes]) -> None:
    _unique_names(layers[1])
    assert sorted(_only_names(layers[1])) == ["d", "d/f"]


def _dup_file_then_symlink(layers: list[bytes]) -> None:
    _unique_names(layers[0])
    (entry,) = read_entries(layers[0])
    assert entry.issym() and entry.linkname == "target", "not the last entry kept"


def _dup_dir_then_file(layers: list[bytes]) -> None:
    (entry,) = read_entries(layers[0])  # d/x goes with the directory the file d replaced
    assert entry.isreg() and clean(entry.name) == "d", entry.name
    assert read_entry_data(layers[0]) == {entry.name: b"D\n"}


def _no_bin(layers: list[bytes]) -> None:
    assert "bin" not in _only_names(layers[1]), "the directory over bin -> usr/bin is still there"


def _pip_in_usr_bin(layers: list[bytes]) -> None:
    names = _only_names(layers[1])
    assert "bin" not in names and "bin/pip" not in names, names
    assert "usr/bin/pip" in names, names
    _unique_names(layers[1])


def _x_in_usr_bin(layers: list[bytes]) -> None:
    names = _only_names(layers[1])
    assert names == ["usr/bin/x"], names


def _absolute_stripped(layers: list[bytes]) -> None:
    (entry,) = read_entries(layers[0])
    assert not entry.name.startswith("/"), entry.name
    assert entry.name.endswith("work/sentinel"), entry.name


def _unpacked_bin_symlink(root: Path) -> None:
    assert os.readlink(root / "bin") == "usr/bin", "bin is no longer a symlink"
    assert (root / "usr" / "bin" / "sh").is_file()


def _unpacked_bin_file(root: Path) -> None:  # as docker's extraction does
    assert (root / "bin").read_text() == "not a dir\n"
    assert (root / "usr" / "bin" / "sh").is_file()


def _unpacked_bin_dir(root: Path) -> None:  # as docker's extraction does
    assert (root / "bin").is_dir() and not (root / "bin").is_symlink()
    assert (root / "usr" / "bin" / "sh").is_file()


def _unpacked_bin_dir_pip(root: Path) -> None:
    _unpacked_bin_dir(root)
    assert (root / "bin" / "pip").read_text() == "#!pip\n"
    assert not os.path.lexists(root / "usr" / "bin" / "pip")


def _unpacked_through(root: Path) -> None:
    _unpacked_bin_symlink(root)
    assert (root / "usr" / "bin" / "x").read_text() == "X\n"


def _unpacked_through_absolute(root: Path) -> None:
    assert os.readlink(root / "bin") == "/usr/bin"
    assert (root / "usr" / "bin" / "x").read_text() == "X\n"


def _unpacked_same_layer_whiteout(root: Path) -> None:
    # whiteouts apply to lower layers only: the y this layer adds stays
    assert (root / "y").read_text() == "new\n"


def _unpacked_device(root: Path) -> None:
    assert not os.path.lexists(root / "dev" / "null2"), "device created without --devices"
    assert (root / "dev").is_dir()


def _unpacked_dup_file_then_symlink(root: Path) -> None:
    assert os.readlink(root / "f") == "target"


def _unpacked_dup_dot_slash(root: Path) -> None:
    assert (root / "a").read_text() == "2\n"


def _unpacked_dup_dir_then_file(root: Path) -> None:
    assert (root / "d").read_text() == "D\n"


def _unpacked_dup_dir_twice(root: Path) -> None:
    assert (root / "d" / "f").read_text() == "F\n"


HOSTILE: list[Case] = [
    # -- traversal by name
    Case(
        "name-traversal",
        lambda w: [BASE, [file("../../x", PWNED)]],
        "path-traversal",
        1,
        "unsafe",
        "refuse",
        paths=["../../x"],
    ),
    Case(
        "name-traversal-inner",
        lambda w: [[directory("a"), file("a/../../sentinel", PWNED)]],
        "path-traversal",
        0,
        "unsafe",
        "refuse",
        paths=["a/../../sentinel"],
    ),
    Case(
        "name-traversal-whiteout",  # would delete the sentinel
        lambda w: [BASE, [file("../.wh.sentinel")]],
        "path-traversal",
        1,
        "unsafe",
        "refuse",
        also=("whiteout-malformed",),
    ),
    Case(
        "name-traversal-opaque",  # would empty the directory holding the sentinel
        lambda w: [BASE, [file("../.wh..wh..opq")]],
        "path-traversal",
        1,
        "unsafe",
        "refuse",
        also=("whiteout-malformed",),
    ),
    # -- absolute name (aimed at the real sentinel)
    Case(
        "absolute-name",
        lambda w: [[file(f"{w}/sentinel", PWNED)]],
        "absolute-path",
        0,
        "fixed",
        "refuse",
        after_repair=_absolute_stripped,
    ),
    # -- traversal through symlinks
    Case(
        "symlink-lower-layer",
        lambda w: [[symlink("evil", "..")], [file("evil/sentinel", PWNED)]],
        "path-traversal",
        1,
        "unsafe",
        "refuse",
        paths=["evil/sentinel"],
        also=("through-symlink",),
    ),
    Case(
        "symlink-same-layer",
        lambda w: [[symlink("evil", "../.."), file("evil/sentinel-target", PWNED)]],
        "path-traversal",
        0,
        "unsafe",
        "refuse",
        also=("through-symlink",),
    ),
    Case(
        "symlink-deep-lower-layer",
        lambda w: [[symlink("evil", "../../../..")], [file("evil/sentinel-target", PWNED)]],
        "path-traversal",
        1,
        "unsafe",
        "refuse",
        also=("through-symlink",),
    ),
    Case(
        "symlinked-parent-escape",
        lambda w: [[directory("d"), symlink("d/up", "../.."), file("d/up/sentinel", PWNED)]],
        "path-traversal",
        0,
        "unsafe",
        "refuse",
        also=("through-symlink",),
    ),
    Case(
        "symlink-chain-escape",
        lambda w: [
            [directory("c"), symlink("b", "c/../.."), symlink("a", "b")],
            [file("a/sentinel", PWNED)],
        ],
        "path-traversal",
        1,
        "unsafe",
        "refuse",
        also=("through-symlink",),
    ),
    Case(
        "absolute-symlink-dangling-parent",  # /<work> inside the image: does not exist
        lambda w: [[symlink("abs", str(w))], [file("abs/sentinel", PWNED)]],
        "parent-not-dir",
        1,
        "unsafe",
        "refuse",
        also=("through-symlink",),
    ),
    Case(
        "parent-is-file",
        lambda w: [[file("f", "F\n"), file("f/x", "X\n")]],
        "parent-not-dir",
        0,
        "unsafe",
        "refuse",
    ),
    # -- hardlinks
    Case(
        "hardlink-escape-etc",
        lambda w: [[hardlink("passwd", "../../etc/passwd")]],
        "hardlink-escape",
        0,
        "unsafe",
        "refuse",
    ),
    Case(
        "hardlink-escape-sentinel",  # then written through
        lambda w: [[hardlink("h", "../sentinel")], [file("h", PWNED)]],
        "hardlink-escape",
        0,
        "unsafe",
        "refuse",
    ),
    Case(
        "hardlink-through-escaping-symlink",
        lambda w: [[symlink("evil", ".."), hardlink("h", "evil/sentinel")]],
        "hardlink-escape",
        0,
        "unsafe",
        "refuse",
        also=("path-traversal",),
    ),
    Case(
        "hardlink-absolute-target",  # /<work>/sentinel inside the image: not there
        lambda w: [[hardlink("h", f"{w}/sentinel")]],
        "hardlink-missing",
        0,
        "unsafe",
        "refuse",
        also=("absolute-path",),
    ),
    Case(
        "hardlink-missing",
        lambda w: [BASE, [hardlink("h", "nothere")]],
        "hardlink-missing",
        1,
        "unsafe",
        "refuse",
    ),
    Case(
        "hardlink-before-target",
        lambda w: [[hardlink("h", "f"), file("f", "F\n")]],
        "hardlink-missing",
        0,
        "unsafe",
        "refuse",
    ),
    Case(
        "hardlink-to-whited-out",
        lambda w: [[file("f", "F\n")], [whiteout("f"), hardlink("h", "f")]],
        "hardlink-missing",
        1,
        "unsafe",
        "refuse",
    ),
    Case(
        "hardlink-to-dir",
        lambda w: [[directory("d"), hardlink("h", "d")]],
        "hardlink-to-dir",
        0,
        "unsafe",
        "refuse",
    ),
    # -- the root replaced (umoci CVE-2021-29136)
    Case(
        "root-symlink-dot",
        lambda w: [[symlink(".", str(w)), file("sentinel", PWNED)]],
        "root-type",
        0,
        "unsafe",
        "refuse",
    ),
    Case(
        "root-symlink-dot-slash",
        lambda w: [[symlink("./", ".."), file("sentinel", PWNED)]],
        "root-type",
        0,
        "unsafe",
        "refuse",
    ),
    Case(
        "root-symlink-upper-layer",
        lambda w: [BASE, [symlink(".", ".."), file("sentinel", PWNED)]],
        "root-type",
        1,
        "unsafe",
        "refuse",
    ),
    Case(
        "root-file",
        lambda w: [[file(".", PWNED)]],
        "root-type",
        0,
        "unsafe",
        "refuse",
    ),
    Case(
        "symlink-loop-parent",
        lambda w: [[symlink("a", "b"), symlink("b", "a")], [file("a/x", PWNED)]],
        "parent-not-dir",
        1,
        "unsafe",
        "refuse",
        also=("through-symlink",),
        alt=("path-traversal",),  # a loop: dangling, or leading nowhere inside
    ),
    Case(
        "symlink-absolute-dotdot",  # /../.. climbs above the root
        lambda w: [[symlink("r", "/../..")], [file("r/sentinel", PWNED)]],
        "path-traversal",
        1,
        "unsafe",
        "refuse",
        also=("through-symlink",),
    ),
    Case(
        "whiteout-through-symlink",  # would delete the sentinel
        lambda w: [[symlink("evil", "..")], [whiteout("evil/sentinel")]],
        "path-traversal",
        1,
        "unsafe",
        "refuse",
        also=("through-symlink", "whiteout-malformed"),
    ),
    Case(
        "opaque-through-symlink",  # would empty the sentinel's directory
        lambda w: [[symlink("evil", "..")], [opaque("evil")]],
        "path-traversal",
        1,
        "unsafe",
        "refuse",
        also=("through-symlink", "whiteout-malformed"),
    ),
    Case(
        "directory-through-symlink",  # mkdir + chmod 0777 + chown outside
        lambda w: [[symlink("evil", "..")], [directory("evil/root", 0o777, uid=4321, gid=4321)]],
        "path-traversal",
        1,
        "unsafe",
        "refuse",
        also=("through-symlink",),
    ),
    Case(
        "dir-replaced-by-symlink",
        lambda w: [
            [directory("d"), file("d/f", "F\n")],
            [symlink("d", "..")],
            [file("d/sentinel", PWNED)],
        ],
        "path-traversal",
        2,
        "unsafe",
        "refuse",
        also=("through-symlink",),
    ),
    Case(
        "dir-replaced-by-symlink-same-layer",
        lambda w: [[directory("d"), file("d/f", "F\n")], [symlink("d", ".."), file("d/sentinel")]],
        "path-traversal",
        1,
        "unsafe",
        "refuse",
        also=("through-symlink", "duplicate-path"),
    ),
    Case(
        "whiteout-then-symlink-then-write",
        lambda w: [
            [directory("d"), file("d/f", "F\n")],
            [whiteout("d"), symlink("d", ".."), file("d/sentinel", PWNED)],
        ],
        "path-traversal",
        1,
        "unsafe",
        "refuse",
        also=("through-symlink", "whiteout-same-layer"),
    ),
    Case(
        "symlink-chain-too-long",  # 41 links: more than the 40 a resolver follows
        lambda w: [
            [directory("real")]
            + [symlink(f"l{i}", f"l{i + 1}") for i in range(41)]
            + [symlink("l41", "real")],
            [file("l0/x", "X\n")],
        ],
        "path-traversal",
        1,
        "unsafe",
        "refuse",
        also=("through-symlink",),
        alt=("parent-not-dir",),
    ),
    Case(
        "pax-long-traversal",  # the name lives in a PAX header
        lambda w: [[directory("a" * 120), file("a" * 120 + "/../../../" + "b" * 100, PWNED)]],
        "path-traversal",
        0,
        "unsafe",
        "refuse",
    ),
    Case(
        "gnu-long-traversal",  # the name lives in a GNU ././@LongLink entry
        lambda w: [[directory("a" * 120), file("a" * 120 + "/../../../" + "b" * 100, PWNED)]],
        "path-traversal",
        0,
        "unsafe",
        "refuse",
        format="gnu",
    ),
    Case(
        "gnu-long-symlink-target",
        lambda w: [
            [directory("a" * 120), symlink("evil", "a" * 120 + "/../" * 3)],
            [file("evil/x")],
        ],
        "path-traversal",
        1,
        "unsafe",
        "refuse",
        also=("through-symlink",),
        format="gnu",
    ),
    # -- malformed whiteouts
    Case(
        "whiteout-bare",
        lambda w: [BASE, [file(".wh.")]],
        "whiteout-malformed",
        1,
        "unsafe",
        "refuse",
    ),
    Case(
        "whiteout-wh-wh",
        lambda w: [BASE, [file(".wh..wh..foo")]],
        "whiteout-malformed",
        1,
        "unsafe",
        "refuse",
    ),
    Case(
        "whiteout-of-dotdot",  # the whiteout of the root's parent: the sentinel's directory
        lambda w: [BASE, [file(".wh...")]],
        "whiteout-malformed",
        1,
        "unsafe",
        "refuse",
        also=("path-traversal",),
    ),
    Case(
        "whiteout-of-dot",
        lambda w: [BASE, [file("etc/.wh..")]],
        "whiteout-malformed",
        1,
        "unsafe",
        "refuse",
    ),
    Case(
        "whiteout-symlink",
        lambda w: [BASE, [symlink("etc/.wh.base", "/")]],
        "whiteout-malformed",
        1,
        "unsafe",
        "refuse",
    ),
    # -- a non-directory over a symlinked directory: cannot be repaired safely
    Case(
        "file-replaces-symlinked-dir",
        lambda w: [USRMERGE, [file("bin", "not a dir\n")]],
        "replaces-symlinked-dir",
        1,
        "unsafe",
        "ok",
        after_unpack=_unpacked_bin_file,
    ),
]

REPAIRABLE: list[Case] = [
    Case(
        "dup-dot-slash",
        lambda w: [BASE, [file("a", "1\n"), file("./a", "2\n")]],
        "duplicate-path",
        1,
        "fixed",
        "ok",
        paths=["a", "./a"],
        after_repair=_dup_dot_slash,
        after_unpack=_unpacked_dup_dot_slash,
    ),
    Case(
        "dup-dir-twice",
        lambda w: [BASE, [directory("d/"), directory("d/"), file("d/f", "F\n")]],
        "duplicate-path",
        1,
        "fixed",
        "ok",
        after_repair=_dup_dir_twice,
        after_unpack=_unpacked_dup_dir_twice,
    ),
    Case(
        "dup-file-then-symlink",
        lambda w: [[file("f", "1\n"), symlink("f", "target")]],
        "duplicate-path",
        0,
        "fixed",
        "ok",
        paths=["f", "f"],
        after_repair=_dup_file_then_symlink,
        after_unpack=_unpacked_dup_file_then_symlink,
    ),
    Case(
        "dup-dir-then-file",
        lambda w: [[directory("d"), file("d/x", "X\n"), file("d", "D\n")]],
        "duplicate-path",
        0,
        "fixed",
        "ok",
        after_repair=_dup_dir_then_file,
        after_unpack=_unpacked_dup_dir_then_file,
    ),
    Case(
        "replaces-symlinked-dir",
        lambda w: [USRMERGE, [directory("bin")]],
        "replaces-symlinked-dir",
        1,
        "fixed",
        "ok",
        paths=["bin/"],
        after_repair=_no_bin,
        after_unpack=_unpacked_bin_dir,
    ),
    Case(
        "replaces-symlinked-dir-with-content",
        lambda w: [USRMERGE, [directory("bin"), file("bin/pip", "#!pip\n", 0o755)]],
        "replaces-symlinked-dir",
        1,
        "fixed",
        "ok",
        after_repair=_pip_in_usr_bin,
        after_unpack=_unpacked_bin_dir_pip,
    ),
    Case(
        "through-symlink",
        lambda w: [USRMERGE, [file("bin/x", "X\n")]],
        "through-symlink",
        1,
        "fixed",
        "ok",
        paths=["bin/x"],
        resolved="usr/bin/x",
        after_repair=_x_in_usr_bin,
        after_unpack=_unpacked_through,
    ),
    Case(
        "through-absolute-symlink",
        lambda w: [
            [directory("usr"), directory("usr/bin"), symlink("bin", "/usr/bin")],
            [file("bin/x", "X\n")],
        ],
        "through-symlink",
        1,
        "fixed",
        "ok",
        paths=["bin/x"],
        resolved="usr/bin/x",
        after_repair=_x_in_usr_bin,
        after_unpack=_unpacked_through_absolute,
    ),
    Case(
        "whiteout-same-layer",
        lambda w: [[file("y", "old\n")], [file("y", "new\n"), whiteout("y")]],
        "whiteout-same-layer",
        1,
        "kept",
        "ok",
        after_unpack=_unpacked_same_layer_whiteout,
    ),
    Case(
        "device-node-char",
        lambda w: [[directory("dev"), chardev("dev/null2", 1, 3)]],
        "device-node",
        0,
        "kept",
        "ok",
        paths=["dev/null2"],
        after_unpack=_unpacked_device,
    ),
    Case(
        "device-node-block",
        lambda w: [[directory("dev"), blockdev("dev/null2", 7, 200)]],
        "device-node",
        0,
        "kept",
        "ok",
        after_unpack=_unpacked_device,
    ),
    Case(
        # docker's (and containerd's) extraction fails on a type it does not know
        "unsupported-type",
        lambda w: [BASE, [raw("weird", b"Z")]],
        "unsupported-type",
        1,
        "unsafe",
        "refuse",
    ),
    Case(
        # docker applies an owner cut to 32 bits: 2**32 becomes root
        "owner-beyond-32-bits",
        lambda w: [BASE, [file("x", "x\n", uid=1 << 32)]],
        "owner-out-of-range",
        1,
        "unsafe",
        "refuse",
    ),
    Case(
        # Linux (and docker's extraction) refuses a name over 255 bytes
        "name-too-long",
        lambda w: [BASE, [file("n" * 300, "x\n")]],
        "name-too-long",
        1,
        "unsafe",
        "refuse",
    ),
    Case(
        # docker's loader counts a global header's name among the paths
        "dup-global-headers",
        lambda w: [BASE, [raw("pax_global_header", b"g"), raw("pax_global_header", b"g")]],
        "duplicate-path",
        1,
        "fixed",
        "ok",
    ),
    Case(
        "dup-root",
        lambda w: [BASE, [directory("./"), directory("."), file("y", "y\n")]],
        "duplicate-path",
        1,
        "fixed",
        "ok",
    ),
]

CASES = HOSTILE + REPAIRABLE
UNSAFE = [c for c in CASES if c.repair == "unsafe"]
REFUSED = [c for c in CASES if c.unpack == "refuse"]
ids = [c.id for c in CASES]


# ---------------------------------------------------------------------------- harness


@dataclass
class Scene:
    """A test's directory: ``layout`` (the image), ``work/sentinel`` next to ``work/root``
    (the unpack target), ``tmpdir`` (ocikit's $TMPDIR, empty afterwards)."""

    tmp: Path
    layout: Path
    work: Path
    sentinel: Path
    dest: Path
    tmpdir: Path

    @property
    def ref(self) -> str:
        return f"oci:{self.layout}:t"

    @property
    def env(self) -> dict[str, str]:
        return {"TMPDIR": str(self.tmpdir)}


def scene(tmp_path: Path) -> Scene:
    work = tmp_path / "work"
    work.mkdir()
    sentinel = work / "sentinel"
    sentinel.write_bytes(SENTINEL)
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    return Scene(tmp_path, tmp_path / "layout", work, sentinel, work / "root", tmpdir)


def build(case: Case, tmp_path: Path) -> Scene:
    s = scene(tmp_path)
    layers = [tar_bytes(entries, format=case.format) for entries in case.layers(s.work)]
    write_layout(s.layout, layers)
    return s


Runner = Callable[..., subprocess.CompletedProcess[bytes]]


def check_json(
    ref: str, *args: str, env: dict[str, str] | None = None, run: Runner = run_ocikit
) -> tuple[int, dict]:
    proc = run("check", "--json", *args, ref, env=env)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode in (0, 1), f"check exit {proc.returncode}: {err}"
    assert "Traceback" not in err, err
    return proc.returncode, json.loads(proc.stdout)


def assert_report_shape(report: dict[str, Any], ref: str, layout: Path) -> None:
    """The JSON of ocikit/help/check.md, consistent with itself and with the image."""
    manifest = raw_manifest(layout)  # as written: the image may be broken on purpose
    for key in ("reference", "digest", "layers", "entries", "errors", "warnings", "ok"):
        assert key in report, f"{key} missing from {sorted(report)}"
    assert report["reference"] == ref
    assert report["digest"] == manifest_digest(layout)
    assert report["layers"] == len(manifest["layers"])
    assert isinstance(report["entries"], int) and report["entries"] >= 0
    findings = report["findings"]
    errors = [f for f in findings if f["severity"] == "error"]
    warnings = [f for f in findings if f["severity"] == "warning"]
    assert len(errors) + len(warnings) == len(findings), findings
    assert (report["errors"], report["warnings"]) == (len(errors), len(warnings))
    assert report["ok"] is (not errors)
    for f in findings:
        assert set(f) >= {"rule", "severity", "layer", "layer_digest", "paths", "message"}, f
        assert f["rule"] in SEVERITY, f"rule {f['rule']!r} is not in ocikit/help/check.md"
        assert f["severity"] == SEVERITY[f["rule"]], f
        assert isinstance(f["message"], str) and f["message"].strip(), f
        assert isinstance(f["paths"], list), f
        assert all(isinstance(p, str) for p in f["paths"]), f
        assert f.get("resolved") is None or isinstance(f["resolved"], str), f
        if f["rule"] in IMAGE_RULES:
            assert f["layer"] is None, f
        if f["layer"] is not None:
            assert f["layer_digest"] == manifest["layers"][f["layer"]]["digest"], f


def manifest_digest(layout: Path) -> str:
    (desc,) = json.loads((layout / "index.json").read_bytes())["manifests"]
    return desc["digest"]


def raw_manifest(layout: Path) -> dict[str, Any]:
    return json.loads(blob_path(layout, manifest_digest(layout)).read_bytes())


def findings_of(report: dict[str, Any], rule: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["rule"] == rule]


def assert_reported(
    report: dict[str, Any], rule: str, layer: int | None, alt: tuple[str, ...] = ()
) -> dict[str, Any]:
    found = [f for f in report["findings"] if f["rule"] in (rule, *alt) and f["layer"] == layer]
    summary = [(f["rule"], f["layer"], f["paths"]) for f in report["findings"]]
    assert found, f"no {rule} on layer {layer}: {summary}"
    return found[0]


def repair(
    src: str,
    dst_layout: Path,
    *args: str,
    env: dict[str, str] | None = None,
    run: Runner = run_ocikit,
):
    return run("copy", "-q", "--repair", *args, src, f"oci:{dst_layout}:t", env=env)


def assert_untouched(s: Scene, before: dict, passwd: os.stat_result) -> None:
    """Nothing anywhere in tmp_path changed; the sentinel and /etc/passwd are as they were."""
    assert s.sentinel.read_bytes() == SENTINEL
    assert s.sentinel.stat().st_nlink == 1, "someone hardlinked the sentinel"
    now = os.stat("/etc/passwd")
    assert (now.st_nlink, now.st_size, now.st_mtime_ns) == (
        passwd.st_nlink,
        passwd.st_size,
        passwd.st_mtime_ns,
    ), "/etc/passwd changed"
    assert not s.dest.exists() and not os.path.lexists(s.dest), "the target was created"
    assert tree(s.tmp) == before, "something changed in the test's directory"
    assert list(s.tmpdir.iterdir()) == [], "temporary files left behind"


def assert_only_dest_changed(s: Scene, before: dict) -> None:
    after = tree(s.tmp)
    rel = f"{s.dest.relative_to(s.tmp)}"
    changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    outside = sorted(k for k in changed if k != f"{rel}/" and not k.startswith(f"{rel}/"))
    assert not outside, f"unpack wrote outside its target: {outside}"
    assert s.sentinel.read_bytes() == SENTINEL
    assert list(s.tmpdir.iterdir()) == [], "temporary files left behind"


# ---------------------------------------------------------------------------- check


@pytest.mark.parametrize("case", CASES, ids=ids)
@pytest.mark.usefixtures("tar_backend")  # both tar header parsers
def test_check_reports_rule(case: Case, tmp_path: Path, run: Runner = run_ocikit) -> None:
    s = build(case, tmp_path)
    code, report = check_json(s.ref, run=run)
    assert_report_shape(report, s.ref, s.layout)
    found = assert_reported(report, case.rule, case.layer, case.alt)
    assert found["severity"] == case.severity
    if case.paths is not None:  # as written; a directory's trailing / may go (tar readers)
        assert [p.rstrip("/") for p in found["paths"]] == [p.rstrip("/") for p in case.paths]
    if case.resolved is not None:
        assert found["resolved"] == case.resolved, found
    expected_rules = {case.rule, *case.also, *case.alt}
    unexpected = [f for f in report["findings"] if f["rule"] not in expected_rules]
    assert not unexpected, f"findings beyond {expected_rules}: {unexpected}"
    if case.severity == "error":
        assert code == 1 and report["ok"] is False
    else:
        assert code == 0 and report["ok"] is True, report
        strict, _ = check_json(s.ref, "--strict", run=run)
        assert strict == 1, "--strict: a warning must fail the check"


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_check_human_output(case: Case, tmp_path: Path, run: Runner = run_ocikit) -> None:
    s = build(case, tmp_path)
    _, report = check_json(s.ref, run=run)
    proc = run("check", s.ref)
    assert proc.returncode == (1 if report["errors"] else 0)
    out = proc.stdout.decode()
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == len(report["findings"]), out
    assert any(rule in out for rule in (case.rule, *case.alt)), out
    assert "Traceback" not in proc.stderr.decode()
    quiet = run("check", "-q", s.ref)
    assert quiet.returncode == proc.returncode


def analyze(layers: list[bytes]) -> list[Finding]:
    """The analyzer alone on the layers' entries (read by ``TarStream``), as ``check`` feeds
    it: one tree, one ``LayerAnalyzer`` per layer, finished in order."""
    tree, findings = Tree(), []
    for i, layer in enumerate(layers):
        analyzer = LayerAnalyzer(tree, i)
        for n, entry in enumerate(TarStream(io.BytesIO(layer))):
            analyzer.feed(n, entry)
        analyzer.finish()
        findings += analyzer.findings
    return findings


@pytest.mark.parametrize("case", CASES, ids=ids)
@pytest.mark.usefixtures("tar_backend")  # both tar header parsers
def test_analyzer_alone(case: Case, tmp_path: Path) -> None:
    """The table of ``test_check_reports_rule`` on ``LayerAnalyzer`` itself: no layout, no
    compression, no command; the same rule, layer, paths and nothing beyond."""
    work = tmp_path / "work"
    layers = [tar_bytes(entries, format=case.format) for entries in case.layers(work)]
    findings = analyze(layers)
    summary = [(f.rule, f.layer, f.paths) for f in findings]
    found = [f for f in findings if f.rule in (case.rule, *case.alt) and f.layer == case.layer]
    assert found, f"no {case.rule} on layer {case.layer}: {summary}"
    assert found[0].severity == case.severity
    if case.paths is not None:
        assert [p.rstrip("/") for p in found[0].paths] == [p.rstrip("/") for p in case.paths]
    if case.resolved is not None:
        assert found[0].resolved == case.resolved, summary
    expected_rules = {case.rule, *case.also, *case.alt}
    unexpected = [f for f in summary if f[0] not in expected_rules]
    assert not unexpected, f"findings beyond {expected_rules}: {unexpected}"


# ---------------------------------------------------------------------------- unpack


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
@pytest.mark.usefixtures("tar_backend")  # both tar header parsers
def test_unpack_refuses_hostile(case: Case, tmp_path: Path, run: Runner = run_ocikit) -> None:
    s = build(case, tmp_path)
    before, passwd = tree(s.tmp), os.stat("/etc/passwd")
    proc = run("unpack", s.ref, str(s.dest), env=s.env)
    assert_one_line_error(proc)
    assert_untouched(s, before, passwd)
    assert not (s.tmp / "x").exists() and not (s.tmp / "sentinel-target").exists()


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_unpack_refuses_hostile_into_empty_dir(case: Case, tmp_path: Path) -> None:
    """DIR exists and is empty: it stays so."""
    s = build(case, tmp_path)
    s.dest.mkdir()
    before, passwd = tree(s.tmp), os.stat("/etc/passwd")
    proc = run_ocikit("unpack", s.ref, str(s.dest), env=s.env)
    assert_one_line_error(proc)
    assert s.dest.is_dir() and list(s.dest.iterdir()) == []
    s.dest.rmdir()
    before.pop(f"{s.dest.relative_to(s.tmp)}/")
    assert_untouched(s, before, passwd)


NOT_REFUSED = [c for c in CASES if c.unpack != "refuse"]


@pytest.mark.parametrize("case", NOT_REFUSED, ids=[c.id for c in NOT_REFUSED])
@pytest.mark.usefixtures("tar_backend")  # both tar header parsers
def test_unpack_other_cases(case: Case, tmp_path: Path, run: Runner = run_ocikit) -> None:
    s = build(case, tmp_path)
    before, passwd = tree(s.tmp), os.stat("/etc/passwd")
    proc = run("unpack", "-q", s.ref, str(s.dest), env=s.env)
    if case.unpack == "ok" or proc.returncode == 0:
        assert proc.returncode == 0, proc.stderr.decode()
        assert_only_dest_changed(s, before)
        if case.after_unpack is not None:
            case.after_unpack(s.dest)
    else:
        assert_one_line_error(proc)
        assert_untouched(s, before, passwd)


# ---------------------------------------------------------------------------- copy --repair


def _unchanged_layers(src: Path, dst: Path, report: dict[str, Any]) -> None:
    """Layers without a finding keep their blobs; every layer matches its diff_id."""
    before, after = image_layers(src), image_layers(dst)
    assert len(before) == len(after)
    touched = {f["layer"] for f in report["findings"]}
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        if i not in touched:
            assert a == b, f"layer {i} had nothing to repair but was rewritten"
    check_layers_match_diff_ids(read_layout(dst, "t"))


@pytest.mark.parametrize("case", UNSAFE, ids=[c.id for c in UNSAFE])
@pytest.mark.usefixtures("tar_backend")  # both tar header parsers
def test_repair_stops_on_unsafe(case: Case, tmp_path: Path, run: Runner = run_ocikit) -> None:
    s = build(case, tmp_path)
    out = tmp_path / "repaired"
    proc = repair(s.ref, out, env=s.env, run=run)
    assert_one_line_error(proc)
    assert not out.exists(), "a destination was left behind"
    assert list(s.tmpdir.iterdir()) == []


@pytest.mark.parametrize("case", UNSAFE, ids=[c.id for c in UNSAFE])
def test_repair_drop_unsafe(case: Case, tmp_path: Path, run: Runner = run_ocikit) -> None:
    s = build(case, tmp_path)
    _, report = check_json(s.ref, run=run)
    out = tmp_path / "repaired"
    proc = repair(s.ref, out, "--drop-unsafe", env=s.env, run=run)
    assert proc.returncode == 0, proc.stderr.decode()
    ref = f"oci:{out}:t"
    code, fixed = check_json(ref, run=run)
    assert code == 0, fixed["findings"]
    assert not findings_of(fixed, case.rule) or case.severity == "warning"
    _unchanged_layers(s.layout, out, report)
    # the result unpacks, and nothing goes anywhere else
    before = tree(s.tmp)
    done = run("unpack", "-q", ref, str(s.dest), env=s.env)
    assert done.returncode == 0, done.stderr.decode()
    assert_only_dest_changed(s, before)


SAFE = [c for c in CASES if c.repair != "unsafe"]


@pytest.mark.parametrize("case", SAFE, ids=[c.id for c in SAFE])
@pytest.mark.usefixtures("tar_backend")  # both tar header parsers
def test_repair_fixes(case: Case, tmp_path: Path, run: Runner = run_ocikit) -> None:
    s = build(case, tmp_path)
    _, report = check_json(s.ref, run=run)
    out = tmp_path / "repaired"
    proc = repair(s.ref, out, env=s.env, run=run)
    assert proc.returncode == 0, proc.stderr.decode()
    ref = f"oci:{out}:t"
    code, fixed = check_json(ref, run=run)
    assert code == 0, fixed["findings"]
    if case.repair == "fixed":
        assert fixed["findings"] == [], fixed["findings"]
        strict, _ = check_json(ref, "--strict", run=run)
        assert strict == 0
        _unchanged_layers(s.layout, out, report)
    else:  # kept: nothing rewritten at all
        assert [f["rule"] for f in fixed["findings"]] == [f["rule"] for f in report["findings"]]
        assert image_layers(out) == image_layers(s.layout)
    if case.after_repair is not None:
        case.after_repair(layer_tars(out))
    assert list(s.tmpdir.iterdir()) == []


# ---------------------------------------------------------------------------- Python API


def _to_json(report: Any) -> dict[str, Any]:
    data = report.to_dict()
    return json.loads(data) if isinstance(data, str | bytes) else data


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_python_api(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = build(case, tmp_path)
    monkeypatch.setenv("TMPDIR", str(s.tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)
    _, cli = check_json(s.ref)
    report = ocikit.check(s.ref)
    assert _to_json(report)["findings"] == cli["findings"]
    got = [(f.rule, f.severity, f.layer, list(f.paths), f.resolved) for f in report.findings]
    assert got == [
        (f["rule"], f["severity"], f["layer"], f["paths"], f["resolved"]) for f in cli["findings"]
    ]
    out = tmp_path / "repaired"
    if case.repair == "unsafe":
        with pytest.raises(ocikit.OcikitError) as err:
            ocikit.repair(s.ref, f"oci:{out}:t")
        assert err.value.exit_code == 2 and "\n" not in str(err.value)
        assert not out.exists()
        ocikit.repair(s.ref, f"oci:{out}:t", drop_unsafe=True)
    else:
        ocikit.repair(s.ref, f"oci:{out}:t")
    assert ocikit.check(f"oci:{out}:t").errors == 0
    if case.unpack == "refuse":
        before, passwd = tree(s.tmp), os.stat("/etc/passwd")
        with pytest.raises(ocikit.OcikitError) as err:
            ocikit.unpack(s.ref, str(s.dest))
        assert err.value.exit_code == 2
        assert_untouched(s, before, passwd)


# ---------------------------------------------------------------------------- integrity


L0 = tar_bytes([directory("etc"), file("etc/zero", "zero\n")])
L1 = tar_bytes([directory("srv"), file("srv/one", "one\n" * 100)])


def _flip_gzip_mtime(layout: Path, desc: dict[str, Any]) -> None:
    """Other bytes, same size, still the same valid gzip stream (the header's mtime)."""
    path = blob_path(layout, desc["digest"])
    data = bytearray(path.read_bytes())
    assert data[:2] == b"\x1f\x8b"
    data[4:8] = b"\x01\x02\x03\x04"
    path.write_bytes(bytes(data))


def _blob_digest(layout: Path) -> None:
    write_layout(layout, [L0, L1])
    _flip_gzip_mtime(layout, image_layers(layout)[1])


def _blob_size(delta: int) -> Callable[[Path], None]:
    def make(layout: Path) -> None:
        def edit(m: dict[str, Any]) -> None:
            m["layers"][1]["size"] += delta

        write_layout(layout, [L0, L1], edit_manifest=edit)

    return make


def _diff_id(layout: Path) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["rootfs"]["diff_ids"][1] = sha256(b"something else")

    write_layout(layout, [L0, L1], edit_config=edit)


def _diff_id_count(layout: Path) -> None:
    def edit(c: dict[str, Any]) -> None:
        c["rootfs"]["diff_ids"].append(sha256(L1 + b"x"))

    write_layout(layout, [L0, L1], edit_config=edit)


def _history_count(layout: Path) -> None:
    write_layout(layout, [L0, L1], history=[{"created_by": "only one"}])


def _media_type(media_type: str, compression: str = "gzip") -> Callable[[Path], None]:
    def make(layout: Path) -> None:
        write_layout(layout, [L0, L1], compression=compression, media_types=[None, media_type])

    return make


def _config_digest(layout: Path) -> None:
    write_layout(layout, [L0, L1], config_extra={"author": "ocikit-test"})
    path = blob_path(layout, _config_of(layout))
    data = path.read_bytes()
    assert b"ocikit-test" in data
    path.write_bytes(data.replace(b"ocikit-test", b"ocikit-tesT"))  # same size, valid JSON


def _config_of(layout: Path) -> str:
    return raw_manifest(layout)["config"]["digest"]


def _layer_not_tar(layout: Path) -> None:
    write_layout(layout, [L0, b"this is not a tar archive\n" * 100])


def _layer_truncated_gzip(layout: Path) -> None:
    # a gzip stream cut short, described truthfully: digest and size of the cut bytes
    from support.layouts import Blob

    cut = compress(L1, "gzip")[:-20]
    path = layout.parent / "cut.gz"
    path.write_bytes(cut)
    write_layout(layout, [L0, Blob(path, LAYER_GZIP, sha256(L1), sha256(cut), len(cut))])


@dataclass(frozen=True)
class Broken:
    id: str
    make: Callable[[Path], None]
    rule: str
    layer: int | None
    unreadable: bool  # a layer cannot be verified/read: unpack and copy --repair refuse


BROKEN = [
    Broken("blob-digest", _blob_digest, "blob-digest", 1, True),
    Broken("blob-size-larger", _blob_size(+1), "blob-size", 1, True),
    Broken("blob-size-smaller", _blob_size(-1), "blob-size", 1, True),
    Broken("diff-id", _diff_id, "diff-id", 1, True),
    Broken("diff-id-count", _diff_id_count, "diff-id-count", None, False),
    Broken("history-count", _history_count, "history-count", None, False),
    Broken("media-type-zstd-for-gzip", _media_type(LAYER_ZSTD), "media-type", 1, False),
    Broken("media-type-gzip-for-none", _media_type(LAYER_GZIP, "none"), "media-type", 1, False),
    Broken("media-type-not-a-layer", _media_type(OCI_CONFIG), "media-type", 1, False),
    Broken("config-digest", _config_digest, "config-digest", None, True),
    Broken("layer-not-tar", _layer_not_tar, "layer-unreadable", 1, True),
    Broken("layer-truncated-gzip", _layer_truncated_gzip, "layer-unreadable", 1, True),
]


@pytest.mark.parametrize("broken", BROKEN, ids=[b.id for b in BROKEN])
@pytest.mark.usefixtures("tar_backend")  # both tar header parsers
def test_check_broken_image(broken: Broken, tmp_path: Path, run: Runner = run_ocikit) -> None:
    s = scene(tmp_path)
    broken.make(s.layout)
    code, report = check_json(s.ref, run=run)
    assert_report_shape(report, s.ref, s.layout)
    assert code == 1, report
    assert_reported(report, broken.rule, broken.layer)
    # the image-level rules do not hide what the layers hold: layer 0 is fine
    assert not [f for f in report["findings"] if f["layer"] == 0], report["findings"]


@pytest.mark.parametrize("broken", [b for b in BROKEN if b.unreadable], ids=lambda b: b.id)
@pytest.mark.usefixtures("tar_backend")  # both tar header parsers
def test_unpack_and_repair_refuse_broken_image(
    broken: Broken, tmp_path: Path, run: Runner = run_ocikit
) -> None:
    s = scene(tmp_path)
    broken.make(s.layout)
    before, passwd = tree(s.tmp), os.stat("/etc/passwd")
    assert_one_line_error(run("unpack", s.ref, str(s.dest), env=s.env))
    assert_untouched(s, before, passwd)
    out = tmp_path / "repaired"
    assert_one_line_error(repair(s.ref, out, env=s.env, run=run))
    assert not out.exists()


# ---------------------------------------------------------------------------- the gzip bomb


@pytest.fixture(scope="module")
def bomb(tmp_path_factory: pytest.TempPathFactory):
    """A 1 GiB file of zeros, gzipped to ~1 MiB (ratio ~1000)."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.gz"
    blob = gzip_bomb(path)
    assert blob.size < (1 << 30) // 900, blob.size
    return blob


def test_decompression_bomb(bomb, tmp_path: Path) -> None:
    s = scene(tmp_path)
    write_layout(s.layout, [L0, bomb])
    started = time.monotonic()
    code, report = check_json(s.ref)
    elapsed = time.monotonic() - started
    assert_report_shape(report, s.ref, s.layout)
    assert code == 1
    assert_reported(report, "decompression-bomb", 1)
    assert elapsed < 30, f"check read the whole bomb? {elapsed:.1f} s"

    before, passwd = tree(s.tmp), os.stat("/etc/passwd")
    proc = run_ocikit("unpack", s.ref, str(s.dest), env=s.env)
    assert_one_line_error(proc)
    assert_untouched(s, before, passwd)


def test_max_ratio_raised_accepts_the_bomb(bomb, tmp_path: Path) -> None:
    """--max-ratio 5000: a 1000x layer is no bomb; everything else about it is right."""
    s = scene(tmp_path)
    write_layout(s.layout, [L0, bomb])
    code, report = check_json(s.ref, "--max-ratio", "5000")
    assert code == 0, report["findings"]
    assert report["findings"] == []
    code, report = check_json(s.ref, "--max-ratio", "2")  # 64 MiB is still the floor: L0 ok
    assert code == 1
    assert {f["layer"] for f in findings_of(report, "decompression-bomb")} == {1}


# ---------------------------------------------------------------------------- the clean image


def clean_layers() -> list[bytes]:
    long_name = "long/" + "n" * 120 + "/file"
    layer0 = tar_bytes(
        [
            directory("d"),
            file("d/a", "A\n"),
            file("d/b", "B\n"),
            file("x", "X\n", 0o755),
            hardlink("hl", "x"),
            directory("bin"),
            file("bin/tool", "#!/bin/sh\n", 0o755),
            symlink("link", "bin/tool"),
            symlink("outside-abs", "/etc/passwd"),  # a symlink alone is never hostile
            symlink("outside-rel", "../../.."),
            file("owned", "mine\n", 0o600, uid=1234, gid=2345),
            directory("private", 0o700),
            directory("empty"),
            fifo("fifo"),
            file("usr-file", "lower\n"),
        ]
    )
    layer1 = tar_bytes(  # GNU headers, a name over 100 bytes
        [
            directory("d"),
            opaque("d"),
            file("d/c", "C\n"),
            whiteout("x"),
            directory("e"),
            file("e/f", "F\n", 0o640),
            hardlink("e/g", "e/f"),
            hardlink("lower-link", "usr-file"),  # a file of a lower layer is there
            symlink("link2", "/d/c"),
            directory("bin"),  # a real directory over a real directory: fine
            file("bin/tool2", "2\n"),
            directory("long"),
            directory("long/" + "n" * 120),
            file(long_name, "long\n"),
        ],
        format="gnu",
    )
    layer2 = tar_bytes([directory("./d/"), file("./d/z", "Z\n"), whiteout("e/g")])
    return [layer0, layer1, layer2]


HISTORY = [
    {"created_by": "layer 0"},
    {"created_by": "ENV A=b", "empty_layer": True},
    {"created_by": "layer 1"},
    {"created_by": "layer 2"},
]


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
@pytest.mark.usefixtures("tar_backend")  # both tar header parsers
def test_clean_image(compression: str, tmp_path: Path) -> None:
    run = cli_ocikit if compression == "gzip" else run_ocikit  # each output form as a process
    s = scene(tmp_path)
    layers = clean_layers()
    write_layout(s.layout, layers, compression=compression, history=HISTORY)

    code, report = check_json(s.ref, "--strict", run=run)
    assert_report_shape(report, s.ref, s.layout)
    assert code == 0, report["findings"]
    assert report["findings"] == [] and report["ok"] is True
    assert report["entries"] == sum(len(read_entries(layer)) for layer in layers)
    human = run("check", s.ref)
    assert human.returncode == 0 and human.stdout.strip() == b"", human.stdout

    before = tree(s.tmp)
    proc = run("unpack", "--json", s.ref, str(s.dest), env=s.env)
    assert proc.returncode == 0, proc.stderr.decode()
    json.loads(proc.stdout)
    assert_only_dest_changed(s, before)
    root = s.dest

    def mode(rel: str) -> int:
        return stat.S_IMODE((root / rel).lstat().st_mode)

    assert sorted(os.listdir(root / "d")) == ["c", "z"], "opaque directory not applied"
    assert (root / "d" / "c").read_text() == "C\n" and (root / "d" / "z").read_text() == "Z\n"
    assert not os.path.lexists(root / "x"), "whiteout not applied"
    assert (root / "hl").read_text() == "X\n"  # the link outlives the whited-out name
    assert (root / "bin" / "tool").read_text() == "#!/bin/sh\n" and mode("bin/tool") == 0o755
    assert (root / "bin" / "tool2").read_text() == "2\n"
    assert os.readlink(root / "link") == "bin/tool"
    assert os.readlink(root / "link2") == "/d/c"
    assert os.readlink(root / "outside-abs") == "/etc/passwd"
    assert os.readlink(root / "outside-rel") == "../../.."
    assert (root / "e" / "f").read_text() == "F\n" and mode("e/f") == 0o640
    assert not os.path.lexists(root / "e" / "g"), "whiteout of a hardlink not applied"
    assert (root / "lower-link").stat().st_ino == (root / "usr-file").stat().st_ino
    assert (root / "lower-link").read_text() == "lower\n"
    assert mode("owned") == 0o600 and mode("private") == 0o700 and mode("d") == 0o755
    assert (root / "empty").is_dir() and os.listdir(root / "empty") == []
    assert stat.S_ISFIFO((root / "fifo").lstat().st_mode)
    assert (root / "long" / ("n" * 120) / "file").read_text() == "long\n"
    if os.geteuid() == 0:  # owners only as root
        st = (root / "owned").lstat()
        assert (st.st_uid, st.st_gid) == (1234, 2345)
    assert not any(
        name.startswith(".wh.") for _, dirs, files in os.walk(root) for name in dirs + files
    ), "a whiteout file was extracted"

    # nothing to repair: the same image
    out = tmp_path / "repaired"
    assert repair(s.ref, out, run=run).returncode == 0
    src, dst = read_layout(s.layout, "t"), read_layout(out, "t")
    if compression == "none":  # copy gzips uncompressed layers: same config, other blobs
        assert dst.manifest["config"] == src.manifest["config"]
        check_layers_match_diff_ids(dst)
    else:
        assert dst.manifest_digest == src.manifest_digest


def test_clean_image_python_api(tmp_path: Path) -> None:
    s = scene(tmp_path)
    write_layout(s.layout, clean_layers(), history=HISTORY)
    report = ocikit.check(s.ref)
    assert report.findings == [] or list(report.findings) == []
    ocikit.unpack(s.ref, str(s.dest))
    assert sorted(os.listdir(s.dest / "d")) == ["c", "z"]


def test_repair_keeps_a_config_with_a_lone_surrogate_escape(tmp_path: Path) -> None:
    """JSON may escape half a surrogate pair (``\\ud800``); the repaired config keeps the
    escape instead of failing to encode it (it was an internal error, exit 3)."""
    s = scene(tmp_path)
    layers = [tar_bytes([file("a", "1\n"), file("./a", "2\n")])]
    write_layout(s.layout, layers, config_extra={"config": {"Labels": {"odd": "\ud800"}}})
    fixed = tmp_path / "fixed"
    ocikit.repair(s.ref, f"oci:{fixed}:t")
    [config] = [
        p.read_bytes() for p in (fixed / "blobs" / "sha256").iterdir() if b"odd" in p.read_bytes()
    ]
    assert b'"odd":"\\ud800"' in config
    assert ocikit.check(f"oci:{fixed}:t").findings == []


def test_unpack_devices_as_root(tmp_path: Path) -> None:
    s = scene(tmp_path)
    write_layout(s.layout, [tar_bytes([directory("dev"), chardev("dev/null2", 1, 3)])])
    proc = run_ocikit("unpack", "-q", "--devices", s.ref, str(s.dest), env=s.env)
    assert proc.returncode == 0, proc.stderr.decode()
    node = s.dest / "dev" / "null2"
    if os.geteuid() == 0:
        st = node.lstat()
        assert stat.S_ISCHR(st.st_mode), oct(st.st_mode)
        assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    else:
        assert not os.path.lexists(node), "a device created by a non-root user?"


@pytest.mark.usefixtures("tar_backend")  # both tar header parsers
def test_unpack_takes_go_readable_extremes_as_docker_does(tmp_path: Path) -> None:
    """Go reads a PAX mtime of 2**63-1 seconds, or before the epoch, and device numbers
    beyond 32 bits; unpack used to crash on them (exit 3). Times outside what docker sets
    become the epoch, as docker makes them; a device that cannot exist is one line, exit 2."""
    from support.rawtar import END, member, pax

    s = scene(tmp_path)
    times = (
        pax([(b"mtime", b"9223372036854775807")])
        + member(b"late", b"x")
        + pax([(b"mtime", b"-1.5")])
        + member(b"early", b"y")
        + END
    )
    write_layout(s.layout, [times])
    proc = run_ocikit("unpack", "-q", s.ref, str(s.dest), env=s.env)
    assert proc.returncode == 0, proc.stderr.decode()
    assert [(s.dest / n).stat().st_mtime_ns for n in ("late", "early")] == [0, 0]
    if os.geteuid() != 0:
        return
    (tmp_path / "devices").mkdir()
    s = scene(tmp_path / "devices")
    dev = pax([(b"comment", b"x")]) + chardev_raw(b"dev/big", 1 << 40) + END
    write_layout(s.layout, [dev])
    proc = run_ocikit("unpack", "-q", "--devices", s.ref, str(s.dest), env=s.env)
    assert_one_line_error(proc, contains="out of range")


def chardev_raw(name: bytes, major: int) -> bytes:
    """A character device header whose major number needs GNU base-256."""
    from support.rawtar import header

    block = bytearray(header(name, b"3"))
    block[329:337] = b"\x80" + major.to_bytes(7, "big")
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def test_unpack_into_non_empty_dir(tmp_path: Path) -> None:
    s = scene(tmp_path)
    write_layout(s.layout, clean_layers())
    s.dest.mkdir()
    (s.dest / "keep").write_text("keep\n")
    before = tree(s.tmp)
    proc = cli_ocikit("unpack", s.ref, str(s.dest), env=s.env)
    assert_one_line_error(proc)
    assert tree(s.tmp) == before


def test_unpack_into_empty_dir(tmp_path: Path) -> None:
    s = scene(tmp_path)
    write_layout(s.layout, clean_layers())
    s.dest.mkdir()
    ok("unpack", "-q", s.ref, str(s.dest), env=s.env)
    assert sorted(os.listdir(s.dest / "d")) == ["c", "z"]


def test_unpack_opens_each_directory_about_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory's entries follow it in a tar: the extraction remembers the directories it
    made (and the parents it resolved) instead of walking from the root for every parent it
    changes to, and sets the directories' metadata along one chain of open directories.
    61 directories up to 12 deep: 124 directory opens, 1,873 before; each is a system call
    that costs the most on a busy file system."""
    deep = "/".join(f"d{i}" for i in range(11))
    members = [directory(f"{deep[: deep.find(f'd{i}') + len(f'd{i}')]}") for i in range(11)]
    for k in range(50):
        members.append(directory(f"{deep}/s{k}"))
        members += [file(f"{deep}/s{k}/f{j}", b"x") for j in range(3)]
    s = scene(tmp_path)
    write_layout(s.layout, [tar_bytes(members)])
    opened = {"dirs": 0}
    real_open = os.open

    def counting_open(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if flags & os.O_DIRECTORY:
            opened["dirs"] += 1
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", counting_open)
    ocikit.unpack(s.ref, str(s.dest))
    monkeypatch.undo()
    assert sorted(os.listdir(s.dest / deep)) == [f"s{k}" for k in sorted(range(50), key=str)]
    assert all(sorted(os.listdir(s.dest / deep / f"s{k}")) == ["f0", "f1", "f2"] for k in range(50))
    assert opened["dirs"] <= 3 * 61, opened  # about twice per directory (made, then set)


def test_unpack_after_a_directory_became_a_symlink_follows_the_symlink(tmp_path: Path) -> None:
    """A directory the extraction remembers, replaced by a symlink later in the same layer:
    what comes after goes where the symlink leads (inside the root), never into the
    directory it replaced."""
    s = scene(tmp_path)
    layer = tar_bytes(
        [
            directory("a"),
            file("a/f1", b"1"),
            directory("b"),
            symlink("a", "b"),  # replaces the directory a (and a/f1)
            file("a/f2", b"2"),
            directory("c"),
            directory("c/d"),
            file("c/d/f3", b"3"),
            symlink("c", "/b"),  # an absolute one: inside the root too
            file("c/f4", b"4"),
        ]
    )
    write_layout(s.layout, [layer])
    ocikit.unpack(s.ref, str(s.dest))
    assert os.readlink(s.dest / "a") == "b" and os.readlink(s.dest / "c") == "/b"
    assert sorted(os.listdir(s.dest / "b")) == ["f2", "f4"]
    assert sorted(os.listdir(s.dest)) == ["a", "b", "c"]


def test_check_bad_reference(tmp_path: Path) -> None:
    assert_one_line_error(cli_ocikit("check", f"oci:{tmp_path}/nothing:t"))
    assert_one_line_error(cli_ocikit("check", "--json", f"oci:{tmp_path}/nothing:t"))
    assert_one_line_error(cli_ocikit("check", "nope:x"))
    s = scene(tmp_path)
    write_layout(s.layout, clean_layers())
    assert_one_line_error(cli_ocikit("check", f"oci:{s.layout}:other"))
    assert_one_line_error(cli_ocikit("unpack", f"oci:{s.layout}:other", str(s.dest)))
    assert not s.dest.exists()


def test_check_platform(tmp_path: Path) -> None:
    from support.layouts import host_arch

    s = scene(tmp_path)
    write_layout(s.layout, clean_layers())
    code, _ = check_json(s.ref, "--platform", f"linux/{host_arch()}")
    assert code == 0


# ---------------------------------------------------------------------------- tricky but legal


@dataclass(frozen=True)
class Tricky:
    """An image a naive extractor would let write outside (following a symlink the kernel way),
    though no rule forbids it: unpack must succeed, inside DIR."""

    id: str
    layers: Callable[[Path], list[list[Entry]]]
    after_unpack: Callable[[Path, Path], None]  # (root, work)


def _rel(work: Path) -> str:
    return str(work).lstrip("/")


def _image_dirs(work: Path) -> list[Entry]:
    """Directory entries for each component of ``work``, inside the image."""
    parts = Path(_rel(work)).parts
    return [directory("/".join(parts[: i + 1])) for i in range(len(parts))]


def _replaced_symlink(root: Path, work: Path) -> None:
    assert not (root / "f").is_symlink() and (root / "f").read_text() == PWNED


def _hardlinked_symlink(root: Path, work: Path) -> None:
    assert (root / "h").is_symlink() and os.readlink(root / "h") == f"{work}/sentinel"
    assert (root / "h").lstat().st_ino == (root / "s").lstat().st_ino


def _dir_over_symlink(root: Path, work: Path) -> None:
    assert (root / "d").is_dir() and not (root / "d").is_symlink()
    assert (root / "d" / "sentinel").read_text() == PWNED


def _dir_mode_over_symlink(root: Path, work: Path) -> None:
    assert (root / "d").is_dir() and not (root / "d").is_symlink()


def _inside_absolute(root: Path, work: Path) -> None:
    assert (root / _rel(work) / "sentinel").read_text() == PWNED
    assert os.readlink(root / "s") == str(work)


def _inside_root_link(root: Path, work: Path) -> None:
    assert (root / "sentinel").read_text() == PWNED
    assert not os.path.lexists("/sentinel-ocikit-test"), "written at the host's /"


def _whiteout_of_link(root: Path, work: Path) -> None:
    assert not os.path.lexists(root / "evil")


def _hardlink_over_symlink(root: Path, work: Path) -> None:
    assert (root / "f").lstat().st_ino == (root / "g").lstat().st_ino
    assert (root / "f").read_text() == "G\n"


def _through_dotdot_link(root: Path, work: Path) -> None:
    assert (root / "sentinel").read_text() == PWNED


TRICKY = [
    Tricky(
        "symlink-chain-40",  # 40 links: followed
        lambda w: [
            [directory("real")]
            + [symlink(f"l{i}", f"l{i + 1}") for i in range(39)]
            + [symlink("l39", "real")],
            [file("l0/x", "X\n")],
        ],
        lambda root, work: None if (root / "real" / "x").read_text() == "X\n" else pytest.fail(),
    ),
    Tricky(
        "opaque-dir-over-escaping-symlink",  # the new directory is opaque, not what d pointed to
        lambda w: [[symlink("d", "..")], [directory("d"), opaque("d"), file("d/n", "N\n")]],
        lambda root, work: None if os.listdir(root / "d") == ["n"] else pytest.fail(),
    ),
    Tricky(
        "file-over-absolute-symlink",
        lambda w: [[symlink("f", f"{w}/sentinel")], [file("f", PWNED)]],
        _replaced_symlink,
    ),
    Tricky(
        "file-over-relative-symlink",
        lambda w: [[symlink("f", "../sentinel")], [file("f", PWNED)]],
        _replaced_symlink,
    ),
    Tricky(
        "hardlink-to-symlink",  # link(2) of the symlink itself, never of what it points to
        lambda w: [[symlink("s", f"{w}/sentinel"), hardlink("h", "s")]],
        _hardlinked_symlink,
    ),
    Tricky(
        "hardlink-over-symlink",
        lambda w: [[symlink("f", "../sentinel"), file("g", "G\n")], [hardlink("f", "g")]],
        _hardlink_over_symlink,
    ),
    Tricky(
        "dir-over-absolute-symlink",  # mkdir, chmod, chown of what the link points to?
        lambda w: [[symlink("d", str(w))], [directory("d", 0o777, uid=4321, gid=4321)]],
        _dir_mode_over_symlink,
    ),
    Tricky(
        "dir-and-file-over-absolute-symlink",
        lambda w: [[symlink("d", str(w))], [directory("d"), file("d/sentinel", PWNED)]],
        _dir_over_symlink,
    ),
    Tricky(
        "absolute-symlink-resolved-inside",
        lambda w: [[*_image_dirs(w), symlink("s", str(w))], [file("s/sentinel", PWNED)]],
        _inside_absolute,
    ),
    Tricky(
        "symlink-to-slash",
        lambda w: [[symlink("r", "/")], [file("r/sentinel", PWNED)]],
        _inside_root_link,
    ),
    Tricky(
        "symlink-through-dotdot-inside",  # d/.. is the root
        lambda w: [[directory("d"), symlink("up", "d/..")], [file("up/sentinel", PWNED)]],
        _through_dotdot_link,
    ),
    Tricky(
        "whiteout-of-escaping-symlink",  # removes the link, not what it points to
        lambda w: [[symlink("evil", str(w))], [whiteout("evil")]],
        _whiteout_of_link,
    ),
    Tricky(
        "whiteout-of-relative-escaping-symlink",
        lambda w: [[symlink("evil", "..")], [whiteout("evil")]],
        _whiteout_of_link,
    ),
]


@pytest.mark.parametrize("tricky", TRICKY, ids=[t.id for t in TRICKY])
@pytest.mark.usefixtures("tar_backend")  # both tar header parsers
def test_unpack_tricky_stays_inside(tricky: Tricky, tmp_path: Path) -> None:
    s = scene(tmp_path)
    write_layout(s.layout, [tar_bytes(entries) for entries in tricky.layers(s.work)])
    _, report = check_json(s.ref)
    assert_report_shape(report, s.ref, s.layout)
    errors = [f for f in report["findings"] if f["severity"] == "error"]
    before, passwd = tree(s.tmp), os.stat("/etc/passwd")
    proc = run_ocikit("unpack", "-q", s.ref, str(s.dest), env=s.env)
    try:
        if proc.returncode == 0:
            assert_only_dest_changed(s, before)
            tricky.after_unpack(s.dest, s.work)
        else:
            assert_one_line_error(proc)
            assert_untouched(s, before, passwd)
            pytest.fail(f"unpack refused a legal image: {proc.stderr.decode().strip()}")
        assert not errors, f"check reports errors on a legal image: {errors}"
    finally:
        if os.path.lexists("/sentinel-ocikit-test"):
            os.unlink("/sentinel-ocikit-test")


# ---------------------------------------------------------------------------- other forms


@pytest.mark.parametrize("compression", ["zstd", "none"])
@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_hostile_other_compressions(case: Case, compression: str, tmp_path: Path) -> None:
    s = scene(tmp_path)
    layers = [tar_bytes(entries, format=case.format) for entries in case.layers(s.work)]
    write_layout(s.layout, layers, compression=compression)
    code, report = check_json(s.ref)
    assert code == 1
    assert_reported(report, case.rule, case.layer, case.alt)
    before, passwd = tree(s.tmp), os.stat("/etc/passwd")
    assert_one_line_error(run_ocikit("unpack", s.ref, str(s.dest), env=s.env))
    assert_untouched(s, before, passwd)


PIPED = [
    c
    for c in CASES
    if c.id
    in {
        "name-traversal",
        "symlink-lower-layer",
        "root-symlink-dot",
        "hardlink-escape-sentinel",
        "dup-dot-slash",
        "through-symlink",
        "replaces-symlinked-dir",
    }
]


@pytest.mark.parametrize("case", PIPED, ids=[c.id for c in PIPED])
def test_docker_archive_from_a_pipe(case: Case, tmp_path: Path) -> None:
    """The same image as a docker-archive (plain ``copy`` does not judge content), read from
    stdin: the same findings; unpack from stdin refuses the same way."""
    s = build(case, tmp_path)
    archive = tmp_path / "image.docker.tar"
    ok("copy", "-q", s.ref, f"docker-archive:{archive}:corpus/{case.id}:1")
    _, from_oci = check_json(s.ref)
    with archive.open("rb") as f:
        proc = cli_ocikit("check", "--json", "docker-archive:-", input=f.read())
    assert proc.returncode == (1 if from_oci["errors"] else 0), proc.stderr.decode()
    piped = json.loads(proc.stdout)

    def key(f: dict[str, Any]) -> tuple:
        return (f["rule"], f["severity"], f["layer"], f["paths"], f["resolved"])

    assert [key(f) for f in piped["findings"]] == [key(f) for f in from_oci["findings"]]
    # the digests differ (uncompressed layers), the indexes do not
    assert piped["layers"] == from_oci["layers"] and piped["entries"] == from_oci["entries"]
    if case.unpack == "refuse":
        before, passwd = tree(s.tmp), os.stat("/etc/passwd")
        with archive.open("rb") as f:
            unpacked = cli_ocikit("unpack", "docker-archive:-", str(s.dest), stdin=f, env=s.env)
        assert_one_line_error(unpacked)
        assert_untouched(s, before, passwd)
    # copy --repair from the pipe to an OCI layout
    out = tmp_path / "repaired"
    with archive.open("rb") as f:
        args = ["copy", "-q", "--repair", "--drop-unsafe", "docker-archive:-", f"oci:{out}:t"]
        repaired = cli_ocikit(*args, stdin=f, env=s.env)
    assert repaired.returncode == 0, repaired.stderr.decode()
    code, fixed = check_json(f"oci:{out}:t")
    assert code == 0, fixed["findings"]


# ---------------------------------------------------------------------------- as a process


def _case(case_id: str) -> Case:
    (case,) = [c for c in CASES if c.id == case_id]
    return case


def _broken(broken_id: str) -> Broken:
    (broken,) = [b for b in BROKEN if b.id == broken_id]
    return broken


# the tests above, through the real command for a sample: an error that is refused (exit 1
# from check, 2 from unpack and copy --repair), a warning (exit 0, 1 with --strict) that
# repair fixes and unpack takes, a warning repair keeps, a broken image
AS_A_PROCESS = [
    (test_check_reports_rule, "name-traversal"),
    (test_check_reports_rule, "through-symlink"),
    (test_check_human_output, "name-traversal"),
    (test_check_human_output, "through-symlink"),
    (test_unpack_refuses_hostile, "name-traversal"),
    (test_unpack_other_cases, "through-symlink"),
    (test_repair_stops_on_unsafe, "name-traversal"),
    (test_repair_drop_unsafe, "name-traversal"),
    (test_repair_fixes, "through-symlink"),
    (test_repair_fixes, "whiteout-same-layer"),
    (test_check_broken_image, "blob-digest"),
    (test_unpack_and_repair_refuse_broken_image, "blob-digest"),
]


@pytest.mark.parametrize(
    ("test", "which"),
    AS_A_PROCESS,
    ids=[f"{test.__name__.removeprefix('test_')}-{which}" for test, which in AS_A_PROCESS],
)
def test_as_a_process(test: Callable[..., None], which: str, tmp_path: Path) -> None:
    subject: Case | Broken = _broken(which) if which == "blob-digest" else _case(which)
    test(subject, tmp_path, cli_ocikit)
