"""The streaming tar reader: archives written by tarfile and GNU tar, and hand-built streams
where readers disagree, read as Go's archive/tar (docker's reader) reads them. The Go reader
itself judges fuzzed streams in test_tar_go.py."""

from __future__ import annotations

import io
import subprocess
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocikit.errors import InputError
from ocikit.layer.tarstream import MAX_SPECIAL, TarEntry, TarStream
from support.rawtar import BLOCK, END, header, long_name, member, pad, pax, records

pytestmark = pytest.mark.usefixtures("tar_backend")  # every test on both header parsers


def _read_all(data: bytes) -> list[tuple[str, bytes, str, bytes]]:
    out = []
    tar = TarStream(io.BufferedReader(io.BytesIO(data)))  # type: ignore[arg-type]
    buf = bytearray(7)  # odd size: exercises partial reads
    for entry in tar:
        content = b""
        while n := tar.readinto(buf):
            content += bytes(buf[:n])
        out.append((entry.name, entry.type, entry.linkname, content))
    return out


def _write(entries: list[tuple[str, bytes]], fmt: int) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return raw.getvalue()


names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\0/"),
    min_size=1,
    max_size=120,
).map(lambda s: "d/" + s)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(names, st.binary(max_size=3000)), max_size=6, unique_by=lambda e: e[0]),
    st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]),
)
def test_matches_tarfile(entries: list[tuple[str, bytes]], fmt: int) -> None:
    data = _write(entries, fmt)
    got = [(name, content) for name, _, _, content in _read_all(data)]
    assert got == entries


def test_long_names_and_links_from_gnu_tar(tmp_path) -> None:
    root = tmp_path / "root"
    deep = root / ("x" * 90) / ("y" * 90)
    deep.mkdir(parents=True)
    (deep / "café-文件.txt").write_bytes(b"hello")
    (root / "link").symlink_to("x" * 90 + "/" + "y" * 90 + "/café-文件.txt")
    for fmt in ("gnu", "posix"):
        data = subprocess.run(
            ["tar", "-C", str(root), f"--format={fmt}", "-cf", "-", "."],
            check=True,
            capture_output=True,
        ).stdout
        got = {name: (linkname, content) for name, _, linkname, content in _read_all(data)}
        long_name = "./" + "x" * 90 + "/" + "y" * 90 + "/café-文件.txt"
        assert got[long_name] == ("", b"hello")
        assert got["./link"][0].endswith("café-文件.txt")


def test_empty_input_is_an_empty_archive() -> None:
    """Go reads an empty stream as an archive with no entries (an empty layer loads in docker)."""
    assert _read_all(b"") == []


def test_not_a_tar() -> None:
    with pytest.raises(InputError, match="not a tar"):
        _read_all(b"this is not a tar archive at all" * 40)


def test_truncated_in_data() -> None:
    data = _write([("a", b"x" * 5000)], tarfile.PAX_FORMAT)
    with pytest.raises(InputError, match="truncated"):
        _read_all(data[:2048])


def test_oversized_pax_record_is_refused() -> None:
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = 10 << 20
    data = header.tobuf(tarfile.USTAR_FORMAT) + bytes(1024)
    with pytest.raises(InputError, match="metadata record"):
        _read_all(data)


def _entries(data: bytes) -> list[TarEntry]:
    stream = TarStream(io.BufferedReader(io.BytesIO(data)))  # type: ignore[arg-type]
    return list(stream)


def test_only_the_last_of_two_pax_headers_applies() -> None:
    """Go keeps the records of the last ``x`` header only: the first one's path is lost, so
    the entry is ``other``, a duplicate of the entry before it (docker refuses the layer)."""
    data = (
        member(b"other", b"1")
        + pax([(b"path", b"dup")])
        + pax([(b"mtime", b"1")])
        + member(b"other", b"2")
        + END
    )
    entries = _entries(data)
    assert [e.name for e in entries] == ["other", "other"]
    assert entries[1].pax == {"mtime": "1"} and entries[1].mtime == 1


def test_a_gnu_long_name_wins_over_a_pax_path() -> None:
    data = pax([(b"path", b"from-pax")]) + long_name(b"from-gnu") + member(b"short", b"x") + END
    assert [e.name for e in _entries(data)] == ["from-gnu"]


def test_a_nul_typed_entry_is_a_directory_by_its_final_name() -> None:
    """``bin/`` from a long name on a ``\\0``-typed entry is a directory, as docker and umoci
    apply it (over ``bin -> usr/bin`` it empties /bin); a PAX path without the slash makes
    it a file whatever the header's own name."""
    dir_data = long_name(b"bin/") + header(b"bin", b"\0") + END
    [entry] = _entries(dir_data)
    assert (entry.name, entry.type) == ("bin/", b"5")
    file_data = pax([(b"path", b"bar")]) + header(b"d/", b"\0") + END
    [entry] = _entries(file_data)
    assert (entry.name, entry.type) == ("bar", b"0")


def test_a_global_header_is_an_entry_and_changes_no_other() -> None:
    data = (
        pax([(b"path", b"renamed"), (b"uid", b"7")], b"g", b"pax_global_header")
        + member(b"a", b"x")
        + member(b"b", b"y")
        + END
    )
    g, a, b = _entries(data)
    assert (g.type, g.name, g.pax) == (b"g", "renamed", {"path": "renamed", "uid": "7"})
    assert [(e.name, e.uid, e.pax) for e in (a, b)] == [("a", 0, None), ("b", 0, None)]


def test_global_records_cost_linear_time_and_memory() -> None:
    """Records are never copied into later entries: many global headers of many keys and
    many files after them read in one pass, each entry carrying nothing of them."""
    keys = records([(b"k%d" % i, b"v") for i in range(20_000)])
    data = b"".join(header(b"g", b"g", len(keys)) + pad(keys) for _ in range(5))
    data += b"".join(member(b"f%d" % i) for i in range(3_000)) + END
    entries = _entries(data)
    assert len(entries) == 3_005
    assert all(e.pax is None for e in entries[5:])


@pytest.mark.parametrize(
    "items",
    [
        [(b"path", b"a\0b")],
        [(b"linkpath", b"a\0b")],
        [(b"mtime", b"nan")],
        [(b"mtime", b"inf")],
        [(b"mtime", b"1e30")],
        [(b"mtime", b"99999999999999999999")],
        [(b"atime", b"x")],
        [(b"uid", b"1.5")],
        [(b"size", b"-")],
    ],
    ids=lambda items: b"=".join(items[0]).decode(errors="replace"),
)
def test_malformed_pax_values_are_refused(items: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(InputError, match=r"corrupt tar header|not a tar"):
        _entries(pax(items) + member(b"x", b"hi") + END)


def test_owner_and_time_beyond_32_bits_are_read_as_go_reads_them() -> None:
    data = pax([(b"uid", b"1099511627776"), (b"mtime", b"-1.5")]) + member(b"x", b"hi") + END
    [entry] = _entries(data)
    assert (entry.uid, entry.mtime, entry.mtime_nsec) == (1 << 40, -2, 500_000_000)


def test_special_records_are_bounded_as_in_go() -> None:
    big = header(b"PaxHeader", b"x", MAX_SPECIAL + 1) + bytes(MAX_SPECIAL + 512)
    with pytest.raises(InputError, match="metadata record"):
        _entries(big)
    exact = records([(b"comment", b"c" * (MAX_SPECIAL - 30))])
    assert len(exact) <= MAX_SPECIAL
    [entry] = _entries(header(b"PaxHeader", b"x", len(exact)) + pad(exact) + member(b"a") + END)
    assert entry.name == "a"


def test_the_end_of_an_archive_is_where_go_sees_it() -> None:
    one = member(b"a", b"hi")
    assert [e.name for e in _entries(one)] == ["a"]  # no end blocks
    assert [e.name for e in _entries(one + bytes(BLOCK))] == ["a"]  # one zero block
    assert [e.name for e in _entries(one[:600])] == ["a"]  # ends inside the padding
    with pytest.raises(InputError, match="after a zero block"):
        _entries(bytes(BLOCK) + one)
    with pytest.raises(InputError, match="truncated"):
        _entries(one[:513])  # the data is cut
