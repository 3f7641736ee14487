"""Tar headers written deterministically: POSIX ustar, PAX records only where ustar cannot
hold a value (long or non-ASCII names, large numbers, xattrs), no user or group names."""

from __future__ import annotations

from typing import BinaryIO

from .. import native
from ..errors import InputError
from .streams import CHUNK
from .tarstream import XHDTYPE

_native = native.load("_filecore")  # the same bytes, made in C (None: the code below)

BLOCK = 512
RECORD = 20 * BLOCK
_DEV_MAX = 0o7777777  # a ustar device number field (Linux's are at most 2**20 - 1)
_USTAR_MAX = {"size": 0o77777777777, "uid": 0o7777777, "gid": 0o7777777, "mtime": 0o77777777777}


def tar_header(
    name: str,
    kind: bytes,
    size: int,
    mode: int,
    uid: int,
    gid: int,
    mtime: int,
    linkname: str = "",
    xattrs: dict[str, bytes] | None = None,
    devmajor: int = 0,
    devminor: int = 0,
) -> bytes:
    """One entry's header block(s): ustar, preceded by a PAX header when a name is too long
    or not ASCII, a number too large for its field, or there are xattrs (``SCHILY.xattr.``
    records, as GNU tar and Go's archive/tar write them). No user or group names, no times
    but the mtime: the same entry always gives the same bytes."""
    if _native is not None and not xattrs:
        made: bytes | None = _native.tar_header(
            name, kind, size, mode, uid, gid, mtime, linkname, devmajor, devminor
        )
        if made is not None:  # else a case it leaves to this code (a negative number, ...)
            return made
    pax: dict[str, str | bytes] = {}
    for key, value in sorted((xattrs or {}).items()):
        pax[f"SCHILY.xattr.{key}"] = value
    # names are bytes in a tar: one that is not UTF-8 (held as surrogates) is written as it
    # is, as Go's archive/tar writes and reads it
    raw_name = name.encode("utf-8", "surrogateescape")
    if len(raw_name) > 100 or not name.isascii():
        pax["path"] = raw_name
        raw_name = raw_name[:100]
    raw_link = linkname.encode("utf-8", "surrogateescape")
    if len(raw_link) > 100 or not linkname.isascii():
        pax["linkpath"] = raw_link
        raw_link = raw_link[:100]
    if not (0 <= devmajor <= _DEV_MAX and 0 <= devminor <= _DEV_MAX):
        # no PAX record holds them (Go's writer needs its GNU format): never a header of
        # another size than a block
        what = name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        raise InputError(
            f"{what}: device number {devmajor}, {devminor} does not fit a tar header "
            f"(at most {_DEV_MAX} each)"
        )
    numbers = {"size": size, "uid": uid, "gid": gid, "mtime": max(0, mtime)}
    for key, number in numbers.items():
        if number > _USTAR_MAX[key]:
            pax[key] = str(number)
            numbers[key] = 0
    head = b""
    if pax:
        records = b"".join(_pax_record(k, v) for k, v in sorted(pax.items()))
        head = _ustar(b"././@PaxHeader", XHDTYPE, len(records), 0o644, 0, 0, 0, b"")
        head += records + bytes(-len(records) % BLOCK)
    return head + _ustar(
        raw_name,
        kind,
        numbers["size"],
        mode,
        numbers["uid"],
        numbers["gid"],
        numbers["mtime"],
        raw_link,
        devmajor,
        devminor,
    )


def _pax_record(key: str, value: str | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else value.encode()
    body = f" {key}=".encode() + raw + b"\n"
    n = len(body) + 1
    while len(str(n).encode()) + len(body) != n:
        n = len(str(n).encode()) + len(body)
    return str(n).encode() + body


def _ustar(
    name: bytes,
    kind: bytes,
    size: int,
    mode: int,
    uid: int,
    gid: int,
    mtime: int,
    link: bytes,
    devmajor: int = 0,
    devminor: int = 0,
) -> bytes:
    header = b"".join(
        [
            name.ljust(100, b"\0"),
            b"%07o\0" % (mode & 0o7777),
            b"%07o\0" % uid,
            b"%07o\0" % gid,
            b"%011o\0" % size,
            b"%011o\0" % max(0, mtime),
            b" " * 8,  # the checksum, counted as spaces
            kind,
            link.ljust(100, b"\0"),
            b"ustar\x0000",
            bytes(32 + 32),  # no user or group names
            b"%07o\0" % devmajor,
            b"%07o\0" % devminor,
            bytes(155 + 12),
        ]
    )
    checksum = b"%06o\0 " % sum(header)
    return header[:148] + checksum + header[156:]


class TarOutput:
    """A tar written to ``out`` in 1 MiB writes: headers, then each file's data streamed and
    padded, then the end-of-archive blocks (padded to a 20-block record, as tar does)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._buf = bytearray()

    def header(self, block: bytes) -> None:
        self._buf += block
        self._flush_if_full()

    def entry(
        self,
        name: str,
        kind: bytes,
        size: int,
        mode: int,
        uid: int,
        gid: int,
        mtime: int,
        linkname: str = "",
        content: bytes | None = None,
    ) -> None:
        """An entry's header (``tar_header``'s, without xattrs), then its whole ``content``
        when given (``small``; else the caller writes its data next)."""
        if _native is not None and _native.put(
            self._buf, CHUNK, name, kind, size, mode, uid, gid, mtime, linkname, content
        ):
            return  # appended in one call, where no flush comes between (the same writes)
        self.header(tar_header(name, kind, size, mode, uid, gid, mtime, linkname))
        if content is not None:
            self.small(content)

    def data(self, source: BinaryIO, size: int, what: str) -> None:
        """``size`` bytes of ``source``; fewer is an error (the file changed under us)."""
        left = size
        while left > 0:
            chunk = source.read(min(CHUNK, left))
            if not chunk:
                raise InputError(f"{what} shrank while the layer was written")
            self._buf += chunk
            left -= len(chunk)
            self._flush_if_full()
        self._buf += bytes(-size % BLOCK)

    def small(self, data: bytes) -> None:
        """A file's whole content, already in memory (what ``data`` writes of it)."""
        self._buf += data
        self._flush_if_full()
        self._buf += bytes(-len(data) % BLOCK)

    def finish(self) -> None:
        self._buf += bytes(2 * BLOCK)
        self._buf += bytes(-len(self._buf) % RECORD)
        self._out.write(self._buf)
        self._buf = bytearray()

    def _flush_if_full(self) -> None:
        if len(self._buf) >= CHUNK:
            self._out.write(self._buf)
            self._buf = bytearray()
