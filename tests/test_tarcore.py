"""The C tar header parser (``ocikit._tarcore``) against the Python one it stands in for.

``header(block)`` must return exactly what ``tarstream._parse_header`` returns, and None
exactly where that raises; ``headers(buffer, pos)`` must return the entries
``TarStream._next`` would, for the plain headers that lie wholly in the buffer, and stop
before anything else. Hand-built headers at the edges (base-256 limits, overflow, checksums,
prefixes, NULs, truncated buffers, headers across the end of a block) and generated ones.
The suites of the reader itself (test_tarstream, test_tar_go, test_scan_pipeline,
test_check_corpus) run on both parsers through the ``tar_backend`` fixture.
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocikit.layer import tarstream
from ocikit.layer.streams import BlockSource
from ocikit.layer.tarstream import BlockTarStream, TarEntry, TarStream
from support.backends import TAR as tarbackend
from support.rawtar import BLOCK, END, member, pax
from tarfuzz import FINAL, RARE
from tarfuzz import header as fuzz_header

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def core() -> Any:
    why = tarbackend.missing("native")
    if why:
        pytest.skip(why)
    return tarbackend.module


def _python(block: bytes) -> TarEntry | None:
    try:
        return tarstream._parse_header(block)
    except tarstream._Bad:
        return None


def _block(**fields: bytes) -> bytes:
    """A header of a regular file ``f``, ``fields`` (name: bytes, at their offsets) set, and
    the checksum made right unless ``chksum`` is given."""
    offsets = {
        "name": (0, 100),
        "mode": (100, 8),
        "uid": (108, 8),
        "gid": (116, 8),
        "size": (124, 12),
        "mtime": (136, 12),
        "chksum": (148, 8),
        "type": (156, 1),
        "linkname": (157, 100),
        "magic": (257, 8),
        "uname": (265, 32),
        "gname": (297, 32),
        "devmajor": (329, 8),
        "devminor": (337, 8),
        "prefix": (345, 155),
        "atime": (345, 12),
        "ctime": (357, 12),
        "star_prefix": (345, 131),
        "star_atime": (476, 12),
        "star_ctime": (488, 12),
        "trailer": (508, 4),
    }
    block = bytearray(BLOCK)
    values = {
        "name": b"f",
        "mode": b"0000644\0",
        "uid": b"0001750\0",
        "gid": b"0001750\0",
        "size": b"00000000000\0",
        "mtime": b"14672240177\0",
        "type": b"0",
        "magic": b"ustar\x0000",
        "uname": b"user",
        "gname": b"group",
        "devmajor": b"0000000\0",
        "devminor": b"0000000\0",
    }
    values.update(fields)
    for key, value in values.items():
        if key == "chksum":
            continue
        at, width = offsets[key]
        assert len(value) <= width, key
        block[at : at + width] = value.ljust(width, b"\0")
    block[148:156] = b" " * 8
    block[148:156] = fields.get("chksum", b"%06o\0 " % sum(block)).ljust(8, b"\0")
    return bytes(block)


def _b256(value: int, width: int) -> bytes:
    """``value`` in base-256, as Go writes it (two's complement for a negative value)."""
    raw = (value % (1 << (8 * width))).to_bytes(width, "big")
    return bytes([raw[0] | 0x80]) + raw[1:]


MAX63 = (1 << 63) - 1
EDGES: dict[str, bytes] = {
    "plain": _block(),
    "size-b256-max": _block(size=_b256(MAX63, 12)),
    "size-b256-2**63": _block(size=b"\x80" + (1 << 63).to_bytes(11, "big")),
    "size-b256-2**88": _block(size=b"\x81" + bytes(11)),
    "size-b256-low-bits-only": _block(size=b"\x80" + bytes(3) + b"\x7f" + b"\xff" * 7),
    "size-b256-bit-63": _block(size=b"\x80" + bytes(3) + b"\x80" + bytes(7)),
    "size-b256-min": _block(size=_b256(-(1 << 63), 12)),
    "size-b256-minus-1": _block(size=b"\xff" * 12),
    "size-b256-below-min": _block(size=b"\xff\xff\xff\xff\x7f" + b"\xff" * 7),
    "size-b256-negative-2**64": _block(size=b"\xc0" + bytes(11)),
    "size-negative": _block(size=_b256(-512, 12)),
    "uid-b256-max": _block(uid=b"\x80" + b"\xff" * 7),
    "uid-b256-negative": _block(uid=b"\xc0" + bytes(7)),
    "uid-b256-minus-1": _block(uid=b"\xff" * 8),
    "mtime-b256-negative": _block(mtime=_b256(-1_000_000, 12)),
    "size-octal-12-digits": _block(size=b"777777777777"),
    "size-octal-spaces": _block(size=b"  \0 17 \0\0 "),
    "size-octal-nul-inside": _block(size=b"12\x00 34"),
    "size-octal-space-inside": _block(size=b"12 34"),
    "size-octal-digit-8": _block(size=b"00000000008\0"),
    "size-octal-digit-9": _block(size=b"9"),
    "size-octal-plus": _block(size=b"+1"),
    "size-octal-minus": _block(size=b"-1"),
    "size-octal-underscore": _block(size=b"1_0"),
    "size-octal-tab": _block(size=b"\t1"),
    "size-octal-arabic-digit": _block(size=b"\xd9\xa1"),
    "size-empty": _block(size=b""),
    "size-all-spaces": _block(size=b" " * 12),
    "mode-all-nul": _block(mode=b""),
    "devmajor-bad": _block(devmajor=b"x"),
    "devmajor-bad-v7": _block(devmajor=b"x", magic=b""),
    "chksum-wrong": _block(chksum=b"0000001\0"),
    "chksum-spaces": _block(chksum=b" " * 8),
    "chksum-b256": _block(chksum=b"\x80" + bytes(7)),
    "chksum-malformed": _block(chksum=b"12x"),
    "chksum-leading-spaces": (
        lambda b: b[:148] + (b"  %o" % int(b[148:154], 8)).ljust(8) + b[156:]
    )(_block()),
    "name-100-no-nul": _block(name=b"n" * 100),
    "name-nul-inside": _block(name=b"a\0b"),
    "name-not-utf8": _block(name=b"caf\xe9\xff"),
    "name-utf8": _block(name="café€😀".encode()),
    "name-empty": _block(name=b""),
    "name-high-bytes-signed-checksum": (
        lambda b: b[:148] + b"%06o\0 " % (sum(b) - 256 * sum(c > 127 for c in b)) + b[156:]
    )(_block(name=b"\xff" * 90, chksum=b" " * 8)),
    "prefix-ustar": _block(prefix=b"p/q", name=b"n"),
    "prefix-ustar-full": _block(prefix=b"p" * 155, name=b"n" * 100),
    "prefix-ustar-empty-name": _block(prefix=b"d", name=b""),
    "prefix-ustar-not-utf8": _block(prefix=b"\xff\xfe", name=b"n"),
    "prefix-star": _block(star_prefix=b"s" * 131, name=b"n", trailer=b"tar\0"),
    "prefix-star-full-with-times": _block(
        star_prefix=b"s" * 131, star_atime=b"14672240177", star_ctime=b"1", trailer=b"tar\0"
    ),
    "prefix-star-bad-atime": _block(star_prefix=b"s", star_atime=b"x", trailer=b"tar\0"),
    "prefix-star-b256-atime": _block(star_atime=_b256(-5, 12), trailer=b"tar\0"),
    "prefix-star-atime-beyond-63-bits": _block(star_ctime=b"\x81" + bytes(11), trailer=b"tar\0"),
    "prefix-v7-ignored": _block(magic=b"", prefix=b"p", uname=b"u"),
    "gnu-times": _block(magic=b"ustar  \0", atime=b"14672240177", ctime=b"1"),
    "gnu-prefix-in-times": _block(magic=b"ustar  \0", prefix=b"old/go", name=b"n"),
    "gnu-prefix-not-ascii": _block(magic=b"ustar  \0", prefix=b"\xffold", name=b"n"),
    "gnu-atime-bad-ctime-good": _block(magic=b"ustar  \0", atime=b"x", ctime=b"1"),
    "gnu-ctime-bad": _block(magic=b"ustar  \0", atime=b"1", ctime=b"x/y"),
    "gnu-atime-beyond-63-bits": _block(magic=b"ustar  \0", atime=b"\x81" + bytes(11)),
    "gnu-magic-without-nul": _block(magic=b"ustar   ", prefix=b"p"),
    "star-magic-gnu-trailer": _block(magic=b"ustar  \0", trailer=b"tar\0", prefix=b"p"),
    "type-nul": _block(type=b"\0"),
    "type-high": _block(type=b"\xff"),
    "type-pax": _block(type=b"x"),
    "uname-32-no-nul": _block(uname=b"u" * 32, gname=b"g" * 32),
    "linkname-100": _block(type=b"2", linkname=b"l" * 100),
    "zero-block": bytes(BLOCK),
}


@pytest.mark.parametrize("name", EDGES)
def test_edge_headers_read_as_python_reads_them(core: Any, name: str) -> None:
    block = EDGES[name]
    assert core.header(block, TarEntry) == _python(block)


@pytest.mark.parametrize(
    "name, field, value",
    [
        ("size-b256-max", "size", (1 << 63) - 1),
        ("size-b256-low-bits-only", "size", (1 << 63) - 1),
        ("size-b256-min", "size", -(1 << 63)),
        ("size-b256-minus-1", "size", -1),
        ("uid-b256-max", "uid", (1 << 56) - 1),
        ("uid-b256-negative", "uid", -(1 << 62)),
        ("mtime-b256-negative", "mtime", -1_000_000),
        ("size-octal-12-digits", "size", (1 << 36) - 1),
        ("size-octal-spaces", "size", 0o17),
        ("size-octal-nul-inside", "size", 0o12),
        ("size-empty", "size", 0),
        ("name-100-no-nul", "name", "n" * 100),
        ("name-nul-inside", "name", "a"),
        ("name-not-utf8", "name", "caf\udce9\udcff"),
        ("prefix-ustar", "name", "p/q/n"),
        ("prefix-ustar-full", "name", "p" * 155 + "/" + "n" * 100),
        ("prefix-ustar-empty-name", "name", "d/"),
        ("prefix-star", "name", "s" * 131 + "/n"),
        ("prefix-star-full-with-times", "name", "s" * 131 + "/f"),
        ("gnu-atime-bad-ctime-good", "name", "x/f"),  # the prefix: to the first NUL
        ("prefix-v7-ignored", "name", "f"),
        ("prefix-v7-ignored", "uname", ""),
        ("gnu-times", "name", "f"),
        ("gnu-prefix-in-times", "name", "old/go/n"),
        ("gnu-prefix-not-ascii", "name", "n"),
        ("gnu-ctime-bad", "name", "1/f"),  # the prefix: the atime field's "1", to its NUL
        ("gnu-magic-without-nul", "name", "f"),
        ("devmajor-bad-v7", "devmajor", 0),
        ("uname-32-no-nul", "gname", "g" * 32),
        ("type-nul", "type", b"\0"),  # as read; TarStream decides file or directory
        ("name-high-bytes-signed-checksum", "name", "\udcff" * 90),
    ],
)
def test_edge_header_values(core: Any, name: str, field: str, value: object) -> None:
    entry = core.header(EDGES[name], TarEntry)
    assert entry is not None and getattr(entry, field) == value


@pytest.mark.parametrize(
    "name",
    [
        "size-b256-2**63",
        "size-b256-2**88",
        "size-b256-bit-63",
        "size-b256-below-min",
        "size-b256-negative-2**64",
        "size-octal-space-inside",
        "size-octal-digit-8",
        "size-octal-digit-9",
        "size-octal-plus",
        "size-octal-minus",
        "size-octal-underscore",
        "size-octal-tab",
        "size-octal-arabic-digit",
        "devmajor-bad",
        "chksum-wrong",
        "chksum-spaces",
        "chksum-b256",
        "chksum-malformed",
        "prefix-star-bad-atime",
        "prefix-star-atime-beyond-63-bits",
        "zero-block",
    ],
)
def test_edge_headers_refused(core: Any, name: str) -> None:
    """Left to Python (None), which raises: the C parser gives no verdict of its own."""
    assert core.header(EDGES[name], TarEntry) is None
    assert _python(EDGES[name]) is None


@settings(max_examples=1000, deadline=None)
@given(
    st.integers(0, 2**32),
    st.sampled_from(FINAL + RARE + [b"x", b"g", b"L", b"K"]),
    st.sampled_from([0, 1, 513, 1 << 40]),
    st.lists(st.tuples(st.integers(0, BLOCK - 1), st.integers(0, 255)), max_size=3),
    st.booleans(),
)
def test_generated_headers_read_as_python_reads_them(
    core: Any,
    seed: int,
    typeflag: bytes,
    size: int,
    flips: list[tuple[int, int]],
    fix_checksum: bool,
) -> None:
    """tarfuzz's headers (every field plain, padded, base-256 or malformed), bytes changed
    anywhere, the checksum made right again or not."""
    block = bytearray(fuzz_header(random.Random(seed), typeflag, size))
    for at, value in flips:
        block[at] = value
    if flips and fix_checksum:
        block[148:156] = b" " * 8
        block[148:156] = b"%06o\0 " % sum(block)
    assert core.header(bytes(block), TarEntry) == _python(bytes(block))


def test_header_arguments(core: Any) -> None:
    with pytest.raises(ValueError):
        core.header(bytes(511), TarEntry)
    with pytest.raises(TypeError):
        core.header("x" * 512, TarEntry)
    with pytest.raises(TypeError):
        core.header(bytes(512))
    assert core.header(memoryview(bytearray(EDGES["plain"])), TarEntry) == _python(EDGES["plain"])


# -- batches ------------------------------------------------------------------------------------


def _python_entries(data: bytes) -> list[TarEntry]:
    with tarbackend.use("python"):
        return list(TarStream(io.BufferedReader(io.BytesIO(data))))  # type: ignore[arg-type]


def _batch(core: Any, data: bytes | bytearray | memoryview, pos: int = 0) -> list[TarEntry]:
    entries: list[TarEntry] = core.headers(memoryview(data), pos, TarEntry)
    return entries[::-1]


PLAIN = (
    member(b"a", b"x" * 700)
    + member(b"d/", typeflag=b"5")
    + member(b"l", typeflag=b"2", linkname=b"a")
    + member(b"empty")
    + member(b"b", b"y" * 512)
)


def test_batch_reads_plain_headers_as_the_stream_does(core: Any) -> None:
    data = PLAIN + END
    assert _batch(core, data) == _python_entries(data)


def test_batch_starts_where_asked(core: Any) -> None:
    data = PLAIN + END
    second = BLOCK + 1024  # after "a"'s header and 700 bytes of data, padded
    assert _batch(core, data, second) == _python_entries(data)[1:]


@pytest.mark.parametrize(
    "stop, why",
    [
        (pax([(b"path", b"p")]), "a PAX header"),
        (pax([(b"comment", b"c")], typeflag=b"g"), "a global PAX header"),
        (member(b"././@LongLink", b"long\0", typeflag=b"L"), "a GNU long name"),
        (member(b"././@LongLink", b"long\0", typeflag=b"K"), "a GNU long link"),
        (member(b"s", typeflag=b"S"), "an old GNU sparse entry"),
        (EDGES["chksum-wrong"], "a bad checksum"),
        (EDGES["size-octal-digit-8"], "a malformed number"),
        (EDGES["size-negative"], "a file of negative size"),
        (END, "the end of the archive"),
        (bytes(BLOCK) + member(b"z"), "a zero block"),
    ],
)
def test_batch_stops_before(core: Any, stop: bytes, why: str) -> None:
    data = PLAIN + stop + member(b"after") + END
    assert _batch(core, data) == _python_entries(PLAIN + END), why
    assert _batch(core, data, len(PLAIN)) == [], why


def test_batch_at_the_end_of_the_block(core: Any) -> None:
    """A header cut by the end of the buffer is not read; an entry whose data or padding
    runs past it is the last one; a buffer shorter than a header gives nothing."""
    entries = _python_entries(PLAIN + END)
    whole = memoryview(PLAIN + END)  # past the cut: the real headers, never to be read
    for cut in range(len(PLAIN) + 1):
        got = _batch(core, whole[:cut])
        headers_in = [h for h in _header_offsets(PLAIN) if h + BLOCK <= cut]
        # every header wholly in the buffer is read as long as the one before it was
        # followed by its data and padding in the buffer (always here: the next header
        # starts right after them)
        assert got == entries[: len(headers_in)], cut
    assert _batch(core, b"") == [] and _batch(core, EDGES["plain"][:511]) == []


def _header_offsets(data: bytes) -> list[int]:
    offsets, pos = [], 0
    for entry in _python_entries(data + END):
        offsets.append(pos)
        size = 0 if entry.type in tarstream.HEADER_ONLY else entry.size
        pos += BLOCK + size + (-size % BLOCK)
    return offsets


def test_batch_data_past_the_block(core: Any) -> None:
    """The entry whose data goes past the buffer ends the batch (huge sizes included: no
    arithmetic wraps around)."""
    for size in (b"%011o\0" % 1000, _b256(MAX63, 12), _b256(MAX63 - 512, 12)):
        big = _block(name=b"big", size=size)
        data = EDGES["plain"] + big + member(b"next") + END
        assert _batch(core, data) == [_python(EDGES["plain"]), _python(big)]


def test_batch_header_only_types_skip_no_data(core: Any) -> None:
    """Links, directories and devices have no data whatever their size says (2**40 here)."""
    data = (
        _block(name=b"d", type=b"5", size=_b256(1 << 40, 12))
        + _block(name=b"l", type=b"2", size=_b256(MAX63, 12), linkname=b"t")
        + _block(name=b"c", type=b"3", size=_b256(-5, 12))
        + _block(name=b"h", type=b"1", size=b"1000", linkname=b"f")
        + _block(name=b"b", type=b"4", size=b"1")
        + _block(name=b"p", type=b"6", size=b"1")
        + member(b"f", b"data")
        + END
    )
    assert _batch(core, data) == _python_entries(data)
    assert [e.size for e in _batch(core, data)] == [1 << 40, MAX63, -5, 0o1000, 1, 1, 4]


def test_batch_nul_type_is_a_file_or_a_directory(core: Any) -> None:
    data = (
        _block(name=b"dir/", type=b"\0")
        + _block(name=b"file", type=b"\0")
        + _block(name=b"", prefix=b"p", type=b"\0")  # "p/": a directory
        + member(b"z")
        + END
    )
    got = _batch(core, data)
    assert [(e.name, e.type) for e in got] == [
        ("dir/", b"5"),
        ("file", b"0"),
        ("p/", b"5"),
        ("z", b"0"),
    ]
    assert got == _python_entries(data)


def test_batch_at_most_4096_entries(core: Any) -> None:
    data = EDGES["plain"] * 4100
    assert len(core.headers(data, 0, TarEntry)) == 4096
    assert len(core.headers(data, 4096 * BLOCK, TarEntry)) == 4


def test_batch_arguments(core: Any) -> None:
    data = PLAIN + END
    for pos in (-1, len(data) + 1):
        with pytest.raises(ValueError):
            core.headers(data, pos, TarEntry)
    assert core.headers(data, len(data), TarEntry) == []
    with pytest.raises(BufferError):
        core.headers(memoryview(bytearray(data))[::2], 0, TarEntry)  # not contiguous
    with pytest.raises(OverflowError):
        core.headers(data, 1 << 70, TarEntry)


def test_batch_constructor_errors_propagate(core: Any) -> None:
    def broken(*args: object) -> TarEntry:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        core.headers(PLAIN + END, 0, broken)
    with pytest.raises(RuntimeError):
        core.header(EDGES["plain"], broken)


# -- the block reader uses the batches ------------------------------------------------------------


class _OneBlock:
    def __init__(self, data: bytes) -> None:
        self._data: bytes | None = data

    def next_block(self) -> memoryview | None:
        data, self._data = self._data, None
        return None if data is None else memoryview(data)

    def close(self) -> None:
        pass


def test_block_reader_takes_plain_entries_from_batches(
    core: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the module, the block reader's plain entries come from ``headers`` (not one by
    one through the stream path), the special ones from the Python path, in order."""
    calls: list[int] = []

    def spy(buffer: Any, pos: int, cls: Callable[..., TarEntry]) -> list[TarEntry]:
        found: list[TarEntry] = core.headers(buffer, pos, cls)
        calls.append(len(found))
        return found

    class Spy:
        header = core.header
        headers = staticmethod(spy)

    data = PLAIN + pax([(b"path", b"long")]) + member(b"short", b"z") + PLAIN + END
    monkeypatch.setattr(tarstream, "_native", Spy)
    source: BlockSource = _OneBlock(data)
    got = list(BlockTarStream(source))
    assert got == _python_entries(data)
    # the first header comes before any block (the stream path reads it and the first
    # block); then the rest of the first run, the PAX header and its entry (the stream
    # path), the second run, and the end (the stream path)
    assert calls == [4, 0, 5, 0]
