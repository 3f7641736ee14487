"""The streaming tar reader against archives written by tarfile and GNU tar."""

from __future__ import annotations

import io
import subprocess
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ocikit.errors import InputError
from ocikit.layer.tarstream import TarStream


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


def test_empty_input() -> None:
    with pytest.raises(InputError, match="empty"):
        _read_all(b"")


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


_HEADER_FIELDS = (
    "name",
    "mode",
    "uid",
    "gid",
    "size",
    "mtime",
    "linkname",
    "uname",
    "gname",
    "devmajor",
    "devminor",
)


@settings(max_examples=400, deadline=None)
@given(
    name=st.text(min_size=1, max_size=99).filter(lambda s: "\0" not in s),
    size=st.integers(0, 8**11 - 1),
    mtime=st.integers(0, 8**11 - 1),
    uid=st.integers(0, 2**40),  # past 8**7: GNU base-256
    kind=st.sampled_from([tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.DIRTYPE, tarfile.CHRTYPE]),
    flips=st.lists(st.tuples(st.integers(0, 511), st.integers(0, 255)), max_size=6),
)
def test_header_parser_agrees_with_tarfile(
    name: str, size: int, mtime: int, uid: int, kind: bytes, flips: list[tuple[int, int]]
) -> None:
    """The fast header parser accepts exactly what ``TarInfo.frombuf`` accepts (checksum
    included, on headers with random bytes changed) and reads the same fields."""
    from ocikit.layer.tarstream import _parse_header

    info = tarfile.TarInfo(name)
    info.type, info.size, info.mtime, info.uid = kind, size, mtime, uid
    info.linkname = "target" if kind == tarfile.SYMTYPE else ""
    try:
        block = bytearray(info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")[-512:])
    except ValueError:
        return
    for at, value in flips:
        block[at] = value
    data = bytes(block)
    try:
        expected = tarfile.TarInfo.frombuf(data, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        expected = None
    try:
        got = _parse_header(data)
    except (tarfile.HeaderError, ValueError):
        got = None
    assert (got is None) == (expected is None)
    if got is None or expected is None:
        return
    if expected.type == tarfile.DIRTYPE or expected.type in tarfile.GNU_TYPES:
        return  # names: ours has no trailing "/"; GNU records are read by the stream
    fields = _HEADER_FIELDS
    if data[257:265] != b"ustar\x0000" and data[345:500].strip(b"\0"):
        fields = fields[1:]  # tarfile joins a ustar prefix whatever the magic; Go and we don't
    for field in fields:
        assert getattr(got, field) == getattr(expected, field), field
