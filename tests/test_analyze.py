"""Property tests of the path normalizer, the duplicate detector and the repairing rewriter."""

from __future__ import annotations

import os
import posixpath
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import ocikit
from ocikit.layer.analyze import LayerAnalyzer, Tree
from ocikit.layer.paths import clean, go_clean
from ocikit.layer.tarstream import TarEntry
from support.layouts import directory, file, symlink, tar_bytes, write_layout

# ---------------------------------------------------------------------------- the normalizer

segment = st.sampled_from(["a", "b", ".", "..", "", "c.d", ".wh.x", "ü"])
raw_names = st.lists(segment, min_size=1, max_size=6).map("/".join)


@given(raw_names)
def test_clean_is_posix_normpath_inside_the_root(name: str) -> None:
    c = clean(name)
    assert all(p not in ("", ".", "..") for p in c.parts)
    assert clean(c.path).parts == c.parts  # idempotent
    assert c.absolute == name.startswith("/")
    if not c.escapes:  # inside the root, it is exactly normpath of the root-relative name
        assert c.path == posixpath.normpath("/" + name).lstrip("/")


@given(raw_names)
def test_escape_is_reported_not_dropped(name: str) -> None:
    depth, escaped = 0, False
    for p in name.split("/"):
        if p == "..":
            depth -= 1
            escaped |= depth < 0
            depth = max(depth, 0)
        elif p not in ("", "."):
            depth += 1
    assert clean(name).escapes == escaped


@pytest.mark.parametrize(
    ("name", "cleaned"),
    [
        ("a/../..", ".."),
        ("/..", "/"),
        ("", "."),
        ("./", "."),
        ("/a/", "/a"),
        ("a//b/./c/..", "a/b"),
        ("../a", "../a"),
        ("/../a", "/a"),
        ("//", "/"),
        ("a/./", "a"),
    ],
)
def test_go_clean_is_filepath_clean(name: str, cleaned: str) -> None:
    """Values from Go's path/filepath documentation and tests."""
    assert go_clean(name) == cleaned


# ---------------------------------------------------------------------- the duplicate detector

variant = st.sampled_from(["{}", "./{}", "{}/", "/{}", ".//{}", "{}/."])
base_names = st.sampled_from(["a", "b", "d/x", "d/y"])


def _entry(name: str, kind: str = "f") -> TarEntry:
    t = {"f": tarfile.REGTYPE, "d": tarfile.DIRTYPE}[kind]
    return TarEntry(name=name, type=t, size=0)


@given(st.lists(st.tuples(base_names, variant), max_size=12))
def test_duplicates_are_exactly_the_names_that_clean_alike(items: list[tuple[str, str]]) -> None:
    """As docker's loader compares names: Go's filepath.Clean (``/a`` is not ``a``: docker
    loads a layer with both, checked with the engine)."""
    analyzer = LayerAnalyzer(Tree(), 0)
    analyzer.feed(0, _entry("d/", "d"))
    names = [v.format(b) for b, v in items]
    for i, name in enumerate(names, start=1):
        analyzer.feed(i, _entry(name))
    analyzer.finish()
    dups = [f for f in analyzer.findings if f.rule == "duplicate-path"]
    cleaned = [go_clean(n) for n in names]
    assert len(dups) == len(cleaned) - len(set(cleaned))
    for f in dups:
        first, second = f.paths
        assert go_clean(first) == go_clean(second)


# ------------------------------------------------------------------------- the rewriter

# entries over a usrmerged base (bin -> usr/bin); no directory replaces a symlink here, so
# extraction (last entry wins, parents resolved through symlinks) and the repaired layer agree
NAMES = [
    "usr/bin/a",
    "./usr/bin/a",
    "bin/a",
    "bin/b",
    "usr/bin/b",
    "usr/bin/d/",
    "usr/bin/d",
    "bin/d/x",
    "usr/bin/d/y",
    "usr/bin/",
    "./usr/",
    "usr/lib/",
    "usr/lib/z",
    "lnk/c",
]
kinds = st.sampled_from(["file", "file", "dir", "symlink"])
layer_entries = st.lists(
    st.tuples(st.sampled_from(NAMES), kinds, st.binary(max_size=8)), min_size=1, max_size=10
)

BASE = tar_bytes(
    [
        directory("usr"),
        directory("usr/bin"),
        file("usr/bin/busybox", b"bb"),
        symlink("bin", "usr/bin"),
        directory("usr/lib"),
        symlink("lnk", "/usr/lib"),
    ]
)


def _layer(items: list[tuple[str, str, bytes]]) -> bytes:
    out = []
    for name, kind, data in items:
        bare = name.rstrip("/")
        if kind == "dir" or name.endswith("/"):
            out.append(directory(bare))
        elif kind == "symlink":
            out.append(symlink(bare, "busybox"))
        else:
            out.append(file(bare, data))
    return tar_bytes(out)


def _tree(root: Path) -> dict[str, tuple[str, bytes | str]]:
    out: dict[str, tuple[str, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath, n)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("symlink", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", b"")
            else:
                out[rel] = ("file", p.read_bytes())
    return out


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(items=layer_entries)
def test_repair_keeps_what_extraction_leaves_and_passes_check(
    items: list[tuple[str, str, bytes]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    tmp = tmp_path_factory.mktemp("repair")
    write_layout(tmp / "src", [BASE, _layer(items)])
    try:
        original = ocikit.unpack("oci:" + str(tmp / "src") + ":t", tmp / "a")
    except ocikit.UnsafeInputError:
        assume(False)  # a file used as a directory: neither extraction nor repair can proceed
    del original
    try:
        result = ocikit.repair(f"oci:{tmp / 'src'}:t", f"oci:{tmp / 'dst'}:t")
    except ocikit.UnsafeInputError:  # dropping a path replaced after a symlink... must be real
        report = ocikit.check(f"oci:{tmp / 'src'}:t")
        assert report.errors
        return
    report = ocikit.check(f"oci:{tmp / 'dst'}:t")
    assert report.errors == 0, [str(f) for f in report.findings]
    assert not [f for f in report.findings if f.rule == "through-symlink"]
    # the untouched base layer keeps its digest
    assert result.layers[0].digest == ocikit.inspect(f"oci:{tmp / 'src'}:t")["layers"][0]["digest"]
    ocikit.unpack(f"oci:{tmp / 'dst'}:t", tmp / "b")
    assert _tree(tmp / "a") == _tree(tmp / "b")


def test_repair_of_a_clean_image_changes_nothing(tmp_path: Path) -> None:
    digest = write_layout(tmp_path / "src", [BASE, tar_bytes([file("usr/bin/x", b"1")])])
    result = ocikit.repair(f"oci:{tmp_path / 'src'}:t", f"oci:{tmp_path / 'dst'}:t")
    assert result.repaired == []
    assert result.manifest_digest == digest
