"""The layer scan's pipeline: blocks handed between threads, and the tar reader over them.

``BlockTarStream`` (headers sliced out of large blocks, data skipped by arithmetic) must read
exactly what ``TarStream`` reads from a stream, whatever the block boundaries; Go's reader
judges it on the fuzzed streams and the corpus of ``test_tar_go``. The threaded scan must
give the digests, entries and verdicts of a plain read, and leave no thread behind when a
layer is corrupt, a bomb, or its consumer fails. The analyzer's shortcuts (the name key,
the length check) must agree with the full computation they skip.

Both header parsers (``support.backends.TAR``: C and pure Python) read every stream; the
pure-Python stream reader is the reference for both.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocikit.errors import InputError
from ocikit.layer import analyze, compress, scan
from ocikit.layer.analyze import LayerAnalyzer, Tree, _go_key, _too_long
from ocikit.layer.paths import clean, go_clean
from ocikit.layer.scan import scan_layer
from ocikit.layer.streams import StreamBlocks
from ocikit.layer.tarstream import BlockTarStream, TarEntry, TarStream
from ocikit.model import Compression, Descriptor, Digest
from support import gotar
from support.backends import TAR as tarbackend
from support.rawtar import header as raw_header
from tarfuzz import tar_stream

CORPUS = json.loads((Path(__file__).parent / "tar_corpus.json").read_text())


class _Blocks:
    """A ``BlockSource`` cutting ``data`` at the given sizes (cycled), every block in a fresh
    buffer that is overwritten once given up, as a recycled block is."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data = data
        self._sizes = sizes
        self._pos = 0
        self._i = 0
        self._last: bytearray | None = None

    def next_block(self) -> memoryview | None:
        if self._last is not None:
            self._last[:] = b"\xee" * len(self._last)  # a reader keeping a view sees garbage
        if self._pos >= len(self._data):
            return None
        size = self._sizes[self._i % len(self._sizes)]
        self._i += 1
        self._last = bytearray(self._data[self._pos : self._pos + size])
        self._pos += size
        return memoryview(self._last)

    def close(self) -> None:
        pass


def _read_all(stream: TarStream, chunk: int = 4096) -> dict[str, Any]:
    """Every entry with its data (read), offsets, raw headers; the error, if any."""
    entries: list[Any] = []
    error = None
    buf = bytearray(chunk)
    try:
        for entry in stream:
            data = hashlib.sha256()
            while n := stream.readinto(buf):
                data.update(memoryview(buf)[:n])
            entries.append((entry, data.hexdigest(), stream.offset, bytes(stream.raw_header)))
    except InputError as e:
        error = str(e)
    return {"entries": entries, "error": error, "offset": stream.offset}


def _skip_all(stream: TarStream) -> dict[str, Any]:
    """Every entry, its data skipped."""
    entries: list[Any] = []
    error = None
    try:
        for entry in stream:
            entries.append((entry, stream.offset))
    except InputError as e:
        error = str(e)
    return {"entries": entries, "error": error, "offset": stream.offset}


# small blocks cut headers and data anywhere; large ones hold many headers (parsed in a batch)
SIZES = st.lists(
    st.one_of(st.integers(1, 1600), st.sampled_from([2048, 5120, 1 << 20])), min_size=1, max_size=4
)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tar_stream(), SIZES, st.booleans())
def test_blocks_read_what_the_stream_reads(data: bytes, sizes: list[int], read: bool) -> None:
    """Entries, data, errors (the same messages), offsets: identical at any block size."""
    walk = _read_all if read else _skip_all

    def plain() -> TarStream:
        return TarStream(io.BufferedReader(io.BytesIO(data)), what="t")  # type: ignore[arg-type]

    with tarbackend.use("python"):
        expected = walk(plain())
    for backend in tarbackend.available():
        with tarbackend.use(backend):
            assert walk(BlockTarStream(_Blocks(data, sizes), what="t")) == expected, backend
            assert walk(plain()) == expected, backend


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tar_stream(), SIZES)
def test_blocks_copy_entries_byte_for_byte(data: bytes, sizes: list[int]) -> None:
    """``keep_raw``: the headers as read and ``copy_raw``'s bytes are the stream reader's."""

    def copy(stream: TarStream) -> tuple[list[bytes], str | None]:
        out: list[bytes] = []
        try:
            for _entry in stream:
                piece = bytearray(stream.raw_header)
                stream.copy_raw(piece.extend)
                out.append(bytes(piece))
        except InputError as e:
            return out, str(e)
        return out, None

    def plain() -> TarStream:
        return TarStream(io.BufferedReader(io.BytesIO(data)), what="t", keep_raw=True)  # type: ignore[arg-type]

    with tarbackend.use("python"):
        expected = copy(plain())
    for backend in tarbackend.available():
        with tarbackend.use(backend):
            assert copy(BlockTarStream(_Blocks(data, sizes), what="t", keep_raw=True)) == expected
            assert copy(plain()) == expected


def _go_judged(
    oracle: gotar.GoTar,
    data: bytes,
    sizes: list[int],
    monkeypatch: Any,
    backends: tuple[str, ...] = tarbackend.available(),
) -> None:
    """``gotar.ocikit_read`` (the comparison ``test_tar_go`` makes) with the block reader."""

    def block_stream(raw: io.BufferedReader, what: str) -> BlockTarStream:
        return BlockTarStream(_Blocks(raw.read(), sizes), what=what)

    expected = oracle.read(data)
    for backend in backends:
        with monkeypatch.context() as m, tarbackend.use(backend):
            m.setattr(gotar, "TarStream", block_stream)
            got = gotar.ocikit_read(data)
        assert got == expected, f"the readers disagree ({backend}) on {data.hex()} cut at {sizes}"


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(tar_stream(), SIZES)
def test_blocks_read_as_go_reads(
    oracle: gotar.GoTar, monkeypatch: pytest.MonkeyPatch, data: bytes, sizes: list[int]
) -> None:
    _go_judged(oracle, data, sizes, monkeypatch)


@pytest.mark.parametrize("sizes", [[1], [511, 513], [4 << 20]], ids=["1", "511-513", "4MiB"])
def test_blocks_read_the_corpus_as_go_reads(
    oracle: gotar.GoTar, monkeypatch: pytest.MonkeyPatch, tar_backend: str, sizes: list[int]
) -> None:
    for case in CORPUS:
        _go_judged(oracle, base64.b64decode(case["base64"]), sizes, monkeypatch, (tar_backend,))


# -- the threaded scan ------------------------------------------------------------------------


def _tar(files: int, size: int, seed: int = 1) -> bytes:
    """A tar of ``files`` regular files of ``size`` bytes each (incompressible)."""
    out = bytearray()
    for i in range(files):
        body = hashlib.shake_256(f"{seed}-{i}".encode()).digest(size)
        out += raw_header(f"d{i % 7}/f{i}".encode(), size=size)
        out += body + bytes(-size % 512)
    return bytes(out + bytes(1024))


def _descriptor(blob: bytes, media: str) -> Descriptor:
    return Descriptor(media, Digest(f"sha256:{hashlib.sha256(blob).hexdigest()}"), len(blob))


GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
PLAIN = "application/vnd.oci.image.layer.v1.tar"


def _compress(tar: bytes, kind: Compression) -> bytes:
    if kind is Compression.GZIP:
        return gzip.compress(tar, compresslevel=1)
    if kind is Compression.ZSTD:
        return zstandard.ZstdCompressor().compress(tar)
    return tar


MEDIA = {Compression.GZIP: GZIP, Compression.ZSTD: ZSTD, Compression.NONE: PLAIN}


def _workers() -> list[threading.Thread]:
    return [
        t
        for t in threading.enumerate()
        if t.name in ("ocikit-read", "ocikit-inflate", "ocikit-hash")
    ]


def _no_workers_left() -> None:
    deadline = time.monotonic() + 5
    while _workers() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _workers()


@pytest.mark.parametrize("kind", [Compression.GZIP, Compression.ZSTD, Compression.NONE])
@pytest.mark.usefixtures("tar_backend")
def test_threaded_scan_gives_the_plain_verdicts(kind: Compression) -> None:
    """A layer big enough for the worker threads: the digests of the blob and of the tar,
    the sizes and the entries are those of a plain read; no thread is left."""
    tar = _tar(120, 20_000)
    blob = _compress(tar, kind)
    assert len(blob) > scan.SMALL_BLOB
    diff_id = Digest(f"sha256:{hashlib.sha256(tar).hexdigest()}")
    names: list[str] = []
    result = scan_layer(
        io.BytesIO(blob),  # type: ignore[arg-type]
        _descriptor(blob, MEDIA[kind]),
        kind,
        diff_id,
        lambda i, entry, stream: names.append(entry.name),
        strict=True,
    )
    assert result.digest == _descriptor(blob, GZIP).digest and result.size == len(blob)
    assert (result.diff_id, result.uncompressed_size) == (diff_id, len(tar))
    assert (result.entries, result.problems) == (120, [])
    assert names == [f"d{i % 7}/f{i}" for i in range(120)]
    _no_workers_left()


@pytest.mark.usefixtures("tar_backend")
def test_threaded_scan_reads_entry_data_across_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unpack reads each entry's data through the stream: the bytes are the tar's, also
    where an entry straddles the blocks (made small here)."""
    monkeypatch.setitem(compress.ThreadedBlocks.__init__.__kwdefaults__, "size", 3000)
    tar = _tar(40, 9_000, seed=2)
    blob = gzip.compress(tar, compresslevel=1)
    monkeypatch.setattr(scan, "SMALL_BLOB", 0)
    got: dict[str, str] = {}

    def read(i: int, entry: TarEntry, stream: TarStream) -> None:
        digest, buf = hashlib.sha256(), bytearray(1000)
        while n := stream.readinto(buf):
            digest.update(memoryview(buf)[:n])
        got[entry.name] = digest.hexdigest()

    scan_layer(io.BytesIO(blob), _descriptor(blob, GZIP), None, None, read, strict=True)  # type: ignore[arg-type]
    expected = {
        f"d{i % 7}/f{i}": hashlib.sha256(
            hashlib.shake_256(f"2-{i}".encode()).digest(9_000)
        ).hexdigest()
        for i in range(40)
    }
    assert got == expected
    _no_workers_left()


@pytest.mark.usefixtures("tar_backend")
def test_corrupt_gzip_is_reported_with_the_whole_blob_hashed() -> None:
    """A gzip stream damaged past its first blocks: the entries before the damage were
    seen, the layer is unreadable, and the blob's digest is still of every byte."""
    tar = _tar(200, 20_000, seed=3)
    blob = bytearray(gzip.compress(tar, compresslevel=1))
    blob[len(blob) // 2 : len(blob) // 2 + 64] = bytes(64)
    seen: list[str] = []
    result = scan_layer(
        io.BytesIO(bytes(blob)),  # type: ignore[arg-type]
        _descriptor(bytes(blob), GZIP),
        Compression.GZIP,
        None,
        lambda i, entry, stream: seen.append(entry.name),
    )
    assert [rule for rule, _ in result.problems] == ["layer-unreadable"]
    assert result.diff_id is None and seen  # what came before the damage was walked
    assert result.digest == _descriptor(bytes(blob), GZIP).digest and result.size == len(blob)
    _no_workers_left()


def test_bomb_stops_the_threads() -> None:
    """A layer expanding beyond the ratio: reported, the threads stopped (not inflating the
    rest), the blob still hashed to its end."""
    tar = bytes(64 << 20)  # zeros: compresses ~1000x
    blob = gzip.compress(tar, compresslevel=1) + gzip.compress(bytes(600 << 10), compresslevel=0)
    result = scan_layer(io.BytesIO(blob), _descriptor(blob, GZIP), None, None, None, max_ratio=20)  # type: ignore[arg-type]
    assert [rule for rule, _ in result.problems] == ["decompression-bomb"]
    assert result.digest == _descriptor(blob, GZIP).digest
    _no_workers_left()


@pytest.mark.usefixtures("tar_backend")
def test_a_failing_consumer_stops_the_threads() -> None:
    """An error of the entry handler (unpack's disk full) propagates; no thread is left
    reading, and the blob can still be read to its end by the caller."""
    tar = _tar(100, 20_000, seed=4)
    blob = gzip.compress(tar, compresslevel=1)
    raw = io.BytesIO(blob)

    def fail(i: int, entry: TarEntry, stream: TarStream) -> None:
        if i == 3:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        scan_layer(raw, _descriptor(blob, GZIP), None, None, fail)  # type: ignore[arg-type]
    _no_workers_left()
    assert not raw.closed


def test_stream_blocks_show_each_block_before_handing_it() -> None:
    shown: list[bytes] = []
    blocks = StreamBlocks(io.BytesIO(b"abcdefg"), lambda view: shown.append(bytes(view)), 3)
    got = []
    while (view := blocks.next_block()) is not None:
        got.append(bytes(view))
    assert got == shown == [b"abc", b"def", b"g"]


# -- the analyzer's shortcuts -----------------------------------------------------------------

NAMES = st.lists(
    st.sampled_from(["a", "b", ".", "..", "", "é", "\udcff", "x" * 70, "y" * 300, "€" * 64]),
    max_size=8,
).map("/".join)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(NAMES, NAMES.map(lambda n: "/" + n), st.text(max_size=40)))
def test_name_key_is_go_clean(name: str) -> None:
    assert _go_key(name, clean(name)) == go_clean(name)


def _too_long_in_full(parts: tuple[str, ...], entry: TarEntry) -> str | None:
    """The check without its shortcut: every length encoded."""
    size = sum(len(p.encode("utf-8", "surrogateescape")) + 1 for p in parts)
    if size > analyze.MAX_PATH:
        return "path"
    if any(len(p.encode("utf-8", "surrogateescape")) > analyze.MAX_COMPONENT for p in parts):
        return "component"
    if (entry.issym() or entry.islnk()) and len(
        entry.linkname.encode("utf-8", "surrogateescape")
    ) > analyze.MAX_PATH:
        return "link"
    return None


LONG_PARTS = st.lists(
    st.one_of(
        st.sampled_from(["..", "."]),
        st.builds(
            lambda c, n: c * n,
            st.sampled_from(["a", "é", "€", "😀", "\udcff"]),
            st.integers(1, 300),
        ),
    ),
    max_size=20,
).map("/".join)


@settings(max_examples=800, deadline=None)
@given(LONG_PARTS, LONG_PARTS, st.sampled_from([b"0", b"1", b"2", b"5"]))
def test_length_check_shortcut_agrees(name: str, link: str, kind: bytes) -> None:
    entry = TarEntry(name, kind, 0, linkname=link)
    parts = clean(name).parts
    assert (_too_long(parts, entry) is None) == (_too_long_in_full(parts, entry) is None)


def test_analyzer_findings_unchanged_on_a_varied_layer() -> None:
    """Names the shortcuts take and names they leave to the full path, in one layer."""
    entries = [
        TarEntry("a/", b"5", 0),
        TarEntry("./a/", b"5", 0),  # the same name
        TarEntry("/abs", b"0", 0),
        TarEntry("x/../../up", b"0", 0),
        TarEntry("l", b"2", 0, linkname="a"),
        TarEntry("l/f", b"0", 0),  # through the symlink
        TarEntry("é" * 64 + "/f", b"0", 0),  # a component of 128 bytes
        TarEntry("€" * 90, b"0", 0),  # 270 bytes: too long
    ]
    analyzer = LayerAnalyzer(Tree(), 0)
    for i, e in enumerate(entries):
        analyzer.feed(i, e)
    analyzer.finish()
    assert [f.rule for f in analyzer.findings] == [
        "duplicate-path",
        "absolute-path",
        "path-traversal",
        "through-symlink",
        "name-too-long",
    ]


def test_gzip_without_isals_c_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """An isal without its C reader (a private name): IGzipFile reads, with the same result."""
    from isal import isal_zlib

    monkeypatch.delattr(isal_zlib, "_GzipReader")
    tar = _tar(60, 20_000, seed=5)
    blob = gzip.compress(tar, compresslevel=1)
    diff_id = Digest(f"sha256:{hashlib.sha256(tar).hexdigest()}")
    result = scan_layer(io.BytesIO(blob), _descriptor(blob, GZIP), None, diff_id, None, strict=True)  # type: ignore[arg-type]
    assert (result.diff_id, result.entries) == (diff_id, 60)
    damaged = blob[: len(blob) // 2]
    result = scan_layer(io.BytesIO(damaged), _descriptor(damaged, GZIP), None, None, None)  # type: ignore[arg-type]
    assert [rule for rule, _ in result.problems] == ["layer-unreadable"]
    _no_workers_left()
