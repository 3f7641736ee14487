"""Tar streams byte by byte, for hostile cases no tar writer would produce: several PAX
headers in a row, global headers, GNU long names beside PAX paths, records with NULs."""

from __future__ import annotations

BLOCK = 512
END = bytes(2 * BLOCK)
DATA_TYPES = (b"0", b"\0", b"7", b"x", b"g", b"L", b"K")


def header(
    name: bytes,
    typeflag: bytes = b"0",
    size: int = 0,
    *,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = 0,
    linkname: bytes = b"",
    magic: bytes = b"ustar\x0000",
) -> bytes:
    """A ustar header block with a correct checksum."""
    block = bytearray(BLOCK)
    block[0:100] = name.ljust(100, b"\0")[:100]
    block[100:108] = b"%07o\0" % mode
    block[108:116] = b"%07o\0" % uid
    block[116:124] = b"%07o\0" % gid
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"%011o\0" % mtime
    block[156:157] = typeflag
    block[157:257] = linkname.ljust(100, b"\0")[:100]
    block[257:265] = magic
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % BLOCK)


def member(name: bytes, data: bytes = b"", typeflag: bytes = b"0", **fields: int | bytes) -> bytes:
    size = len(data) if typeflag in DATA_TYPES else 0
    return header(name, typeflag, size, **fields) + pad(data)  # type: ignore[arg-type]


def records(items: list[tuple[bytes, bytes]]) -> bytes:
    """PAX records, each ``LENGTH KEY=VALUE\\n`` with the length counting itself."""
    out = b""
    for key, value in items:
        body = b" " + key + b"=" + value + b"\n"
        n = len(body) + 1
        while len(b"%d" % n) + len(body) != n:
            n = len(b"%d" % n) + len(body)
        out += b"%d" % n + body
    return out


def pax(
    items: list[tuple[bytes, bytes]], typeflag: bytes = b"x", name: bytes = b"PaxHeader"
) -> bytes:
    """A PAX extended (``x``) or global (``g``) header with its records."""
    data = records(items)
    return header(name, typeflag, len(data)) + pad(data)


def long_name(name: bytes, typeflag: bytes = b"L") -> bytes:
    """A GNU long name (``L``) or long link (``K``) header."""
    data = name + b"\0"
    return header(b"././@LongLink", typeflag, len(data), magic=b"ustar  \0") + pad(data)
