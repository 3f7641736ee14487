"""The native core of builds (``ocikit._filecore``) against the pure-Python path it replaces.

Layers are reproducible bit for bit whichever path made them: a varied tree (long and
non-UTF-8 names, files past the in-memory limit, hardlinks, symlinks, empty files, modes,
owners and mtimes past the ustar fields) gives the same layer digest on both, and so does
every header (hypothesis) and every write the layer's encoder sees. The C refuses what the
Python path refuses, and then hands the file back: a file replaced by a symlink, a fifo or
another file between its lstat and its open is never read, and the build fails with the
Python path's own words. (The build suites run on both paths too: ``file_backend``.)"""

from __future__ import annotations

import gc
import gzip
import hashlib
import io
import json
import os
import signal
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ocikit
from ocikit.build import engine, placement
from ocikit.build import imports as imports_mod
from ocikit.build.imports import INLINE_MAX, Entry, ImportContent, read_import
from ocikit.build.recipe import BuildError, Import
from ocikit.errors import InputError, UsageError
from ocikit.layer import tarwriter
from ocikit.layer.analyze import Kind, Node, Tree
from ocikit.layer.streams import CHUNK
from ocikit.layer.tarwriter import TarOutput, tar_header
from support.backends import FILE as filebackend

pytestmark = pytest.mark.skipif(
    filebackend.missing("native") is not None, reason="ocikit._filecore is not built"
)

_native: Any = filebackend.module
REF_NAME = "org.opencontainers.image.ref.name"
UID = 3_000_000  # past the ustar field (07777777): a PAX record

RECIPE = f"""
images:
  app:
    from: scratch
    imports:
      - {{src: tree, dest: /opt/tree, owner: "{UID}:{UID + 1}"}}
      - {{src: tree/exec.sh, dest: /bin/run, mode: "4755"}}
"""


def _varied_tree(root: Path) -> None:
    """Every kind of entry an import takes, and every header field past ustar's."""
    tree = root / "tree"
    deep = tree / ("d" * 60) / ("e" * 60)  # a path past 100 bytes
    deep.mkdir(parents=True)
    (deep / ("f" * 90)).write_bytes(b"long name\n")
    (tree / "empty").write_bytes(b"")
    (tree / "exec.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (tree / "exec.sh").chmod(0o750)
    (tree / "grüße.txt").write_text("unicode name\n")
    (tree / os.fsdecode(b"raw\xff\xfename")).write_bytes(b"not UTF-8\n")
    (tree / "big.bin").write_bytes(os.urandom(INLINE_MAX + 1))
    (tree / "edge.bin").write_bytes(b"e" * INLINE_MAX)  # the largest file kept in memory
    (tree / "pages.bin").write_bytes(b"p" * (CHUNK + 1000))  # past one read of the stream
    (tree / "rounded").write_bytes(b"r\n")
    (tree / "orig").write_bytes(b"linked\n")
    os.link(tree / "orig", tree / "zlink")  # a hardlink after its target
    os.link(tree / "orig", tree / "alink")  # ... and one before it
    (tree / "ln-short").symlink_to("orig")
    (tree / "ln-long").symlink_to("/" + "t" * 150)  # a target past 100 bytes
    (tree / "ln-ü").symlink_to("ziel-ü")
    sub = tree / "sub"
    sub.mkdir()
    for i in range(40):  # a directory of many small files: one batch
        (sub / f"s{i:02}").write_bytes(bytes([i]) * (i * 97))
    times = {
        "empty": (-5, 0),  # before 1970: clamped to 0 in the header
        "rounded": (1_700_000_000, 999_999_999),  # a float st_mtime rounds this up: both paths
        "big.bin": (10**10, 0),  # past the ustar mtime field: a PAX record
        "grüße.txt": (-2, 500_000_000),  # int(-1.5) is -1
    }
    for path in sorted(tree.rglob("*"), key=lambda p: -len(p.parts)):
        name = path.name
        sec, nsec = times.get(name, (1_600_000_000 + len(name), 0))
        ns = sec * 1_000_000_000 + nsec
        os.utime(path, ns=(ns, ns), follow_symlinks=False)


def _build(ctx: Path, where: Path, backend: str, **options: Any) -> ocikit.BuildResult:
    with filebackend.use(backend):
        return ocikit.build(
            ctx / "ocikit.yaml",
            ocikit.BuildOptions(
                output=f"oci:{where / 'out'}", cache_dir=str(where / "cache"), **options
            ),
        )


@pytest.mark.parametrize("budget", [imports_mod.INLINE_BUDGET, 3000])
def test_a_varied_tree_gives_the_same_layer_on_both_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, budget: int
) -> None:
    """``budget``: the bytes of small files kept in memory (3000: it runs out inside the
    tree, and the rest are read again when the layer is written). The native core is given
    a directory's names 7 at a time (4096 in a build: its memory per call is bounded)."""
    monkeypatch.setattr(engine, "INLINE_BUDGET", budget)
    monkeypatch.setattr(imports_mod, "SCAN_BATCH", 7)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "ocikit.yaml").write_text(RECIPE)
    _varied_tree(ctx)
    results = {}
    for backend in filebackend.BACKENDS:
        result = _build(ctx, tmp_path / backend, backend, epoch=None)  # mtimes as they are
        layers = _manifest(tmp_path / backend / "out")["layers"]
        results[backend] = ([i.key for i in result.images], layers)
    assert results["native"] == results["python"]  # (the configs say when: now)
    # what both wrote: every kind of entry is there, and past ustar where the tree is
    members = _members(tmp_path / "native" / "out")
    assert members["opt/tree/big.bin"].size == INLINE_MAX + 1
    assert members["opt/tree/big.bin"].mtime == 10**10
    assert members["opt/tree/empty"].mtime == 0
    assert members["opt/tree/rounded"].mtime == 1_700_000_001
    assert members["opt/tree/grüße.txt"].mtime == 0  # int(-1.5) = -1, clamped
    assert members["opt/tree/ln-long"].linkname == "/" + "t" * 150
    assert members["opt/tree/sub/s39"].uid == UID
    assert members["bin/run"].mode == 0o4755
    linked = {n for n, m in members.items() if m.islnk()}
    assert linked == {"opt/tree/orig", "opt/tree/zlink"}  # the first one holds the data
    assert members["opt/tree/orig"].linkname == "opt/tree/alink"


def _manifest(layout: Path) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_bytes())
    [desc] = [d for d in index["manifests"] if d["annotations"][REF_NAME] == "app"]
    manifest: dict[str, Any] = json.loads(_blob(layout, desc["digest"]))
    return manifest


def _blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def _members(layout: Path) -> dict[str, tarfile.TarInfo]:
    data = gzip.decompress(_blob(layout, _manifest(layout)["layers"][-1]["digest"]))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name.rstrip("/"): m for m in tar.getmembers()}


def test_the_import_entries_are_the_same_on_both_paths(tmp_path: Path) -> None:
    """What the key is made of: every entry's metadata and hash, and the import's digest."""
    _varied_tree(tmp_path)
    seen = {}
    for backend in filebackend.BACKENDS:
        with filebackend.use(backend):
            content = read_import(Import(src="tree", dest="/t"), "imports[0]", tmp_path, None)
        try:
            entries = [
                (e.rel, e.kind, e.mode, e.uid, e.gid, e.mtime, e.size, e.sha256, e.target)
                for e in content.entries
            ]
            kept = {e.rel for e in content.entries if e.inline is not None}
            seen[backend] = (content.digest, entries, kept)
        finally:
            content.close()
    assert seen["native"] == seen["python"]


# -- headers and writes ------------------------------------------------------------------------

_names = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), min_size=1, max_size=130
) | st.binary(min_size=1, max_size=130).filter(lambda b: b"\0" not in b).map(os.fsdecode)
_numbers = st.integers(-(1 << 40), 1 << 40) | st.sampled_from(
    [0, 0o7777777, 0o7777777 + 1, 0o77777777777, 0o77777777777 + 1, (1 << 63) - 1, 1 << 64, -1]
)


@settings(max_examples=300, deadline=None)
@given(
    name=_names,
    link=_names | st.just(""),
    kind=st.sampled_from([b"0", b"1", b"2", b"3", b"5", b"00", b""]),
    size=_numbers,
    mode=_numbers,
    uid=_numbers,
    gid=_numbers,
    mtime=_numbers,
    dev=st.sampled_from([0, 1, 0o7777777, 0o7777777 + 1, -1]),
)
def test_headers_are_the_same_bytes(
    name: str,
    link: str,
    kind: bytes,
    size: int,
    mode: int,
    uid: int,
    gid: int,
    mtime: int,
    dev: int,
) -> None:
    """C's header is Python's, byte for byte, or C hands the entry back (None) and Python's
    is written: never another header."""
    made = _native.tar_header(name, kind, size, mode, uid, gid, mtime, link, dev, dev)
    # handed back where (and only where) C's rules say so: then Python's is written
    fits = all(-(1 << 63) <= n < 1 << 63 for n in (size, mode, uid, gid, mtime))
    handed = len(kind) != 1 or min(size, uid, gid, dev) < 0 or dev > 0o7777777 or not fits
    assert (made is None) == handed
    if not 0 <= dev <= 0o7777777:  # no header holds it: refused on both paths
        for path in filebackend.BACKENDS:
            with filebackend.use(path), pytest.raises(InputError, match="does not fit"):
                tar_header(name, kind, size, mode, uid, gid, mtime, link, None, dev, dev)
        return
    with filebackend.use("python"):
        python = tar_header(name, kind, size, mode, uid, gid, mtime, link, None, dev, dev)
    if made is not None:
        assert made == python
    with filebackend.use("native"):  # the module's function: one or the other, the same
        assert tar_header(name, kind, size, mode, uid, gid, mtime, link, None, dev, dev) == python


def test_xattrs_are_written_by_python() -> None:
    """An entry with xattrs: Python's header on both paths (C leaves xattrs to it)."""
    args = ("f", b"0", 3, 0o644, 0, 0, 0, "", {"user.k": b"v"})
    with filebackend.use("python"):
        python = tar_header(*args)
    with filebackend.use("native"):
        assert tar_header(*args) == python
    assert b"SCHILY.xattr.user.k=v" in python


class _Writes(io.RawIOBase):
    """Every write the layer's encoder would see, as it saw it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.writes.append(bytes(data))
        return len(data)


def test_entries_are_the_same_writes_on_both_paths() -> None:
    """The tar's bytes, and where its writes are cut (the gzip writer's blocks end there, so
    the compressed layer depends on it), are the same on both paths, flushes included."""
    sizes = [0, 1, 511, 512, 513, 64 << 10, 300 << 10, 700 << 10, 5, 1 << 20, 3, 0] * 3
    outs = {}
    for backend in filebackend.BACKENDS:
        with filebackend.use(backend):
            out = _Writes()
            tar = TarOutput(out)  # type: ignore[arg-type]
            for i, size in enumerate(sizes):
                name = f"d/{'n' * (i * 7 % 130)}{i}"
                tar.entry(name + "/", b"5", 0, 0o755, 0, 0, i)
                tar.entry(name, b"0", size, 0o644, i, 3_000_000, 1 << i, "", bytes([i]) * size)
                tar.entry(name + "l", b"2", 0, 0o777, 0, 0, 0, "t" * i * 9)
            tar.finish()
            outs[backend] = out.writes
    assert [len(w) for w in outs["native"]] == [len(w) for w in outs["python"]]
    assert outs["native"] == outs["python"]


def test_put_hands_back_what_it_does_not_write() -> None:
    buf = bytearray(b"x" * 10)
    # would reach the flush limit: not written, the buffer as it was
    assert not _native.put(buf, 600, "f", b"0", 100, 0o644, 0, 0, 0, "", b"d" * 100)
    # a number it leaves to Python
    assert not _native.put(buf, CHUNK, "f", b"0", 0, 0o644, -1, 0, 0, "", None)
    assert buf == b"x" * 10
    with pytest.raises(ValueError):  # content and size disagree: a bug, said
        _native.put(buf, CHUNK, "f", b"0", 2, 0o644, 0, 0, 0, "", b"abc")
    assert _native.put(buf, CHUNK, "f", b"0", 3, 0o644, 0, 0, 0, "", b"abc")
    assert len(buf) == 10 + 512 + 512 and buf[522:525] == b"abc"


# -- the scan: what it reads, what it refuses -------------------------------------------------


def _dir_fd(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


def test_scan_reads_and_hashes_as_hashlib_does(tmp_path: Path) -> None:
    contents = {
        "a": b"",
        "b": b"x" * 100,
        "c": b"y" * INLINE_MAX,
        "d": os.urandom(INLINE_MAX + 1),
        "e": b"z" * 10,
    }
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "l").symlink_to("a" * 300)
    (tmp_path / "sub").mkdir()
    os.mkfifo(tmp_path / "fifo")
    names = sorted(os.listdir(tmp_path))
    fd = _dir_fd(tmp_path)
    try:
        results = dict(zip(names, _native.scan(fd, names, INLINE_MAX, 150), strict=True))
    finally:
        os.close(fd)
    for name, data in contents.items():
        st, (size, sha256, kept) = results[name]
        assert st.st_ino == os.lstat(tmp_path / name).st_ino
        assert (size, sha256) == (len(data), hashlib.sha256(data).hexdigest())
        # kept in memory while the budget lasts (150 bytes: a, b, not c, then e), and never
        # past INLINE_MAX
        assert kept == (data if name in ("a", "b", "e") else None), name
    assert results["l"][1] == "a" * 300
    assert results["sub"][1] is None and results["fifo"][1] is None  # not opened
    assert os.path.isdir(tmp_path / "sub")


Swap = Callable[[Path], None]


def _to_symlink(secret: Path) -> Swap:
    def swap(path: Path) -> None:
        path.unlink()
        path.symlink_to(secret)

    return swap


def _to_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _to_other_file(path: Path) -> None:
    path.rename(path.with_name("old"))  # the old inode lives on: never the same number
    path.write_bytes(b"other content\n")


def _removed(path: Path) -> None:
    path.unlink()


CHANGES = ["symlink", "fifo", "other", "removed"]


def _swaps(tmp_path: Path) -> Iterator[tuple[str, Swap, str]]:
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"SECRET" * 100)
    yield "symlink", _to_symlink(secret), "a symlink where a file was listed"
    yield "fifo", _to_fifo, "a fifo where a file was listed"
    yield "other", _to_other_file, "replaced by another file while it was read"
    yield "removed", _removed, "removed while it was read"


@pytest.mark.parametrize("case", CHANGES)
def test_scan_refuses_a_file_changed_after_its_lstat(tmp_path: Path, case: str) -> None:
    """Hand-built: the file listed is replaced before the scan opens it. Nothing is read
    (a fifo would block the open, a symlink's target is the host's): it is handed back."""
    [(_, swap, _words)] = [s for s in _swaps(tmp_path) if s[0] == case]
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_bytes(b"listed\n")
    (ctx / "g").write_bytes(b"untouched\n")
    listed = [os.lstat(ctx / "f"), os.lstat(ctx / "g")]
    swap(ctx / "f")
    fd = _dir_fd(ctx)
    try:
        [(st_f, done_f), (st_g, done_g)] = _native.scan(fd, ["f", "g"], INLINE_MAX, 1 << 20, listed)
    finally:
        os.close(fd)
    assert st_f is listed[0] and done_f is None  # handed back, unread
    assert st_g is listed[1] and done_g[2] == b"untouched\n"


@pytest.mark.parametrize("case", CHANGES)
def test_a_file_changed_during_the_walk_fails_in_the_same_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """The walk meets a file changed between its lstat and its open: the same error on both
    paths (the C hands it back, and the Python path's open says what it found)."""
    [(_, swap, words)] = [s for s in _swaps(tmp_path) if s[0] == case]
    errors = {}
    for backend in filebackend.BACKENDS:
        ctx = tmp_path / backend
        (ctx / "tree").mkdir(parents=True)
        (ctx / "tree" / "a").write_bytes(b"a\n")
        (ctx / "tree" / "f").write_bytes(b"listed\n")
        with filebackend.use(backend), monkeypatch.context() as m:
            _open_window(m, backend, lambda f=ctx / "tree" / "f": swap(f))
            with pytest.raises(InputError) as info:
                read_import(Import(src="tree", dest="/t"), "imports[0]", ctx, 0)
        errors[backend] = str(info.value)
    assert errors["native"] == errors["python"]
    assert errors["python"] == f"imports[0]: 'tree/f': {words}"


def _open_window(
    m: pytest.MonkeyPatch, backend: str, act: Callable[[], None], at: str = "f"
) -> None:
    """``act`` runs between the walk's lstat of tree/``at`` and its open."""
    if backend == "python":
        real_lstat = imports_mod.lstat_at

        def lstat_then(name: str, dir_fd: int) -> os.stat_result | None:
            st = real_lstat(name, dir_fd)
            if name == at:
                act()
            return st

        m.setattr(imports_mod, "lstat_at", lstat_then)
        return
    real_scan = _native.scan

    class Scanning:  # the native module, its scan opening the window inside
        def scan(self, dir_fd: int, names: list[str], *args: Any) -> Any:
            listed = [os.stat(n, dir_fd=dir_fd, follow_symlinks=False) for n in names]
            if at in names:
                act()
            return real_scan(dir_fd, names, *args, listed)

    m.setattr(imports_mod, "_native", Scanning())


def test_a_file_that_grew_after_its_lstat_is_read_whole(tmp_path: Path) -> None:
    """A small file (by its lstat) that grew past the in-memory limit before it was read:
    hashed whole, streamed, not kept; the same entry on both paths."""
    seen = {}
    for backend in filebackend.BACKENDS:
        ctx = tmp_path / backend
        ctx.mkdir()
        (ctx / "f").write_bytes(b"small\n")
        listed = [os.lstat(ctx / "f")]
        grown = b"g" * (INLINE_MAX + 4096)
        (ctx / "f").write_bytes(grown)
        fd = _dir_fd(ctx)
        try:
            if backend == "native":
                [(_, (size, sha256, kept))] = _native.scan(fd, ["f"], INLINE_MAX, 1 << 30, listed)
                seen[backend] = (size, sha256, kept)
            else:
                entry = imports_mod._file(
                    imports_mod.open_regular("f", fd, listed[0], "f"),
                    listed[0],
                    ("f",),
                    Import(src="f", dest="/f"),
                    0,
                    0,
                    0,
                    None,  # type: ignore[arg-type]
                    [1 << 30],
                )
                seen[backend] = (entry.size, entry.sha256, entry.inline)
        finally:
            os.close(fd)
    assert seen["native"] == seen["python"] == (len(grown), hashlib.sha256(grown).hexdigest(), None)


def test_a_special_file_is_refused_on_both_paths(tmp_path: Path) -> None:
    (tmp_path / "tree").mkdir()
    os.mkfifo(tmp_path / "tree" / "pipe")
    errors = {}
    for backend in filebackend.BACKENDS:
        with filebackend.use(backend), pytest.raises(UsageError) as info:
            read_import(Import(src="tree", dest="/t"), "imports[0]", tmp_path, 0)
        errors[backend] = str(info.value)
    assert errors["native"] == errors["python"]
    assert "is a special file" in errors["python"]


def test_the_python_path_is_taken_when_off() -> None:
    """``OCIKIT_NATIVE=0`` (or no module): the modules hold None and write Python's bytes."""
    with filebackend.use("python"):
        assert imports_mod._native is None and tarwriter._native is None
    with filebackend.use("native"):
        assert imports_mod._native is not None and tarwriter._native is not None


# -- placement: the parent directory resolved once for the entries landing in it -------------


def _base() -> Tree:
    """A base with a usrmerged /bin, a plain /c, and /a -> c/x/.. (resolved through c/x,
    which an entry of the layer may then make a file)."""
    tree = Tree()
    root = tree.root.children
    assert root is not None
    usr = Node(Kind.DIR, 0)
    root["usr"] = usr
    assert usr.children is not None
    usr.children["bin"] = Node(Kind.DIR, 0)
    root["bin"] = Node(Kind.SYMLINK, 0, "usr/bin")
    root["c"] = Node(Kind.DIR, 0)
    root["a"] = Node(Kind.SYMLINK, 0, "c/x/..")
    return tree


def _placed(entries: list[list[str]], memo: bool) -> list[tuple[object, ...]] | str:
    """``entries``: per import, its entries: ``path`` (a file), ``path/`` (a directory),
    ``path -> target`` (a symlink)."""
    imports = []
    for i, specs in enumerate(entries):
        content = ImportContent(Import(src="t", dest="/"), f"i{i}", False, [])
        for spec in specs:
            path, _, target = spec.partition(" -> ")
            rel = tuple(path.rstrip("/").split("/"))
            kind = "symlink" if target else "dir" if path.endswith("/") else "file"
            content.entries.append(Entry(rel, kind, 0o644, 0, 0, 7, 0, "h", target))
        imports.append(content)
    with pytest.MonkeyPatch.context() as m:
        if not memo:  # every parent resolved again: the rules themselves
            m.setattr(placement, "_LastParent", lambda: None)
        try:
            placed = placement.place(imports, _base())
        except BuildError as e:
            return str(e)
    return [(p.parts, p.entry.kind, p.origin, p.link) for p in placed]


@pytest.mark.parametrize(
    "entries",
    [
        [["n/m/f", "n/m/g", "n/m/dsub/", "n/m/dsub/h"]],
        [["bin/sh", "bin/ls"], ["usr/bin/ls", "bin/cat"]],
        [["a/y", "a/x -> /e", "a/z"]],  # a resolves through c/x, which a/x then makes a link
        [["c/f", "c/f"], ["c/f", "c/g", "c/l -> f", "c/h"]],
        [["dd/", "dd/f"], ["dd/f", "dd/f/x"]],  # a file as a directory: refused
    ],
)
def test_placing_by_directory_is_placing_each_entry(entries: list[list[str]]) -> None:
    """Entries of one directory land where each, resolved alone, would: the same layer, or
    the same refusal."""
    assert _placed(entries, memo=True) == _placed(entries, memo=False)


# -- the walk ---------------------------------------------------------------------------------


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_walk_stopped_early_leaves_no_fd(tmp_path: Path) -> None:
    """The walk fails at a special file, directories open above it: every directory it
    opened is closed (and no thread is left)."""
    tree = tmp_path / "tree"
    for i in range(30):
        (tree / f"d{i:02}" / "sub").mkdir(parents=True)
        for j in range(20):
            (tree / f"d{i:02}" / "sub" / f"f{j}").write_bytes(b"x" * j)
    os.mkfifo(tree / "d01" / "pipe")
    threads, fds = threading.active_count(), _fds()
    for backend in filebackend.BACKENDS:
        with filebackend.use(backend), pytest.raises(UsageError, match="special file"):
            read_import(Import(src="tree", dest="/t"), "imports[0]", tmp_path, 0)
        assert threading.active_count() == threads and _fds() == fds, backend
    # and a walk that ends well
    (tree / "d01" / "pipe").unlink()
    with filebackend.use("native"):
        content = read_import(Import(src="tree", dest="/t"), "imports[0]", tmp_path, 0)
    content.close()
    assert len(content.entries) == 30 * 22 and _fds() == fds
    assert threading.active_count() == threads


def test_a_directory_changed_before_it_is_opened_fails_in_the_same_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subdirectory swapped for a symlink between its lstat (by the native core, or the
    walk) and its open: the same error on both paths."""
    errors = {}
    for backend in filebackend.BACKENDS:
        ctx = tmp_path / backend
        (ctx / "tree" / "a").mkdir(parents=True)
        (ctx / "tree" / "b").mkdir()
        (ctx / "tree" / "b" / "x").write_bytes(b"x\n")
        (ctx / "host").mkdir()

        def swap(ctx: Path = ctx) -> None:
            os.rename(ctx / "tree" / "b", ctx / "b.orig")
            os.symlink(ctx / "host", ctx / "tree" / "b")

        with filebackend.use(backend), monkeypatch.context() as m:
            _open_window(m, backend, swap, "b")
            with pytest.raises(InputError) as info:
                read_import(Import(src="tree", dest="/t"), "imports[0]", ctx, 0)
        errors[backend] = str(info.value)
    assert errors["native"] == errors["python"]
    assert errors["python"] == "imports[0]: 'tree/b': changed while the build read it"


def test_a_tree_deeper_than_python_recurses_is_walked(tmp_path: Path) -> None:
    """A context tree 1,100 directories deep (past Python's recursion limit, where the walk
    failed with RecursionError): walked without recursion; the same entries on both
    paths."""
    (tmp_path / "tree").mkdir()
    fds = [os.open(tmp_path / "tree", os.O_RDONLY | os.O_DIRECTORY)]
    try:
        for _ in range(1100):
            os.mkdir("d", dir_fd=fds[-1])
            fds.append(os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fds[-1]))
        seen = {}
        for backend in filebackend.BACKENDS:
            with filebackend.use(backend):
                content = read_import(Import(src="tree", dest="/t"), "imports[0]", tmp_path, 0)
            content.close()
            seen[backend] = (content.digest, len(content.entries), content.entries[-1].rel)
        assert seen["native"] == seen["python"]
        assert seen["python"][1:] == (1101, ("d",) * 1100 + ("f",))
    finally:  # removed here: shutil.rmtree recurses
        os.unlink("f", dir_fd=fds[-1])
        for level in range(len(fds) - 1, 0, -1):
            os.close(fds[level])
            os.rmdir("d", dir_fd=fds[level - 1])
        os.close(fds[0])


def test_the_cycle_collector_is_held_off_only_while_files_are_walked(tmp_path: Path) -> None:
    """Off while an import is read (its objects are freed by reference counting), on again
    after, an error included; left off where the caller had it off."""
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "f").write_bytes(b"f")
    seen = []
    real_file_mode = imports_mod._file_mode

    def file_mode(*args: Any) -> int:
        seen.append(gc.isenabled())
        return real_file_mode(*args)

    with pytest.MonkeyPatch.context() as m:
        m.setattr(imports_mod, "_file_mode", file_mode)
        read_import(Import(src="tree", dest="/t"), "imports[0]", tmp_path, 0).close()
        assert seen == [False] and gc.isenabled()
        with pytest.raises(UsageError):
            read_import(Import(src="missing", dest="/t"), "imports[0]", tmp_path, 0)
        assert gc.isenabled()
        gc.disable()
        try:
            read_import(Import(src="tree", dest="/t"), "imports[0]", tmp_path, 0).close()
            assert not gc.isenabled()
        finally:
            gc.enable()


@pytest.mark.parametrize("case", ["same", "edited", "grew", "shrank", *CHANGES])
def test_read_again_gives_only_the_bytes_that_were_hashed(tmp_path: Path, case: str) -> None:
    """A file read again when the layer is written: its bytes if it is still the file, the
    size and the hash the key saw; else None, unread where it is not that file (a symlink's
    target, a fifo): the Python path then says what changed."""
    data = b"hashed content\n" * 100
    path = tmp_path / "f"
    path.write_bytes(data)
    st = os.lstat(path)
    sha256 = hashlib.sha256(data).hexdigest()
    swaps = {name: swap for name, swap, _words in _swaps(tmp_path)}
    if case == "edited":
        path.write_bytes(data.upper())  # the same size, the same inode
    elif case == "grew":
        path.write_bytes(data + b"x")
    elif case == "shrank":
        path.write_bytes(data[:-1])
    elif case != "same":
        swaps[case](path)
    fd = _dir_fd(tmp_path)
    try:
        again = _native.read_again(fd, "f", st.st_dev, st.st_ino, len(data), sha256)
    finally:
        os.close(fd)
    assert again == (data if case == "same" else None)


@pytest.mark.parametrize("name", ["../secret", "sub/../../secret", "", ".", "..", "f/"])
def test_a_name_is_one_entry_of_the_directory(tmp_path: Path, name: str) -> None:
    """scan and read_again take names of the directory fd's own entries: a name that is not
    one ('/' in it, '.', '..', empty) is refused, never resolved past the directory."""
    (tmp_path / "secret").write_bytes(b"not below the directory")
    (tmp_path / "d").mkdir()
    st = os.lstat(tmp_path / "secret")
    sha256 = hashlib.sha256(b"not below the directory").hexdigest()
    fd = _dir_fd(tmp_path / "d")
    try:
        with pytest.raises(ValueError, match="one entry"):
            _native.scan(fd, ["ok", name], INLINE_MAX, 1 << 20)
        with pytest.raises(ValueError, match="one entry"):
            _native.read_again(fd, name, st.st_dev, st.st_ino, st.st_size, sha256)
    finally:
        os.close(fd)


class _Interrupted(Exception):
    pass


def test_a_signal_stops_a_scan_reading_a_large_file(tmp_path: Path) -> None:
    """The scan reads with the GIL released; a signal (Ctrl-C) that comes while it hashes a
    large file is handled within a few MiB, not after the whole file (seconds per GiB):
    its exception comes out of scan, and no fd is left open. The signal is sent once the
    file's fd has been read from, and the reads after it are counted (the fd's position,
    seen in /proc, until it is closed): nothing depends on timing."""
    (tmp_path / "huge").touch()
    os.truncate(tmp_path / "huge", 2 << 30)  # sparse: read at memory speed, hashed
    fd = _dir_fd(tmp_path)
    fds_before = set(os.listdir("/proc/self/fd"))
    main = threading.get_ident()
    stop = threading.Event()
    read_after: list[int] = []  # the fd's positions when the signal is sent, and last seen

    def position(n: str) -> int | None:
        try:
            if not os.readlink(f"/proc/self/fd/{n}").endswith("/huge"):
                return None
            return int(Path(f"/proc/self/fdinfo/{n}").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            return None

    def send_when_reading() -> None:
        while not stop.is_set():
            for n in os.listdir("/proc/self/fd"):
                pos = position(n)
                if pos:
                    signal.pthread_kill(main, signal.SIGUSR1)
                    read_after[:] = [pos, pos]
                    while (pos := position(n)) is not None:
                        read_after[1] = pos
                    return

    def handler(signum: int, frame: object) -> None:
        raise _Interrupted

    old = signal.signal(signal.SIGUSR1, handler)
    sender = threading.Thread(target=send_when_reading)
    try:
        sender.start()
        with pytest.raises(_Interrupted):
            _native.scan(fd, ["huge"], INLINE_MAX, 1 << 20)
    finally:
        stop.set()
        sender.join()
        signal.signal(signal.SIGUSR1, old)
        os.close(fd)
    assert set(os.listdir("/proc/self/fd")) <= fds_before | {str(fd)}
    assert read_after and read_after[1] - read_after[0] < 256 << 20, read_after
